// Command sluice is the operator's CLI: run a command inside a hooked
// cgroup, show the daemon's status, remove interception, and work with
// rulesets.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
)

const usage = `usage: sluice <command> [flags]

commands:
  run --cgroup PATH -- CMD [ARGS...]   run CMD inside a cgroup (created if missing)
  status [--name N] [--socket P] [--json]
                                       show the daemon, its pins and its counters
  install [--root DIR] [--config FILE] [--dry-run]
                                       find the runner services, write sluiced's config, say what is protected
  uninstall [--name N]                 detach and unpin interception (the only way to remove it)
  doctor [--config F] [--name N]       check kernel, cgroup2, pins, daemon, proxy, ruleset, clock, disk; say what to fix
  rules check|test|explain|sign|keygen work with rulesets (sluice rules -h)
  rules push [--socket P] DIR          send a ruleset to the running daemon (root only)
  ca [--data-dir DIR]                  print the daemon's CA certificate (clients that verify TLS trust it)
  sessions list [--since D] [--repo R] [--run-id N] [--target T] [--verdict V] [--json]
  sessions show [--json] ID            a session's transcript: who, where, statements, verdicts, rows
  replay [--speed X] ID                the transcript paced by the recorded timing
  export ID --format jsonl|pcap|asciicast [-o FILE]
                                       for SIEMs, Wireshark/tshark (level full), asciinema
  verify ID | --all                    check recordings' checksums, hash chain and signatures; exit 1 if altered
  recordings pubkey [--data-dir DIR]   print the recording signature public key
  approvals list [--json]              held statements waiting for a decision, and recent decisions
  approve ID [--comment TEXT]          let a held statement run (root, the admin group, or --server with a token)
  deny ID [--comment TEXT]             refuse it
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stderr)
	case "status":
		return statusCmd(args[1:], stdout, stderr)
	case "install":
		return installCmd(args[1:], stdout, stderr)
	case "uninstall":
		return uninstallCmd(args[1:], stdout, stderr)
	case "doctor":
		return doctorCmd(args[1:], stdout, stderr)
	case "rules":
		if len(args) > 1 && args[1] == "push" {
			return pushCmd(args[2:], stdout, stderr)
		}
		return runRules(args[1:], stdout, stderr)
	case "sessions":
		return sessionsCmd(args[1:], stdout, stderr)
	case "verify":
		return verifyCmd(args[1:], stdout, stderr)
	case "approvals":
		return approvalsCmd(args[1:], stdout, stderr)
	case "approve":
		return decideCmd("approve", args[1:], stdout, stderr)
	case "deny":
		return decideCmd("deny", args[1:], stdout, stderr)
	case "export":
		return exportCmd(args[1:], stdout, stderr)
	case "replay":
		return replayCmd(args[1:], stdout, stderr)
	case "recordings":
		return recordingsCmd(args[1:], stdout, stderr)
	case "ca":
		return caCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// runCmd runs a command in a cgroup and returns its exit code. The child is
// created directly inside the cgroup (clone3 with CLONE_INTO_CGROUP), so not
// one instruction of it runs outside.
func runCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cg := fs.String("cgroup", "", "cgroup path relative to the cgroup2 mount")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	argv := fs.Args()
	if *cg == "" || len(argv) == 0 {
		fmt.Fprintln(stderr, "usage: sluice run --cgroup PATH -- CMD [ARGS...]")
		return 2
	}
	mount, err := interceptor.Cgroup2Mount()
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return 1
	}
	dir, err := interceptor.CgroupPath(mount, *cg)
	if err != nil {
		fmt.Fprintln(stderr, "sluice run:", err)
		return 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(stderr, "sluice run: create cgroup:", err)
		return 1
	}
	cgf, err := os.Open(dir)
	if err != nil {
		fmt.Fprintln(stderr, "sluice run: open cgroup:", err)
		return 1
	}
	defer cgf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ee.ExitCode()
		}
		fmt.Fprintln(stderr, "sluice run:", err)
		return 127
	}
	return 0
}

func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "default", "installation name (pin directory under /sys/fs/bpf/sluice)")
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out struct {
		Daemon      *api.Status            `json:"daemon"`
		DaemonError string                 `json:"daemon_error,omitempty"`
		Pins        *interceptor.PinStatus `json:"pins"`
	}
	var st api.Status
	if err := api.NewClient(*socket).Get(ctx, "/v1/status", &st); err != nil {
		out.DaemonError = err.Error()
	} else {
		out.Daemon = &st
		*name = st.Name
	}
	if ps, err := interceptor.ReadPins(*name); err == nil {
		out.Pins = &ps
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		printStatus(stdout, out.Daemon, out.DaemonError, out.Pins, *name)
	}
	if out.Daemon == nil {
		return 1
	}
	return 0
}

func printStatus(w io.Writer, d *api.Status, derr string, pins *interceptor.PinStatus, name string) {
	if d != nil {
		fmt.Fprintf(w, "daemon:      running (pid %d, up %s)\n", d.PID, time.Since(d.Started).Round(time.Second))
		if len(d.Cgroups) == 0 {
			fmt.Fprintln(w, "cgroup:      none hooked yet (waiting for a configured or discovered runner cgroup)")
		}
		for _, c := range d.Cgroups {
			fmt.Fprintf(w, "cgroup:      %s (id %d, %s)\n", c.Path, c.ID, c.Source)
		}
		fmt.Fprintf(w, "proxy port:  %d (127.0.0.1 and ::1)\n", d.ProxyPort)
		fmt.Fprintf(w, "flows seen:  %d total, %d active, %d without origin refused, %d refused, %d denied\n",
			d.Flows.Total, d.Flows.Active, d.Flows.NoOrigin, d.Flows.Refused, d.Flows.Denied)
		r := d.Ruleset
		fmt.Fprintf(w, "ruleset:     generation %d from %s, mode %s, digest %.12s, loaded %s\n",
			r.Generation, r.Source, r.Mode, r.Digest, r.Loaded.Format(time.RFC3339))
		if r.Signed {
			fmt.Fprintln(w, "             signatures required")
		}
		if e := r.LastError; e != nil {
			fmt.Fprintf(w, "ruleset ERROR: the last attempt (%s at %s) was rejected; the ruleset above stays active:\n", e.Source, e.At.Format(time.RFC3339))
			for _, l := range e.Errors {
				fmt.Fprintf(w, "  %s\n", l)
			}
		}
		fmt.Fprintf(w, "holds:       %d pending\n", len(d.Holds))
		for _, h := range d.Holds {
			fmt.Fprintf(w, "  hold       %s %s on %s (%s), expires %s: %.60s\n", h.ID, h.Rule, h.Target, h.Stage, h.Deadline.Format(time.RFC3339), h.Statement)
		}
		for _, t := range d.Targets {
			note := ""
			if !t.Decoded {
				note = "  [no decoder in this build: " + t.Mode + "]"
			}
			fmt.Fprintf(w, "target:      %s (%s) %s%s\n", t.Name, t.Protocol, strings.Join(t.Addresses, ", "), note)
		}
	} else {
		fmt.Fprintf(w, "daemon:      not reachable (%s)\n", derr)
	}
	if pins == nil {
		fmt.Fprintf(w, "pins:        none for %q: nothing is intercepted\n", name)
		return
	}
	fmt.Fprintf(w, "pins:        %s\n", pins.Dir)
	for _, l := range pins.Links {
		cg := l.Cgroup
		if cg == "" {
			cg = fmt.Sprintf("cgroup id %d", l.CgroupID)
		}
		fmt.Fprintf(w, "  link       %s -> %s\n", filepath.Base(l.Pin), cg)
	}
	for _, m := range pins.Maps {
		fmt.Fprintf(w, "  map        %s\n", filepath.Base(m))
	}
	if len(pins.Stats) > 0 {
		keys := make([]string, 0, len(pins.Stats))
		for k := range pins.Stats {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, pins.Stats[k]))
		}
		fmt.Fprintf(w, "kernel:      %s\n", strings.Join(parts, " "))
	}
}

func uninstallCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "default", "installation name (pin directory under /sys/fs/bpf/sluice)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	removed, err := interceptor.Uninstall(*name)
	for _, p := range removed {
		fmt.Fprintf(stdout, "removed %s\n", p)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice uninstall:", err)
		return 1
	}
	if len(removed) == 0 {
		fmt.Fprintf(stdout, "nothing pinned for %q\n", *name)
	} else {
		fmt.Fprintf(stdout, "interception removed for %q\n", *name)
	}
	return 0
}
