package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// waitGeneration polls status until the ruleset generation reaches gen and
// returns how long that took.
func waitGeneration(t *testing.T, d *testenv.Daemon, gen uint64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if st, err := d.Status(); err == nil && st.Ruleset.Generation >= gen {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := d.Status()
	t.Fatalf("ruleset generation %d not reached within %s (status %+v)", gen, within, st.Ruleset)
	return 0
}

// TestRulesHotReload: an edited ruleset is active within a second and its
// new target is intercepted; a broken edit is refused, the error shows in
// status, and the previous rules keep enforcing.
func TestRulesHotReload(t *testing.T) {
	cg := testenv.NewCgroup(t)
	a := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	b := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.3"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: tcpRules("a", a.Addr())})
	rulesFile := filepath.Join(d.RulesDir, "rules.hcl")

	psqlIn(t, cg, 0, b.PsqlArgs("", 0, "select 1"))
	if n := flows(t, d); n != 0 {
		t.Fatalf("b is not a target yet, but %d flows were seen", n)
	}

	both := tcpRules("a", a.Addr()) + strings.Replace(strings.Replace(tcpRules("b", b.Addr()), `"e2e"`, `"e2e-b"`, 1), "default {\n  action = \"deny\"\n}\n", "", 1)
	if err := os.WriteFile(rulesFile, []byte(both), 0o600); err != nil {
		t.Fatal(err)
	}
	took := waitGeneration(t, d, 2, time.Second)
	t.Logf("edited ruleset active after %s", took)
	if out, _, err := psqlIn(t, cg, 0, b.PsqlArgs("", 0, "select 2")); err != nil || out != "2" {
		t.Fatalf("psql to the new target: %v: %q", err, out)
	}
	if n := flows(t, d); n != 1 {
		t.Fatalf("after the reload the new target gave %d flows, want 1", n)
	}

	// A broken edit: line 3 names no valid address.
	broken := strings.Replace(both, b.Addr(), "127.0.0.3", 1)
	if err := os.WriteFile(rulesFile, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	var st struct{ errs []string }
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		s, err := d.Status()
		if err == nil && s.Ruleset.LastError != nil {
			st.errs = s.Ruleset.LastError.Errors
			if s.Ruleset.Generation != 2 {
				t.Errorf("a broken edit changed the generation to %d", s.Ruleset.Generation)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(st.errs) == 0 || !strings.Contains(st.errs[0], "rules.hcl:") || !strings.Contains(st.errs[0], "no port") {
		t.Fatalf("status after a broken edit: errors %q, want a file:line:col error about the address", st.errs)
	}
	out, _ := d.Sluice(t, "status", "--socket", d.Socket)
	if !strings.Contains(out, "ruleset ERROR") || !strings.Contains(out, "stays active") {
		t.Errorf("sluice status does not show the rejected edit:\n%s", out)
	}
	d.WaitLog(t, "ruleset rejected; the previous ruleset stays active", nil)
	// The previous ruleset still intercepts b.
	if out, _, err := psqlIn(t, cg, 0, b.PsqlArgs("", 0, "select 3")); err != nil || out != "3" {
		t.Fatalf("psql after the broken edit: %v: %q", err, out)
	}
	if n := flows(t, d); n != 2 {
		t.Errorf("after the broken edit b gave %d flows in all, want 2: the old rules must keep intercepting", n)
	}

	// Mending the file and sending SIGHUP both work.
	if err := os.WriteFile(rulesFile, []byte(tcpRules("a", a.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(d.PID(), syscall.SIGHUP)
	waitGeneration(t, d, 3, 2*time.Second)
	if s, _ := d.Status(); s.Ruleset.LastError != nil {
		t.Errorf("a good reload left the old error in status: %+v", s.Ruleset.LastError)
	}
}

// TestRulesDecideFlows: a flow no policy matches gets the default deny,
// decided on process facts.
func TestRulesDecideFlows(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	rules := strings.Replace(tcpRules("pg", pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  when    = process.uid == 0", 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})

	if out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "select 1")); err != nil || out != "1" {
		t.Fatalf("root's psql, matched by the policy: %v: %q", err, out)
	}
	out, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "select 1"))
	if err == nil {
		t.Fatalf("nobody's psql, matched by no policy, got through: %q", out)
	}
	l := d.WaitLog(t, "flow denied", nil)
	if l.String("rule") != "default" || l.String("comm") != "psql" {
		t.Errorf("flow denied line = %v, want rule default and comm psql", l)
	}
	if st, _ := d.Status(); st.Flows.Denied != 1 || st.Flows.Total != 1 {
		t.Errorf("flows %+v, want 1 served and 1 denied", st.Flows)
	}
}

// TestRulesSignedPush: with a public key configured, an unsigned push is
// refused and a signed one is applied and saved.
func TestRulesSignedPush(t *testing.T) {
	cg := testenv.NewCgroup(t)
	a := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	bin := testenv.Binaries(t)
	keys := t.TempDir()
	prefix := filepath.Join(keys, "ci")
	run := func(args ...string) (string, error) {
		t.Helper()
		out, err := testenv.RunOutside(t, append([]string{filepath.Join(bin, "sluice")}, args...)...)
		return out, err
	}
	if out, err := run("rules", "keygen", "--out", prefix); err != nil {
		t.Fatalf("keygen: %v: %s", err, out)
	}
	// The starting ruleset must be signed too.
	start := t.TempDir()
	os.WriteFile(filepath.Join(start, "rules.hcl"), []byte(tcpRules("a", a.Addr())), 0o600)
	if out, err := run("rules", "sign", start, "--key", prefix+".key"); err != nil {
		t.Fatalf("sign: %v: %s", err, out)
	}
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg,
		Body: "rules_dir = \"" + start + "\"\nrules_public_key = \"" + prefix + ".pub\"\n"})

	push := t.TempDir()
	os.WriteFile(filepath.Join(push, "rules.hcl"), []byte(tcpRules("a2", a.Addr())), 0o600)
	out, err := run("rules", "push", "--socket", d.Socket, push)
	if err == nil || !strings.Contains(out, "not signed") {
		t.Fatalf("unsigned push: %v: %s; want it refused as not signed", err, out)
	}
	if st, _ := d.Status(); st.Ruleset.Generation != 1 || st.Targets[0].Name != "a" {
		t.Fatalf("after the refused push: generation %d target %s, want 1 and a", st.Ruleset.Generation, st.Targets[0].Name)
	}

	if out, err := run("rules", "sign", push, "--key", prefix+".key"); err != nil {
		t.Fatalf("sign: %v: %s", err, out)
	}
	out, err = run("rules", "push", "--socket", d.Socket, push)
	if err != nil || !strings.Contains(out, "ruleset active: generation 2") {
		t.Fatalf("signed push: %v: %s", err, out)
	}
	if st, _ := d.Status(); st.Targets[0].Name != "a2" {
		t.Errorf("after the signed push the target is %q, want a2", st.Targets[0].Name)
	}
	saved, err := os.ReadFile(filepath.Join(start, "rules.hcl"))
	if err != nil || !strings.Contains(string(saved), `target "a2"`) {
		t.Errorf("pushed ruleset not saved into rules_dir: %v", err)
	}
	// A tampered file in rules_dir is refused on reload.
	os.WriteFile(filepath.Join(start, "rules.hcl"), []byte(tcpRules("evil", a.Addr())), 0o600)
	time.Sleep(500 * time.Millisecond)
	st, _ := d.Status()
	if st.Ruleset.Generation != 2 || st.Ruleset.LastError == nil || !strings.Contains(strings.Join(st.Ruleset.LastError.Errors, " "), "signature") {
		t.Errorf("tampered rules_dir: generation %d, last error %+v; want it refused for its signature", st.Ruleset.Generation, st.Ruleset.LastError)
	}
}
