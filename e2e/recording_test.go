package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/testenv"
)

// listSessions runs sluice sessions list --json.
func listSessions(t *testing.T, d *testenv.Daemon, args ...string) []store.Session {
	t.Helper()
	out, err := d.Sluice(t, append([]string{"sessions", "list", "--json", "--socket", d.Socket}, args...)...)
	if err != nil {
		t.Fatalf("sessions list: %v\n%s", err, out)
	}
	var l []store.Session
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("sessions list output: %v\n%s", err, out)
	}
	return l
}

// TestRecordingListShowVerify: a psql session appears in sessions list
// with its process facts, show lists every statement with its verdict,
// verify accepts it, and flipping one byte makes verify fail naming the
// frame.
func TestRecordingListShowVerify(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"full\"", 1)})
	admin(t, pg, "create table t(id int); insert into t values (1), (2)")

	out, pid, _ := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT id FROM t ORDER BY id; DROP TABLE t;"))
	if !strings.Contains(out, "denied") {
		t.Fatalf("psql: %s", out)
	}
	out, _, _ = psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "SELECT count(*) FROM t"))

	var sessions []store.Session
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		sessions = listSessions(t, d)
		if len(sessions) == 2 && sessions[0].Status == store.StatusSealed && sessions[1].Status == store.StatusSealed {
			break
		}
	}
	if len(sessions) != 2 {
		t.Fatalf("sessions list has %d sessions, want 2: %+v", len(sessions), sessions)
	}
	first := sessions[1] // newest first
	if first.Comm != "psql" || first.PID != uint32(pid) || first.UID != uint32(nobody(t)) || first.Target != "pg" ||
		first.OrigDst != pg.Addr() || first.Status != store.StatusSealed || first.Denied != 1 {
		t.Errorf("first session = %+v", first)
	}
	if l := listSessions(t, d, "--verdict", "deny"); len(l) != 1 || l[0].ID != first.ID {
		t.Errorf("--verdict deny lists %+v, want only the first session", l)
	}

	show, err := d.Sluice(t, "sessions", "show", "--socket", d.Socket, first.ID)
	if err != nil {
		t.Fatalf("sessions show: %v\n%s", err, show)
	}
	for _, want := range []string{
		"target    pg (postgres) " + pg.Addr(),
		"process   psql pid ",
		"DENY      SELECT id FROM t ORDER BY id; DROP TABLE t;",
		"rule ci/deny/no-drop: schema changes go through migrations",
		"identity  none (no CI job ancestor)",
	} {
		if !strings.Contains(show, want) {
			t.Errorf("sessions show lacks %q:\n%s", want, show)
		}
	}
	second, _ := d.Sluice(t, "sessions", "show", "--socket", d.Socket, sessions[0].ID)
	if !strings.Contains(second, "ALLOW     SELECT count(*) FROM t") || !strings.Contains(second, "-> 1 rows") {
		t.Errorf("second session transcript:\n%s", second)
	}

	if out, err := d.Sluice(t, "verify", "--socket", d.Socket, "--all"); err != nil || strings.Count(out, ": ok, sealed") != 2 {
		t.Fatalf("verify --all: %v\n%s", err, out)
	}

	// Flip one byte in the middle of the first recording.
	b, err := os.ReadFile(first.Path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	os.WriteFile(first.Path, b, 0o600)
	out, err = d.Sluice(t, "verify", "--socket", d.Socket, first.ID)
	if err == nil || !strings.Contains(out, "ALTERED: frame ") {
		t.Errorf("verify after a flipped byte: %v\n%s", err, out)
	}
	t.Logf("verify after a flipped byte: %s", out)
	if pub, err := d.Sluice(t, "recordings", "pubkey", "--data-dir", d.DataDir); err != nil || len(strings.TrimSpace(pub)) != 44 {
		t.Errorf("recordings pubkey: %v %q", err, pub)
	}
}

// TestRecordingSurvivesKill9: killing the daemon mid-session leaves a
// recording that verify accepts as interrupted, with the statements that
// were flushed before the kill.
func TestRecordingSurvivesKill9(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: "recording {\n  fsync_every = \"100ms\"\n}\n"})

	cmd, done := cg.Command(t.Context(), "psql", pg.PsqlArgs("", 0, "")[1:9]...)
	defer done()
	cmd.Args = append(cmd.Args, "-At")
	stdin, _ := cmd.StdinPipe()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("SELECT 'before the crash';\n"))
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "before the crash") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // past the fsync interval
	sessions := listSessions(t, d)
	if len(sessions) != 1 || sessions[0].Status != store.StatusActive {
		t.Fatalf("sessions before the kill: %+v", sessions)
	}
	path := sessions[0].Path
	d.Kill9(t)
	stdin.Close()
	cmd.Wait()

	d.Start(t)
	out2, err := d.Sluice(t, "verify", "--socket", d.Socket, sessions[0].ID)
	if err != nil || !strings.Contains(out2, "ok, interrupted") {
		t.Fatalf("verify of the interrupted recording: %v\n%s", err, out2)
	}
	show, _ := d.Sluice(t, "sessions", "show", "--socket", d.Socket, sessions[0].ID)
	if !strings.Contains(show, "SELECT 'before the crash'") || !strings.Contains(show, "(interrupted") {
		t.Errorf("show of the interrupted session:\n%s", show)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	_ = filepath.Base(path)
}
