package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/sshca"
)

// Check levels, as doctor prints them.
const (
	levelOK   = "ok"
	levelWarn = "warn"
	levelFail = "FAIL"
)

// finding is one check's result.
type finding struct {
	level, check, detail string
	fix                  string // what to do; required unless ok
}

// Disk space thresholds for data_dir, where recordings are written: below
// the warn level recordings may soon fail; below the fail level they will,
// and a session whose recording cannot be written is denied.
const (
	diskWarnBytes   = 2 << 30
	diskWarnPercent = 10
	diskFailBytes   = 512 << 20
	diskFailPercent = 2
)

func newDoctorCmd() *cobra.Command {
	var configPath, name, socket, dockerConfig, sudoers, sshKnownHosts string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check kernel, cgroup2, pins, daemon, hooked cgroups, proxy, ruleset, containers, SSH host CA, root, clock, disk; say what to fix",
		Long: `Check the installation the way an operator would, one line per check (ok,
warn or FAIL), each warning and failure followed by the fix: the kernel's
eBPF support, the cgroup2 mount and the runner cgroups, the pinned hooks,
the daemon and the cgroups it could not hook, the proxy listener, the
ruleset, container jobs (Docker's cgroup-parent against the containers
block, and whether sluiced follows Docker), whether the runner's ssh
clients trust the SSH host CA (its @cert-authority line in the system-wide
known_hosts file, a file ssh reads), whether jobs can become root
(the runner runs as root, or its user has passwordless sudo), the clock's
sync state, free disk space for recordings and the metrics endpoint. Exit 1
when any check FAILs.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return doctor(cmd.OutOrStdout(), configPath, name, socket, dockerConfig, sudoers, sshKnownHosts)
		}),
	}
	cmd.Flags().StringVar(&configPath, "config", "/etc/sluice/sluiced.hcl", "read the daemon's config from `FILE`")
	cmd.Flags().StringVar(&name, "name", "", "installation `NAME` (default: the config's, else \"default\")")
	cmd.Flags().StringVar(&socket, "socket", "", "talk to the daemon on its API socket at `PATH` (default: the config's api_socket)")
	cmd.Flags().StringVar(&dockerConfig, "docker-config", defaultDockerConfig, "Docker's daemon.json `FILE`, to check its cgroup-parent")
	cmd.Flags().StringVar(&sudoers, "sudoers", defaultSudoers, "sudo's policy `FILE` (its includes are followed), to check whether the runner's user has passwordless sudo")
	cmd.Flags().StringVar(&sshKnownHosts, "ssh-known-hosts", sshca.DefaultKnownHosts, "the system-wide known_hosts `FILE` that must trust the SSH host CA")
	return cmd
}

// doctor runs every check and prints one line per finding, each non-ok
// one followed by its fix. It fails (exit 1) when any finding is a FAIL.
func doctor(stdout io.Writer, configPath, name, socket, dockerConfig, sudoers, sshKnownHosts string) error {
	var out []finding
	add := func(f finding) { out = append(out, f) }

	// Where to look: flags, then the config, then the defaults.
	cfg, cf := readDoctorConfig(configPath)
	add(cf)
	if name == "" {
		name = cfg.Name
	}
	if socket == "" {
		socket = cfg.APISocket
	}

	add(checkKernel())
	add(checkCgroup2(cfg))
	pins, pf := checkPins(name, cfg)
	add(pf)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st *api.Status
	var s api.Status
	if err := api.NewClient(socket).Get(ctx, "/v1/status", &s); err != nil {
		f := finding{level: levelFail, check: "daemon", detail: fmt.Sprintf("daemon not reachable: %v", err),
			fix: "start it: systemctl start sluiced; see why it stopped: journalctl -u sluiced -e"}
		if pins != nil && len(pins.Links) > 0 {
			f.detail += "; its hooks are still pinned, so intercepted connections are refused until it is back (fail closed)"
		}
		add(f)
	} else {
		st = &s
		add(finding{level: levelOK, check: "daemon", detail: fmt.Sprintf("running, pid %d, up %s, %d flows served, %d active",
			s.PID, time.Since(s.Started).Round(time.Second), s.Flows.Total, s.Flows.Active)})
	}
	if st != nil {
		add(checkHooked(st, configPath))
	}
	port := int(cfg.ProxyPort)
	if st != nil {
		port = int(st.ProxyPort)
	}
	add(checkProxy(port, pins))
	add(checkRuleset(st))
	add(checkContainers(cfg, st, configPath, dockerConfig))
	add(checkSSHCA(cfg, sshKnownHosts, sshGlobalKnownHosts()))
	add(checkRoot(cfg, st, configPath, sudoers))
	add(checkClock())
	add(checkDisk(cfg.DataDir))
	if cfg.MetricsAddr != "" {
		add(checkMetrics(ctx, cfg.MetricsAddr))
	}

	failed := false
	for _, f := range out {
		fmt.Fprintf(stdout, "%-4s  %-8s  %s\n", f.level, f.check, f.detail)
		if f.level != levelOK && f.fix != "" {
			fmt.Fprintf(stdout, "%-4s  %-8s  fix: %s\n", "", "", f.fix)
		}
		failed = failed || f.level == levelFail
	}
	if failed {
		return exitStatus(1)
	}
	return nil
}

// readDoctorConfig reads the daemon's config with the daemon's own schema,
// defaults and checks (daemon.ParseConfig), so doctor and sluiced never
// disagree about a config. An invalid file is a FAIL with the first
// error; doctor then goes on with what it could read, or the defaults.
func readDoctorConfig(path string) (*daemon.Config, finding) {
	f := finding{check: "config"}
	src, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.level, f.detail = levelWarn, fmt.Sprintf("%s does not exist; checking with the default settings", path)
		f.fix = "install the package (it ships the config) or pass --config FILE"
		return daemon.Defaults(path), f
	case err != nil:
		f.level, f.detail, f.fix = levelFail, fmt.Sprintf("read %s: %v", path, err), "run sluice doctor as root"
		return daemon.Defaults(path), f
	}
	c, diags, _ := daemon.ParseConfig(path, src)
	if c == nil {
		c = daemon.Defaults(path)
	}
	var first *hcl.Diagnostic
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			first = d
			break
		}
	}
	switch {
	case first == nil:
		f.level, f.detail = levelOK, path
	case c.NamesNothingToHook() && len(diags.Errs()) == 1 && first.Summary == daemon.NothingToHook:
		f.level, f.detail = levelFail, fmt.Sprintf("%s names no runner cgroup: sluiced will not start", path)
		f.fix = "run sluice install: it finds the runner and writes its cgroup into the config"
	default:
		where := path
		if first.Subject != nil {
			where = fmt.Sprintf("%s:%d", path, first.Subject.Start.Line)
		}
		f.level, f.detail = levelFail, fmt.Sprintf("%s: %s: %s", where, first.Summary, first.Detail)
		if n := len(diags.Errs()); n > 1 {
			f.detail += fmt.Sprintf(" (and %d more errors)", n-1)
		}
		f.fix = "correct the file; sluiced refuses it the same way, with the source line, when it starts"
	}
	return c, f
}

func checkKernel() finding {
	f := finding{check: "kernel"}
	var pe *interceptor.ProbeError
	switch err := interceptor.Probe(); {
	case err == nil:
		var u unix.Utsname
		unix.Uname(&u)
		f.level, f.detail = levelOK, fmt.Sprintf("Linux %s: eBPF program types, helpers and capabilities present", unix.ByteSliceToString(u.Release[:]))
	case errors.As(err, &pe):
		f.level, f.detail = levelFail, strings.Join(pe.Missing, "; ")
		f.fix = "run sluice doctor as root on a Linux 5.15+ kernel with cgroup2; README: Requirements"
	default:
		f.level, f.detail, f.fix = levelFail, err.Error(), "README: Requirements"
	}
	return f
}

func checkCgroup2(cfg *daemon.Config) finding {
	mount, err := interceptor.Cgroup2Mount()
	if err != nil {
		return finding{level: levelFail, check: "cgroup2", detail: err.Error(),
			fix: "mount the unified hierarchy (cgroup2) at /sys/fs/cgroup: systemd.unified_cgroup_hierarchy=1 on the kernel command line"}
	}
	f := finding{level: levelOK, check: "cgroup2", detail: "mounted at " + mount}
	var present, missing []string
	for _, cg := range cfg.Cgroups {
		dir, err := interceptor.CgroupPath(mount, cg)
		if err == nil {
			_, err = os.Stat(dir)
		}
		if err != nil {
			missing = append(missing, cg)
		} else {
			present = append(present, cg)
		}
	}
	if len(present) > 0 {
		f.detail += ", runner cgroup " + strings.Join(present, ", ") + " present"
	}
	if len(missing) > 0 {
		f.level, f.detail = levelFail, fmt.Sprintf("mounted at %s, but the configured runner cgroup %s is missing", mount, strings.Join(missing, ", "))
		f.fix = "start the runner's service (its cgroup appears when it runs), or run sluice install again if the runner moved"
	}
	return f
}

func checkPins(name string, cfg *daemon.Config) (*interceptor.PinStatus, finding) {
	f := finding{check: "pins"}
	ps, err := interceptor.ReadPins(name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.level, f.detail = levelFail, fmt.Sprintf("none for %q under %s: nothing is intercepted", name, interceptor.PinDir(name))
		f.fix = "start sluiced (systemctl start sluiced); it attaches and pins the hooks"
		return nil, f
	case err != nil:
		f.level, f.detail, f.fix = levelFail, fmt.Sprintf("read %s: %v", interceptor.PinDir(name), err), "run sluice doctor as root"
		return nil, f
	}
	if len(ps.Links) == 0 {
		f.level, f.detail = levelFail, fmt.Sprintf("%s holds maps but no links: nothing is intercepted", ps.Dir)
		f.fix = "restart sluiced (systemctl restart sluiced); it re-attaches the hooks"
		return &ps, f
	}
	var on []string // the hooked cgroups, each once
	lost := false
	for _, l := range ps.Links {
		cg := l.Cgroup
		if cg == "" {
			cg = fmt.Sprintf("cgroup id %d (gone)", l.CgroupID)
			lost = true
		}
		if !slices.Contains(on, cg) {
			on = append(on, cg)
		}
	}
	f.level, f.detail = levelOK, fmt.Sprintf("%d links in %s on %s", len(ps.Links), ps.Dir, strings.Join(on, ", "))
	if lost {
		f.level = levelWarn
		f.fix = "the hooked cgroup no longer exists (the runner's service restarted?): restart sluiced so it hooks the runner's current cgroup"
	} else if cfg.Scope != "" {
		// With a scope, the programs are on the scope alone.
		for _, l := range ps.Links {
			if l.Cgroup != "/"+cfg.Scope {
				f.level = levelWarn
				f.fix = fmt.Sprintf("the config's scope is %s but a hook is on %s: restart sluiced to hook the scope", cfg.Scope, l.Cgroup)
				break
			}
		}
	} else if len(cfg.Cgroups) > 0 && cfg.Discover == nil {
		// Every hook should be on a configured cgroup (with discovery,
		// the daemon hooks others too).
		for _, l := range ps.Links {
			if !slices.ContainsFunc(cfg.Cgroups, func(cg string) bool { return "/"+strings.TrimPrefix(cg, "/") == l.Cgroup }) {
				f.level = levelWarn
				f.fix = fmt.Sprintf("the config names %s but a hook is on %s: restart sluiced to hook the configured cgroups", strings.Join(cfg.Cgroups, ", "), l.Cgroup)
				break
			}
		}
	}
	return &ps, f
}

// checkProxy connects to the proxy listener on loopback. It must run
// outside the hooked cgroups: from inside, the hooks refuse a connect to
// the proxy port by design. The proxy closes such a connection unserved
// (it has no origin) and counts it under no_origin.
func checkProxy(port int, pins *interceptor.PinStatus) finding {
	f := finding{check: "proxy"}
	if self, err := interceptor.SelfCgroup(); err == nil && pins != nil {
		for _, l := range pins.Links {
			if l.Cgroup != "" && (self == l.Cgroup || strings.HasPrefix(self, strings.TrimSuffix(l.Cgroup, "/")+"/")) {
				f.level, f.detail = levelWarn, fmt.Sprintf("not checked: sluice doctor runs inside the hooked cgroup %s, where connects to the proxy are refused by design", l.Cgroup)
				f.fix = "run sluice doctor from outside the runner's cgroup (an admin shell, not a CI job)"
				return f
			}
		}
	}
	addr4 := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c, err := net.DialTimeout("tcp", addr4, 2*time.Second)
	if err != nil {
		f.level, f.detail = levelFail, fmt.Sprintf("nothing accepts on %s: %v", addr4, err)
		f.fix = "the proxy runs inside sluiced: start it (systemctl start sluiced), and check proxy_port is not taken by another program"
		return f
	}
	c.Close()
	f.level, f.detail = levelOK, "listening on "+addr4
	addr6 := net.JoinHostPort("::1", strconv.Itoa(port))
	if c, err := net.DialTimeout("tcp", addr6, 2*time.Second); err != nil {
		f.level, f.detail = levelWarn, fmt.Sprintf("listening on %s, but not on %s (%v): redirected IPv6 connections are refused", addr4, addr6, err)
		f.fix = "enable IPv6 on the loopback interface, then restart sluiced"
	} else {
		c.Close()
		f.detail += " and " + addr6
	}
	return f
}

// checkHooked fails when the daemon could not hook a cgroup it wants (a
// configured one that does not exist, a discovered one it refused):
// nothing in such a cgroup is intercepted, though the daemon runs.
func checkHooked(st *api.Status, configPath string) finding {
	f := finding{check: "cgroups"}
	if len(st.Unhooked) == 0 {
		if len(st.Cgroups) == 0 {
			f.level, f.detail = levelWarn, "the daemon hooks no cgroup yet: nothing is intercepted"
			f.fix = "run sluice install (it finds the runner services and writes their cgroups into the config), or start the runner service"
			return f
		}
		var paths []string
		for _, c := range st.Cgroups {
			paths = append(paths, c.Path)
		}
		f.level, f.detail = levelOK, "hooked: "+strings.Join(paths, ", ")
		return f
	}
	var parts []string
	for _, u := range st.Unhooked {
		parts = append(parts, fmt.Sprintf("%s (%s, since %s): %s", u.Path, u.Source, u.Since.Local().Format(time.RFC3339), u.Reason))
	}
	f.level = levelFail
	f.detail = fmt.Sprintf("%d wanted cgroups are NOT protected: %s", len(st.Unhooked), strings.Join(parts, "; "))
	f.fix = fmt.Sprintf("start the runner service (its cgroup appears when it runs; sluiced hooks it then), "+
		"or correct cgroups in %s (sluice install writes them), or let a discover block find the runners", configPath)
	return f
}

// checkContainers: with Docker on the host, its containers must be under
// the containers cgroup sluiced hooks, and sluiced must be following it.
func checkContainers(cfg *daemon.Config, st *api.Status, configPath, dockerConfig string) finding {
	f := finding{check: "containers"}
	cc := cfg.Containers
	if cc == nil {
		if !dockerInstalled() {
			f.level, f.detail = levelOK, "no container runtime on this host"
			return f
		}
		f.level, f.detail = levelWarn, "Docker is installed but "+configPath+" has no containers block: containers that jobs start are NOT intercepted"
		f.fix = "run sluice install (it sets Docker's cgroup-parent and writes the containers block), then restart dockerd and sluiced"
		return f
	}
	var conf struct {
		CgroupParent string `json:"cgroup-parent"`
	}
	b, err := os.ReadFile(dockerConfig)
	if err == nil {
		err = json.Unmarshal(b, &conf)
	}
	switch {
	case err != nil && !errors.Is(err, os.ErrNotExist):
		f.level, f.detail = levelWarn, fmt.Sprintf("cannot read Docker's %s: %v", dockerConfig, err)
		f.fix = "make it valid JSON; sluice install sets cgroup-parent in it"
		return f
	case dockerInstalled() && hookedFor(conf.CgroupParent) != cc.Cgroup:
		f.level = levelFail
		f.detail = fmt.Sprintf("Docker's cgroup-parent is %q (%s), but sluiced hooks %s for containers: Docker's containers are outside it and get killed", conf.CgroupParent, dockerConfig, cc.Cgroup)
		f.fix = "run sluice install (it sets cgroup-parent to match), then restart dockerd"
		return f
	}
	if st != nil && st.Containers != nil {
		if e := st.Containers.RuntimeError; e != "" {
			f.level, f.detail = levelWarn, fmt.Sprintf("sluiced cannot follow Docker at %s: %s; containers started outside %s are not found meanwhile", st.Containers.DockerSocket, e, cc.Cgroup)
			f.fix = "start dockerd, or correct docker_socket in the containers block of " + configPath
			return f
		}
		if n := st.Containers.Unhooked; n > 0 {
			f.level, f.detail = levelWarn, fmt.Sprintf("%d containers were found outside %s since sluiced started (%s)", n, cc.Cgroup, st.Containers.Outside)
			f.fix = "see sluiced's log for \"container outside the hooked cgroups\": a job ran docker run --cgroup-parent, or containers predate dockerd's restart after install"
			return f
		}
	}
	f.level, f.detail = levelOK, fmt.Sprintf("containers under %s are hooked; proxy at %s for them", cc.Cgroup, cc.Addr4)
	return f
}

// hookedFor is the cgroup (relative to the cgroup2 mount) Docker puts
// containers under for its cgroup-parent: "/a/b" is a/b with the cgroupfs
// driver; "x-y.slice" is x.slice/x-y.slice with the systemd driver.
func hookedFor(parent string) string {
	if !strings.HasSuffix(parent, ".slice") || strings.Contains(parent, "/") {
		return strings.Trim(parent, "/")
	}
	name := strings.TrimSuffix(parent, ".slice")
	var parts []string
	for i := range name {
		if name[i] == '-' {
			parts = append(parts, name[:i]+".slice")
		}
	}
	return strings.Join(append(parts, parent), "/")
}

func checkRuleset(st *api.Status) finding {
	f := finding{check: "ruleset"}
	if st == nil {
		f.level, f.detail = levelWarn, "cannot tell: the daemon is not reachable"
		f.fix = "start sluiced, then run sluice doctor again"
		return f
	}
	r := st.Ruleset
	f.level, f.detail = levelOK, fmt.Sprintf("generation %d from %s, mode %s, %d targets, loaded %s",
		r.Generation, r.Source, r.Mode, len(st.Targets), r.Loaded.Format(time.RFC3339))
	// Targets whose flows cannot be decoded: refused ones break the jobs
	// that use them, relayed ones pass uninspected.
	var refused, relayed []string
	for _, t := range st.Targets {
		why := t.Why
		if why == "" {
			why = "no decoder in this build"
		}
		switch {
		case t.Decoded && t.Undecoded == "":
		case t.Undecoded == "relay":
			relayed = append(relayed, fmt.Sprintf("%s (%s: %s)", t.Name, t.Protocol, why))
		default:
			refused = append(refused, fmt.Sprintf("%s (%s: %s; rule %s)", t.Name, t.Protocol, why, t.Rule))
		}
	}
	if len(relayed) > 0 {
		f.detail += "; relayed without inspection: " + strings.Join(relayed, ", ")
	}
	switch {
	case r.LastError != nil:
		f.level = levelWarn
		f.detail += fmt.Sprintf("; the last reload (%s at %s) was rejected and the ruleset above stays active: %s",
			r.LastError.Source, r.LastError.At.Format(time.RFC3339), strings.Join(r.LastError.Errors, "; "))
		f.fix = "correct the errors (sluice rules check DIR shows them with the source) and save or push again"
	case r.Mode == "monitor":
		f.level = levelWarn
		f.detail += "; monitor mode: verdicts are logged, nothing is enforced"
		f.fix = `set mode = "enforce" in the ruleset once the logged verdicts look right`
	case len(refused) > 0:
		f.level = levelWarn
		f.detail += "; refused, since they cannot be decoded: " + strings.Join(refused, ", ")
		f.fix = `jobs that reach these targets fail; if that is not intended, set undecoded = "relay" on the targets (their flows then pass uninspected, with metadata recorded) or remove them from the ruleset`
	}
	return f
}

// checkClock reads the kernel's NTP state without changing it: token
// verification (expiry, clock skew) and recording times depend on it.
func checkClock() finding {
	f := finding{check: "clock"}
	var tx unix.Timex // Modes 0: read only
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		f.level, f.detail, f.fix = levelWarn, fmt.Sprintf("cannot read the clock's sync state: %v", err), "check that NTP is running (timedatectl)"
		return f
	}
	if state == unix.TIME_ERROR || tx.Status&unix.STA_UNSYNC != 0 {
		f.level, f.detail = levelWarn, "not synchronised: the kernel reports no NTP sync; CI tokens may be judged expired or not yet valid, and recording times may be off"
		f.fix = "enable time sync: timedatectl set-ntp true (systemd-timesyncd) or install chrony"
		return f
	}
	est := time.Duration(tx.Esterror) * time.Microsecond
	f.level, f.detail = levelOK, fmt.Sprintf("synchronised, estimated error %s", est)
	return f
}

// checkDisk reports the free space where recordings are written.
func checkDisk(dataDir string) finding {
	f := finding{check: "disk"}
	dir := dataDir
	for {
		if _, err := os.Stat(dir); err == nil || dir == filepath.Dir(dir) {
			break
		}
		dir = filepath.Dir(dir) // data_dir is created at the daemon's first start
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(dir, &sf); err != nil {
		f.level, f.detail, f.fix = levelFail, fmt.Sprintf("statfs %s: %v", dir, err), "check that "+dataDir+" is on a mounted file system"
		return f
	}
	avail := sf.Bavail * uint64(sf.Bsize)
	total := sf.Blocks * uint64(sf.Bsize)
	pct := 0.0
	if total > 0 {
		pct = float64(avail) * 100 / float64(total)
	}
	f.detail = fmt.Sprintf("%s free of %s (%.0f%%) for recordings in %s", bytesText(avail), bytesText(total), pct, dataDir)
	switch {
	case avail < diskFailBytes || pct < diskFailPercent:
		f.level = levelFail
		f.fix = "free space now: sessions whose recording cannot be written are denied; lower recording.max_bytes or max_age, or give data_dir a larger disk"
	case avail < diskWarnBytes || pct < diskWarnPercent:
		f.level = levelWarn
		f.fix = "free space soon, lower recording.max_bytes or max_age, or give data_dir a larger disk"
	default:
		f.level = levelOK
	}
	return f
}

func checkMetrics(ctx context.Context, addr string) finding {
	f := finding{check: "metrics"}
	url := "http://" + addr + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("status %s", resp.Status)
			}
		}
	}
	if err != nil {
		f.level, f.detail, f.fix = levelWarn, fmt.Sprintf("%s: %v", url, err), "start sluiced; check that metrics_addr is not taken by another program"
		return f
	}
	f.level, f.detail = levelOK, "serving "+url
	return f
}

func bytesText(n uint64) string {
	const gib, mib = 1 << 30, 1 << 20
	if n >= gib {
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/mib)
}
