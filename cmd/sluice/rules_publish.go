package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/rulesource"
	"github.com/sluicehq/sluice/ruleset"
)

// rulesPublishFlags are the flags of sluice rules publish.
type rulesPublishFlags struct {
	to, key, ca, creds, endpoint, region string
	insecure                             bool
}

func newRulesPublishCmd() *cobra.Command {
	var f rulesPublishFlags
	cmd := &cobra.Command{
		Use:   "publish DIR --to URL --key FILE",
		Short: "Sign DIR as a versioned bundle and upload it to a rules_source",
		Long: `Sign the ruleset DIR with the ed25519 private key FILE (from sluice rules
keygen) as one bundle: its *.hcl files, a version (the publish time in
nanoseconds) and a signature over both. Upload it to URL, the rules_source
the daemons pull from:
  nats://HOST:PORT/BUCKET/NAME  a JetStream object store (created when
                                missing); daemons watch it and apply a new
                                version at once
  s3://BUCKET/KEY               S3-compatible storage (credentials from
                                AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)
  https://HOST/PATH             an HTTP PUT
  FILE                          written to a local file, to serve over https
A ruleset with errors is never published. Daemons refuse a bundle whose
signature does not verify with their rules_public_key, or whose version is
older than the one they run.`,
		Example: "  sluice rules publish ./rules --to nats://nats.internal:4222/sluice-rules/fleet --key rules.key",
		Args:    argsNamed("DIR"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if f.to == "" {
				return usageErrorf("--to is required: the rules_source URL the daemons pull from (nats://, s3://, https://) or a FILE")
			}
			if f.key == "" {
				return usageErrorf("--key is required: the private key FILE from sluice rules keygen")
			}
			return rulesPublish(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], &f)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.to, "to", "", "`URL` of the rules_source (nats://HOST:PORT/BUCKET/NAME, s3://BUCKET/KEY, https://...) or a FILE (required)")
	fl.StringVar(&f.key, "key", "", "private key `FILE` from sluice rules keygen (required)")
	fl.StringVar(&f.ca, "ca", "", "PEM `FILE` of the CAs trusted for the server (https, s3, nats with TLS)")
	fl.StringVar(&f.creds, "creds", "", "NATS credentials `FILE`")
	fl.StringVar(&f.endpoint, "endpoint", "", "S3 endpoint `HOST:PORT` (default AWS)")
	fl.StringVar(&f.region, "region", "", "S3 `REGION`")
	fl.BoolVar(&f.insecure, "insecure", false, "plain HTTP to the S3 endpoint")
	return cmd
}

func rulesPublish(ctx context.Context, stdout, stderr io.Writer, dir string, f *rulesPublishFlags) error {
	data, err := os.ReadFile(f.key)
	if err != nil {
		return fmt.Errorf("read --key: %s", fileError(f.key, err))
	}
	priv, err := ruleset.ParsePrivateKey(data)
	if err != nil {
		return fmt.Errorf("%s: %v", f.key, err)
	}
	// Never publish what would not load.
	_, files, diags := ruleset.Load(dir)
	writeDiags(stderr, dir, diags, files)
	if diags.HasErrors() {
		return errors.New("not publishing a ruleset with errors")
	}
	rb, err := ruleset.ReadBundle(dir)
	if err != nil {
		return err
	}
	b := rulesource.New(rb.Files, 0)
	b.Sign(priv)
	enc, err := b.Encode()
	if err != nil {
		return err
	}
	if !strings.Contains(f.to, "://") {
		if err := atomicfile.Write(f.to, enc, 0o644); err != nil {
			return fmt.Errorf("write %s", fileError(f.to, err))
		}
	} else {
		if ctx == nil {
			ctx = context.Background()
		}
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		o := rulesource.Options{CAFile: f.ca, Creds: f.creds, Endpoint: f.endpoint, Region: f.region, Insecure: f.insecure,
			AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), Name: "sluice rules publish"}
		if err := rulesource.Publish(ctx, f.to, o, enc); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "published version %d (digest %s, %d files) to %s\n", b.Version, b.Digest(), len(b.Files), f.to)
	return nil
}

// writePulled prints, for sluice status, where the daemon pulls its
// ruleset from and which version it runs.
func writePulled(w io.Writer, p *api.RulesPulled) {
	if p == nil {
		return
	}
	watch := ""
	if p.Watching {
		watch = ", watched"
	}
	switch p.From {
	case "default":
		fmt.Fprintf(w, "pulled:      WARNING: nothing pulled from %s yet: the embedded default ruleset is enforced%s\n", p.Source, watch)
	case "disk":
		fmt.Fprintf(w, "pulled:      version %d (published %s) from %s, loaded at start from the last good bundle kept on disk (the source has not confirmed it since)%s\n",
			p.Version, time.Unix(0, p.Version).UTC().Format(time.RFC3339), p.Source, watch)
	default:
		fmt.Fprintf(w, "pulled:      version %d (published %s) from %s, applied %s%s\n",
			p.Version, time.Unix(0, p.Version).UTC().Format(time.RFC3339), p.Source, p.Applied.Format(time.RFC3339), watch)
	}
	if !p.LastCheck.IsZero() {
		fmt.Fprintf(w, "             last check %s\n", p.LastCheck.Format(time.RFC3339))
	}
	if p.LastError != "" {
		fmt.Fprintf(w, "             last error: %s\n", p.LastError)
	}
}
