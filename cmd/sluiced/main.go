// Command sluiced is the Sluice daemon: it attaches the interception
// programs to the runner's cgroup, runs the proxy that receives the
// redirected connections, and serves the local control API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/internal/version"
)

func main() {
	opts, code, ok := parseFlags(os.Args[1:], os.Stdout, os.Stderr)
	if !ok {
		// --version, --help or a bad flag: nothing to serve, so no
		// re-execution for the runtime's sake either.
		os.Exit(code)
	}
	keepSysmonAwake()
	os.Exit(run(opts))
}

// options are sluiced's command-line flags.
type options struct {
	config string
}

const usage = `usage: sluiced [--config FILE]

sluiced is the Sluice daemon: it hooks the runner's cgroups, runs the proxy
that receives their redirected connections, and serves the control API
(used by the sluice command). It runs as root, normally under systemd
(sluiced.service).

flags:
  --config FILE  the daemon's HCL config (default /etc/sluice/sluiced.hcl)
  --version      print the version and exit
  -h, --help     print this help and exit

exit status: 0 when stopped by SIGTERM or SIGINT; 2 for a configuration
error, which a restart cannot cure (the config file, the ruleset, a
machine that cannot run sluiced); 1 for other failures at start.
`

// parseFlags parses args. ok is false when the daemon must not start: then
// code is the exit status (0 after --version or --help, which print to
// stdout; daemon.ExitConfig after a bad flag, reported on stderr).
func parseFlags(args []string, stdout, stderr io.Writer) (o options, code int, ok bool) {
	fs := flag.NewFlagSet("sluiced", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.config, "config", "/etc/sluice/sluiced.hcl", "path to the daemon's HCL config")
	showVersion := fs.Bool("version", false, "print the version and exit")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return o, daemon.ExitOK, false
	case err != nil:
		fmt.Fprintf(stderr, "sluiced: %v: run sluiced --help for the flags it takes\n", err)
		return o, daemon.ExitConfig, false
	case *showVersion:
		fmt.Fprintf(stdout, "sluiced %s\n", version.String())
		return o, daemon.ExitOK, false
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "sluiced: unexpected argument %q: sluiced takes only flags (run sluiced --help)\n", fs.Arg(0))
		return o, daemon.ExitConfig, false
	}
	return o, daemon.ExitOK, true
}

// run starts the daemon and serves until a signal stops it. An error at
// start is printed for a person (writeStartError) and decides the exit
// status (exitCode); once the daemon is up it logs as its config says.
func run(o options) int {
	fail := func(err error) int {
		daemon.WriteStartError(os.Stderr, err, term.IsTerminal(int(os.Stderr.Fd())))
		return daemon.ExitCode(err)
	}
	// The daemon holds injected database credentials in memory: no core
	// dump of it is written, and no other process may ptrace it or read
	// its memory through /proc.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail(daemon.RuntimeError(err, `if a restart does not cure it, run "sluice doctor"`, "disable core dumps"))
	}

	src, err := os.ReadFile(o.config)
	if err != nil {
		return fail(daemon.ConfigReadError(o.config, err))
	}
	cfg, diags, files := daemon.ParseConfig(o.config, src)
	if diags.HasErrors() || cfg == nil {
		return fail(daemon.ConfigDiagError(o.config, diags, files))
	}
	log := daemon.NewLogger(cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg, log); err != nil {
		return fail(err)
	}
	return daemon.ExitOK
}
