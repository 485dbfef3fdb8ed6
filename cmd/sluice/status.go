package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/sshca"
)

func newStatusCmd() *cobra.Command {
	var name, socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon, the cgroups it hooks, its pins and its counters",
		Long: `Show the running daemon (pid, hooked cgroups, proxy port, flows, ruleset,
pending holds, targets) and what is pinned in the kernel for the
installation. A wanted cgroup the daemon could not hook is shown first, as a
WARNING: nothing in it is protected.

Two kinds of counters: "flows" are the connections this daemon process
accepted since it started; "kernel" counters count the connects the eBPF
hooks redirected (or refused) since the pins were created, across daemon
restarts, so they are usually the larger.

Exit status 1 when the daemon is not reachable.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return status(cmd.OutOrStdout(), name, socket, asJSON)
		}),
	}
	cmd.Flags().StringVar(&name, "name", "default", "installation `NAME` (pin directory under /sys/fs/bpf/sluice); the running daemon's own wins")
	cmd.Flags().StringVar(&socket, "socket", api.DefaultSocket, "talk to the daemon on its API socket at `PATH`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func status(w io.Writer, name, socket string, asJSON bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out struct {
		Daemon      *api.Status            `json:"daemon"`
		DaemonError string                 `json:"daemon_error,omitempty"`
		Pins        *interceptor.PinStatus `json:"pins"`
	}
	var st api.Status
	if err := api.NewClient(socket).Get(ctx, "/v1/status", &st); err != nil {
		out.DaemonError = err.Error()
	} else {
		out.Daemon = &st
		name = st.Name
	}
	if ps, err := interceptor.ReadPins(name); err == nil {
		out.Pins = &ps
	}
	if asJSON {
		writeJSON(w, out)
	} else {
		printStatus(w, out.Daemon, out.DaemonError, out.Pins, name)
	}
	if out.Daemon == nil {
		return exitStatus(1)
	}
	return nil
}

func printStatus(w io.Writer, d *api.Status, derr string, pins *interceptor.PinStatus, name string) {
	if d != nil {
		fmt.Fprintf(w, "daemon:      running (pid %d, up %s)\n", d.PID, time.Since(d.Started).Round(time.Second))
		for _, u := range d.Unhooked {
			fmt.Fprintf(w, "WARNING:     cgroup %s (%s) is NOT protected: %s (since %s)\n",
				u.Path, u.Source, u.Reason, u.Since.Local().Format(time.RFC3339))
		}
		if len(d.Cgroups) == 0 {
			fmt.Fprintln(w, "cgroup:      none hooked yet (waiting for a configured or discovered runner cgroup)")
		}
		for _, c := range d.Cgroups {
			fmt.Fprintf(w, "cgroup:      %s (id %d, %s)\n", c.Path, c.ID, c.Source)
		}
		if d.Scope != "" {
			var jobs []string
			for _, j := range d.JobCgroups {
				jobs = append(jobs, j.Path)
			}
			fmt.Fprintf(w, "scope:       %s: job tasks from %s are intercepted anywhere below it\n", d.Scope, strings.Join(jobs, ", "))
		}
		if len(d.Tamper) > 0 {
			var kinds []string
			for _, k := range sortedKeys(d.Tamper) {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, d.Tamper[k]))
			}
			fmt.Fprintf(w, "WARNING:     tamper alerts since the daemon started: %s (see sluiced's log, \"tamper:\")\n", strings.Join(kinds, ", "))
		}
		fmt.Fprintf(w, "proxy port:  %d (127.0.0.1 and ::1)\n", d.ProxyPort)
		if u := d.Uploads; u != nil {
			fmt.Fprintf(w, "store:       %s: %d recordings uploaded, %d pending, %d failed tries since the daemon started\n", u.Store, u.Uploaded, u.Pending, u.FailedTries)
			if u.Resumed > 0 {
				fmt.Fprintf(w, "             %d of them were pending when sluiced last stopped (queued again at start)\n", u.Resumed)
			}
		}
		if e := d.Events; e != nil {
			conn := "connected"
			if !e.Connected {
				conn = "not connected"
			}
			fmt.Fprintf(w, "events:      stream %s at %s (%s): %d sent, %d buffered (%d of %d bytes)\n", e.Stream, e.URL, conn, e.Sent, e.Pending, e.BufferBytes, e.MaxBuffer)
			if e.Dropped > 0 {
				fmt.Fprintf(w, "WARNING:     %d events dropped since the daemon started (the buffer was full); raise events.max_buffer or fix the connection\n", e.Dropped)
			}
			if e.LastError != "" {
				fmt.Fprintf(w, "             last error sending events: %s\n", e.LastError)
			}
		}
		if fa := d.FleetApprovals; fa != nil {
			conn := "connected"
			if !fa.Connected {
				conn = "not connected"
			}
			fmt.Fprintf(w, "approvals:   shared as vm %s in bucket %s at %s (%s): %d decisions accepted, %d refused, %d holds waiting to be written\n",
				fa.VM, fa.Bucket, fa.URL, conn, fa.Accepted, fa.Refused, fa.Pending)
			if fa.LastError != "" {
				fmt.Fprintf(w, "             last NATS error: %s\n", fa.LastError)
			}
		}
		if c := d.Containers; c != nil {
			fmt.Fprintf(w, "containers:  cgroup %s hooked; proxy at %s for other network namespaces; outside the cgroup: %s (%d found)\n",
				c.Cgroup, strings.Join(c.Addresses, ", "), c.Outside, c.Unhooked)
			switch {
			case c.DockerSocket == "":
				fmt.Fprintln(w, "             no runtime API: containers are known by id only, and none outside the cgroup is found")
			case c.RuntimeError != "":
				fmt.Fprintf(w, "WARNING:     cannot follow Docker at %s: %s; containers started outside the hooked cgroup are not found until it is back\n", c.DockerSocket, c.RuntimeError)
			}
		}
		// Each redirected connect the daemon accepted is served, denied,
		// refused or turned away past max_sessions; the kernel's
		// "redirected" below counts the same connects since the pins were
		// made, across daemon restarts. Connections without an origin
		// entry were never redirected (a probe such as sluice doctor's).
		fmt.Fprintf(w, "flows seen:  %d served (%d active), %d denied by the ruleset, %d refused, %d past max_sessions; %d not redirected, closed (connections this daemon accepted since it started)\n",
			d.Flows.Total, d.Flows.Active, d.Flows.Denied, d.Flows.Refused, d.Flows.TooMany, d.Flows.NoOrigin)
		r := d.Ruleset
		fmt.Fprintf(w, "ruleset:     generation %d from %s, mode %s, digest %.12s, loaded %s\n",
			r.Generation, r.Source, r.Mode, r.Digest, r.Loaded.Format(time.RFC3339))
		if r.Signed {
			fmt.Fprintln(w, "             signatures required")
		}
		writePulled(w, r.Pulled)
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
			switch {
			case t.Decoded && t.Undecoded != "":
				// Decoded flow by flow (k8s): what the others get.
				what := "refused by rule " + t.Rule
				if t.Undecoded == "relay" {
					what = "relayed uninspected"
				}
				note = "  [decoded; flows it cannot decode are " + what + ": " + t.Why + "]"
			case t.Decoded:
			case t.Why != "":
				note = "  [" + t.Mode + ": " + t.Why + "]"
			case t.Protocol == "tcp":
				note = "  [" + t.Mode + "]"
			default:
				note = "  [no decoder in this build: " + t.Mode + "]"
			}
			fmt.Fprintf(w, "target:      %s (%s) %s%s\n", t.Name, t.Protocol, strings.Join(t.Addresses, ", "), note)
		}
	} else {
		fmt.Fprintf(w, "daemon:      not reachable: %s\n", derr)
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
		fmt.Fprintf(w, "kernel:      %s (connects the hooks handled since the pins were created, across daemon restarts: redirected = served + denied + refused + past max_sessions, plus connects made while no daemon was running)\n", strings.Join(parts, " "))
	}
}

func newUninstallCmd() *cobra.Command {
	var name, ssh, sshKnownHosts string
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Detach and unpin interception (the only way to remove it)",
		Long: `Detach the eBPF hooks and remove the pins of an installation. A stopped or
crashed daemon leaves interception in place (connects from the hooked
cgroups are refused until it is back); this command is the only way to
remove it. It also removes the SSH host CA's @cert-authority line that
sluice install wrote for the installation to /etc/ssh/ssh_known_hosts (the
CA key stays in data_dir, with the recordings and their keys). It does not
stop sluiced or remove the package.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkSSHMode(ssh); err != nil {
				return err
			}
			stdout := cmd.OutOrStdout()
			removed, err := interceptor.Uninstall(name)
			for _, p := range removed {
				fmt.Fprintf(stdout, "removed %s\n", p)
			}
			if err != nil {
				return err
			}
			if len(removed) == 0 {
				fmt.Fprintf(stdout, "nothing pinned for %q\n", name)
			} else {
				fmt.Fprintf(stdout, "interception removed for %q\n", name)
			}
			return uninstallSSH(ssh, sshKnownHosts, name, stdout)
		}),
	}
	cmd.Flags().StringVar(&name, "name", "default", "installation `NAME` (pin directory under /sys/fs/bpf/sluice)")
	cmd.Flags().StringVar(&ssh, "ssh", "on", "remove the SSH host CA's @cert-authority line install wrote: `on` or off")
	cmd.Flags().StringVar(&sshKnownHosts, "ssh-known-hosts", sshca.DefaultKnownHosts, "the known_hosts `FILE` install wrote the line to")
	return cmd
}
