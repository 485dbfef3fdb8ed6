package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestDoctor: `sluice doctor` against a running daemon reports its main
// checks ok; once the daemon is killed it FAILs "daemon not reachable"
// with a fix, while reporting the hooks still pinned on the test's
// cgroup (fail closed), and exits 1. Needs root (cgroup, eBPF, a private
// PostgreSQL).
func TestDoctor(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr())})

	doctor := func() (map[string]string, string, int) {
		t.Helper()
		out, err := d.Sluice(t, "doctor", "--config", d.Config)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("sluice doctor: %v\n%s", err, out)
		}
		// "LEVEL  CHECK  DETAIL" lines; "fix:" lines follow non-ok ones.
		lines := map[string]string{}
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] != "fix:" && (f[0] == "ok" || f[0] == "warn" || f[0] == "FAIL") {
				lines[f[1]] = l
			}
		}
		return lines, out, code
	}

	lines, out, code := doctor()
	for _, check := range []string{"config", "kernel", "cgroup2", "pins", "daemon", "proxy", "ruleset", "disk"} {
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
