package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// runDoctor runs `sluice doctor --config d.Config ARGS...` and returns its
// "LEVEL  CHECK  DETAIL" lines by check, the whole output and the exit
// code.
func runDoctor(t *testing.T, d *testenv.Daemon, args ...string) (map[string]string, string, int) {
	t.Helper()
	out, err := d.Sluice(t, append([]string{"doctor", "--config", d.Config}, args...)...)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sluice doctor: %v\n%s", err, out)
	}
	// "fix:" lines follow non-ok ones.
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] != "fix:" && (f[0] == "ok" || f[0] == "warn" || f[0] == "FAIL") {
			lines[f[1]] = l
		}
	}
	return lines, out, code
}

// TestDoctor: `sluice doctor` against a running daemon reports its main
// checks ok; once the daemon is killed it FAILs "daemon not reachable"
// with a fix, while reporting the hooks still pinned on the test's
// cgroup (fail closed), and exits 1. Needs root (cgroup, eBPF, a private
// PostgreSQL).
func TestDoctor(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr())})
	doctor := func() (map[string]string, string, int) { t.Helper(); return runDoctor(t, d) }

	lines, out, code := doctor()
	for _, check := range []string{"config", "kernel", "cgroup2", "pins", "daemon", "proxy", "ruleset", "root", "disk"} {
		if !strings.HasPrefix(lines[check], "ok ") {
			t.Errorf("with the daemon running, check %s is not ok: %q\n%s", check, lines[check], out)
		}
	}
	if !strings.Contains(lines["pins"], "/"+cg.Rel) {
		t.Errorf("pins line does not name the hooked cgroup %s: %q", cg.Rel, lines["pins"])
	}
	if !strings.Contains(lines["ruleset"], "from "+d.RulesDir) {
		t.Errorf("ruleset line does not name the rules dir: %q", lines["ruleset"])
	}
	if !strings.Contains(lines["root"], "nothing to check yet") {
		t.Errorf("root line with no process in the runner cgroup = %q, want nothing to check yet", lines["root"])
	}
	if _, ok := lines["clock"]; !ok {
		t.Errorf("no clock check:\n%s", out)
	}
	if code != 0 {
		t.Errorf("doctor exited %d with every check ok or warn:\n%s", code, out)
	}

	d.Kill9(t)
	lines, out, code = doctor()
	if code != 1 {
		t.Errorf("doctor exited %d with the daemon dead, want 1:\n%s", code, out)
	}
	if l := lines["daemon"]; !strings.HasPrefix(l, "FAIL ") || !strings.Contains(l, "daemon not reachable") || !strings.Contains(l, "fail closed") {
		t.Errorf("daemon line = %q, want FAIL daemon not reachable, hooks pinned (fail closed)\n%s", l, out)
	}
	if !strings.Contains(out, lines["daemon"]+"\n                fix: start it: systemctl start sluiced") {
		t.Errorf("the daemon FAIL has no fix line after it:\n%s", out)
	}
	if l := lines["pins"]; !strings.HasPrefix(l, "ok ") || !strings.Contains(l, "/"+cg.Rel) {
		t.Errorf("pins line = %q, want the hooks still pinned on %s\n%s", l, cg.Rel, out)
	}
	if !strings.HasPrefix(lines["proxy"], "FAIL ") {
		t.Errorf("proxy line = %q, want FAIL with nothing listening", lines["proxy"])
	}
}

// TestDoctorRoot: doctor's root check reads who the runner's processes
// run as and the sudoers policy (a temp tree passed with --sudoers, its
// rule in an @includedir directory). A "runner" running as nobody whom a
// rule gives NOPASSWD: ALL is a warning naming the file and line, with a
// fix line; without the rule it is ok; a runner process running as root
// is a warning too. Needs root (cgroup, eBPF, switching to nobody).
func TestDoctorRoot(t *testing.T) {
	cg := testenv.NewCgroup(t)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg})
	uid := nobody(t)

	// The "runner": a process in the hooked cgroup, as uid.
	startRunner := func(uid int) *exec.Cmd {
		t.Helper()
		cmd, done := cg.Command(t.Context(), "sleep", "600")
		defer done()
		if uid != 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start the runner process: %v", err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	startRunner(uid)

	dir := t.TempDir()
	sudoers := filepath.Join(dir, "sudoers")
	rule := filepath.Join(dir, "sudoers.d", "runner")
	os.Mkdir(filepath.Dir(rule), 0o755)
	if err := os.WriteFile(sudoers, []byte("Defaults\tenv_reset\nroot\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\n@includedir "+filepath.Dir(rule)+"\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rule, []byte("# the CI runner may do anything\nnobody ALL=(ALL) NOPASSWD: ALL\n"), 0o440); err != nil {
		t.Fatal(err)
	}

	lines, out, _ := runDoctor(t, d, "--sudoers", sudoers)
	l := lines["root"]
	if !strings.HasPrefix(l, "warn  root ") || !strings.Contains(l, "runs as nobody, who has passwordless sudo") || !strings.Contains(l, rule+":2: nobody ALL=(ALL) NOPASSWD: ALL") {
		t.Errorf("root line with a NOPASSWD: ALL rule for the runner's user = %q, want warn naming %s:2\n%s", l, rule, out)
	}
	if !strings.Contains(out, l+"\n                fix: remove the NOPASSWD rule at "+rule+" line 2") || !strings.Contains(out, `README: "Jobs with root: threat model"`) {
		t.Errorf("the root warning has no fix line naming the rule and the README after it:\n%s", out)
	}

	if err := os.Remove(rule); err != nil {
		t.Fatal(err)
	}
	lines, out, _ = runDoctor(t, d, "--sudoers", sudoers)
	if l := lines["root"]; !strings.HasPrefix(l, "ok    root ") || !strings.Contains(l, "jobs run as nobody without passwordless sudo") {
		t.Errorf("root line without the rule = %q, want ok: jobs run as nobody without passwordless sudo\n%s", l, out)
	}

	startRunner(0)
	lines, out, _ = runDoctor(t, d, "--sudoers", sudoers)
	if l := lines["root"]; !strings.HasPrefix(l, "warn  root ") || !strings.Contains(l, "jobs run as root") || !strings.Contains(l, "uid 0") {
		t.Errorf("root line with a runner process as root = %q, want warn: jobs run as root\n%s", l, out)
	}
	if !strings.Contains(out, lines["root"]+"\n                fix: run the runner service as an unprivileged user") {
		t.Errorf("the root warning has no fix line after it:\n%s", out)
	}
}
