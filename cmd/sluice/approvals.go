package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/approve/fleet"
)

// fleetFlags pick the fleet's approvals bucket on NATS instead of one
// daemon.
type fleetFlags struct {
	url, creds, ca, bucket string
}

func addFleetFlags(fs *pflag.FlagSet) *fleetFlags {
	f := &fleetFlags{}
	fs.StringVar(&f.url, "nats", "", "use the fleet's approvals bucket on the NATS server(s) at `URL` (nats:// or tls://, comma-separated) instead of one daemon")
	fs.StringVar(&f.creds, "nats-creds", "", "with --nats, a NATS credentials `FILE`")
	fs.StringVar(&f.ca, "nats-ca", "", "with --nats, the only CAs (PEM `FILE`) trusted for the server's TLS certificate")
	fs.StringVar(&f.bucket, "bucket", fleet.DefaultBucket, "with --nats, the key-value `BUCKET` of the holds")
	return f
}

// dial connects to the bucket. Its errors about flags are usage errors.
func (f *fleetFlags) dial(ctx context.Context) (*fleet.Client, error) {
	for _, u := range strings.Split(f.url, ",") {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return nil, usageErrorf("--nats %q: give one or more nats://HOST:PORT (or tls://) URLs separated by commas", f.url)
		}
	}
	for flag, file := range map[string]string{"--nats-creds": f.creds, "--nats-ca": f.ca} {
		if file == "" {
			continue
		}
		if _, err := os.Stat(file); err != nil {
			return nil, usageErrorf("%s: %s", flag, fileError(file, err))
		}
	}
	return fleet.Dial(ctx, fleet.Conn{URL: f.url, Bucket: f.bucket, CredsFile: f.creds, CAFile: f.ca})
}

// listFleet prints the holds in the fleet's bucket.
func listFleet(cmd *cobra.Command, ff *fleetFlags, asJSON bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := ff.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.List(ctx)
	if err != nil {
		return err
	}
	stdout := cmd.OutOrStdout()
	if asJSON {
		if list == nil {
			list = []fleet.Hold{}
		}
		return writeJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tID\tSTATE\tRULE\tTARGET\tREQUESTER\tEXPIRES\tSTATEMENT")
	for _, h := range list {
		r := h.Request
		who := fmt.Sprintf("%s[%d] uid %d", r.Requester.Comm, r.Requester.PID, r.Requester.UID)
		if r.Requester.Repository != "" {
			who += " " + r.Requester.Repository
		}
		stmt := strings.Join(strings.Fields(r.Statement), " ")
		if len(stmt) > 60 {
			stmt = stmt[:60] + "..."
		}
		expires := "-"
		if r.State == approve.StatePending {
			expires = time.Until(r.Deadline).Round(time.Second).String()
			if time.Now().After(r.Deadline) {
				// Its daemon stopped before writing the end: nothing waits.
				expires = "past deadline (its daemon is gone)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.VM, r.ID, r.State, r.Rule, r.Target, who, expires, stmt)
	}
	return tw.Flush()
}

// decideFleet puts a sealed decision in the fleet's bucket and waits up to
// 10 s for the holding VM's answer.
func decideFleet(cmd *cobra.Command, ff *fleetFlags, tokenFile, id string, approveIt bool, comment string) error {
	if tokenFile == "" {
		return usageErrorf("--nats needs --token-file FILE: your OIDC ID token, which the holding VM verifies")
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return usageErrorf("--token-file: %s", fileError(tokenFile, err))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return usageErrorf("--token-file %s is empty", tokenFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := ff.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	r, err := c.Decide(wctx, id, approveIt, comment, tok, nil)
	if errors.Is(err, fleet.ErrNoAnswer) {
		return fmt.Errorf("%s: no answer from the holding VM within 10s (is its sluiced connected to NATS? see sluice status there); the decision stays in the bucket until it is", id)
	}
	if err != nil {
		return err
	}
	if !r.Accepted {
		return fmt.Errorf("%s: refused: %s", id, r.Error)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", id, r.State)
	return nil
}

// newApprovalsCmd is `sluice approvals list`.
func newApprovalsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List held statements waiting for a decision",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	var asJSON bool
	var daemon *daemonFlags
	var ff *fleetFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "Held statements waiting for a decision, and recent decisions",
		Long: `List the statements a hold rule is keeping until someone approves or denies
them (sluice approve ID, sluice deny ID), and recent decisions. With --nats,
list the holds of every VM that shares its approvals through that NATS
server's bucket.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if ff.url != "" {
				return listFleet(cmd, ff, asJSON)
			}
			c, err := daemon.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var list []approve.Request
			if err := c.Get(ctx, "/v1/approvals", &list); err != nil {
				return err
			}
			stdout := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(stdout, list)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tSTAGE\tRULE\tTARGET\tREQUESTER\tEXPIRES\tSTATEMENT")
			for _, r := range list {
				who := fmt.Sprintf("%s[%d] uid %d", r.Requester.Comm, r.Requester.PID, r.Requester.UID)
				if r.Requester.Repository != "" {
					who += " " + r.Requester.Repository
				}
				stmt := strings.Join(strings.Fields(r.Statement), " ")
				if len(stmt) > 60 {
					stmt = stmt[:60] + "..."
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Stage, r.Rule, r.Target, who,
					time.Until(r.Deadline).Round(time.Second), stmt)
			}
			return tw.Flush()
		}),
	}
	daemon = addDaemonFlags(list.Flags())
	ff = addFleetFlags(list.Flags())
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(list)
	return cmd
}

// newDecideCmd is `sluice approve|deny ID [--comment TEXT]`.
func newDecideCmd(verb string) *cobra.Command {
	var comment string
	var daemon *daemonFlags
	var ff *fleetFlags
	cmd := &cobra.Command{
		Use:  verb + " ID",
		Args: argsNamed("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if ff.url != "" {
				if daemon.server != "" {
					return usageErrorf("give --nats or --server, not both")
				}
				return decideFleet(cmd, ff, daemon.tokenFile, args[0], verb == "approve", comment)
			}
			c, err := daemon.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var r approve.Request
			if err := c.Post(ctx, "/v1/approvals/"+url.PathEscape(args[0])+"/"+verb, map[string]string{"comment": comment}, &r); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", r.ID, r.State)
			return nil
		}),
	}
	if verb == "approve" {
		cmd.Short = "Let a held statement run (root, the admin group, or --server with a token)"
		cmd.Long = `Approve the held statement ID (from sluice approvals list): it runs. Locally
this needs root or the approvals admin group; with --server, an OIDC token
of an approver the hold rule names. With --nats and --token-file, the
decision goes through the fleet's bucket, sealed to the holding VM, which
verifies the token; it answers within 10 s.`
	} else {
		cmd.Short = "Refuse a held statement"
		cmd.Long = `Deny the held statement ID (from sluice approvals list): the client gets the
refusal in its own protocol. Locally this needs root or the approvals admin
group; with --server, an OIDC token of an approver the hold rule names; with
--nats and --token-file, through the fleet's bucket as for approve.`
	}
	daemon = addDaemonFlags(cmd.Flags())
	ff = addFleetFlags(cmd.Flags())
	cmd.Flags().StringVar(&comment, "comment", "", "why, as `TEXT`; kept in the recording and sent to the webhook")
	return cmd
}
