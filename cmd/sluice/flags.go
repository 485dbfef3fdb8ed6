package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/internal/api"
)

// flagError turns pflag's parse errors into usage errors (exit 2) worded
// for a person: the flag, the value given, and what it accepts, never a
// Go parser's message.
func flagError(_ *cobra.Command, err error) error {
	var inv *pflag.InvalidValueError
	var req *pflag.ValueRequiredError
	switch {
	case errors.As(err, &inv):
		f := inv.GetFlag()
		return usageErrorf("--%s %q: %s", f.Name, inv.GetValue(), accepts(f, errors.Unwrap(inv)))
	case errors.As(err, &req):
		name, _ := pflag.UnquoteUsage(req.GetFlag())
		return usageErrorf("--%s needs a value (%s)", req.GetFlag().Name, name)
	}
	return usageErrorf("%v", err)
}

// accepts says what a flag of f's type accepts. Flags of the CLI's own
// types (kvFlag) say it in their Set error.
func accepts(f *pflag.Flag, cause error) string {
	switch f.Value.Type() {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "want a whole number"
	case "float32", "float64":
		return "want a number, such as 2 or 0.5"
	case "bool":
		return "want true or false (or give the flag without a value)"
	case "duration":
		return "want a duration such as 30s, 5m or 2h"
	}
	if cause == nil {
		return "invalid value"
	}
	return cause.Error()
}

// noArgs accepts no positional arguments.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("unexpected argument %q: this command takes only flags", args[0])
	}
	return nil
}

// argsNamed accepts exactly one positional argument per name, before,
// between or after the flags.
func argsNamed(names ...string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			return usageErrorf("missing %s", strings.Join(names[len(args):], " "))
		case len(args) > len(names):
			return usageErrorf("unexpected argument %q: this command takes %s", args[len(names)], strings.Join(names, " "))
		}
		return nil
	}
}

// argsAtLeastOne accepts one or more positional arguments called name.
func argsAtLeastOne(name string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageErrorf("missing %s (one or more)", name)
		}
		return nil
	}
}

// kvFlag collects repeated key=value flags.
type kvFlag map[string]string

func (f kvFlag) String() string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + f[k]
	}
	return strings.Join(parts, ",")
}

// Set adds one key=value pair.
func (f kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	f[k] = v
	return nil
}

// Type names the value in usage lines.
func (f kvFlag) Type() string { return "key=value" }

// daemonFlags are the flags that pick a daemon: the local socket, or a
// remote API with --server, a bearer token and the CA to trust.
type daemonFlags struct {
	socket, server, tokenFile, caFile string
}

// addDaemonFlags adds --socket, --server, --token-file and --ca to fs.
func addDaemonFlags(fs *pflag.FlagSet) *daemonFlags {
	d := &daemonFlags{}
	fs.StringVar(&d.socket, "socket", api.DefaultSocket, "talk to the daemon on its API socket at `PATH`")
	fs.StringVar(&d.server, "server", "", "talk to the daemon's remote API at `URL` (https://host:port) instead of the local socket")
	fs.StringVar(&d.tokenFile, "token-file", "", "read the OIDC bearer token for --server from `FILE` (default: $SLUICE_TOKEN)")
	fs.StringVar(&d.caFile, "ca", "", "with --server, trust the daemon's CA certificate in `FILE` (PEM; print it with sluice ca on the runner)")
	return d
}

// client returns the client the flags pick. Its errors are usage errors.
func (d *daemonFlags) client() (*api.Client, error) {
	if d.server == "" {
		return api.NewClient(d.socket), nil
	}
	if !strings.HasPrefix(d.server, "https://") {
		return nil, usageErrorf("--server %q: the remote API is https only: give https://host:port", d.server)
	}
	tok := os.Getenv("SLUICE_TOKEN")
	if d.tokenFile != "" {
		b, err := os.ReadFile(d.tokenFile)
		if err != nil {
			return nil, usageErrorf("--token-file: %s", fileError(d.tokenFile, err))
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, usageErrorf("--server needs a bearer token: --token-file FILE or $SLUICE_TOKEN")
	}
	var roots *x509.CertPool
	if d.caFile != "" {
		pem, err := os.ReadFile(d.caFile)
		if err != nil {
			return nil, usageErrorf("--ca: %s", fileError(d.caFile, err))
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--ca %s holds no PEM certificate (save the output of sluice ca into it)", d.caFile)
		}
	}
	return api.NewRemoteClient(d.server, tok, roots), nil
}

// fileError words a failure to open or read path for a person.
func fileError(path string, err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return path + " does not exist"
	case errors.Is(err, os.ErrPermission):
		return path + " is not readable by this user (permission denied)"
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Sprintf("%s: %v", path, pe.Err)
	}
	return err.Error()
}

// writeJSON prints v as indented JSON, what every --json flag prints.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
