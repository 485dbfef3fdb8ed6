package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/testenv"
)

// listSessions runs sluice sessions list --json.
// waitSealed waits until the daemon lists exactly n sessions, all sealed,
// and returns them; it fails t after d.
func waitSealed(t *testing.T, d *testenv.Daemon, n int, within time.Duration) []store.Session {
	t.Helper()
	var list []store.Session
	testenv.WaitFor(t, within, fmt.Sprintf("%d sealed sessions", n), func() bool {
		list = listSessions(t, d)
		if len(list) != n {
			return false
		}
		for _, s := range list {
			if s.Status != store.StatusSealed {
				return false
			}
		}
		return true
	})
	return list
}

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
		"=> SELECT id FROM t ORDER BY id; DROP TABLE t;",
		"[deny] rule ci/deny/no-drop: schema changes go through migrations",
		"identity  none (no CI job ancestor)",
	} {
		if !strings.Contains(show, want) {
			t.Errorf("sessions show lacks %q:\n%s", want, show)
		}
	}
	second, _ := d.Sluice(t, "sessions", "show", "--socket", d.Socket, sessions[0].ID)
	if !strings.Contains(second, "=> SELECT count(*) FROM t") || !strings.Contains(second, "(1 row") {
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
	var out testenv.Buffer
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
	if !strings.Contains(show, "SELECT 'before the crash'") || !strings.Contains(show, "recording interrupted") {
		t.Errorf("show of the interrupted session:\n%s", show)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	_ = filepath.Base(path)
}

// TestLiveExport: recorded events stream as JSON lines to a file and as
// RFC 5424 messages to a syslog collector over TCP.
func TestLiveExport(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var all []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(all), "statement") {
			n, err := c.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- string(all)
	}()
	file := filepath.Join(t.TempDir(), "events.jsonl")
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: fmt.Sprintf("live_export {\n  file = %q\n  syslog = %q\n}\n", file, ln.Addr().String())})
	if out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "DROP TABLE nothing")); err == nil {
		t.Fatalf("DROP went through: %s", out)
	}
	select {
	case s := <-got:
		if !strings.Contains(s, "<132>1 ") || !strings.Contains(s, `"verdict":"deny"`) || !strings.Contains(s, "sluiced") {
			t.Errorf("syslog stream:\n%s", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no syslog message within 10s")
	}
	var lines []string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(file)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if strings.Contains(string(b), "session_end") {
			break
		}
	}
	var types []string
	for _, l := range lines {
		var ev struct {
			Session, Type, Rule string
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "session_start,statement,session_end" {
		t.Errorf("live file event types = %v", types)
	}
	_ = d
}

// TestRecordingExport: a session recorded at level full exports as a pcap
// that tshark decodes as PostgreSQL, as JSON lines, and as asciicast.
func TestRecordingExport(t *testing.T) {
	_, err := exec.LookPath("tshark")
	testenv.Need(t, err == nil, "tshark is not installed (Debian package tshark)")
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"full\"", 1)})
	if out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "SELECT 'exported' AS marker")); err != nil {
		t.Fatalf("psql: %v %s", err, out)
	}
	var id string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if l := listSessions(t, d); len(l) == 1 && l[0].Status == store.StatusSealed {
			id = l[0].ID
			break
		}
	}
	if id == "" {
		t.Fatal("no sealed session")
	}
	dir := t.TempDir()
	pcap := filepath.Join(dir, "s.pcap")
	if out, err := d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "pcap", "-o", pcap); err != nil {
		t.Fatalf("export pcap: %v\n%s", err, out)
	}
	q, err := exec.Command("tshark", "-n", "-r", pcap, "-d", fmt.Sprintf("tcp.port==%d,pgsql", pg.Port), "-Y", "pgsql",
		"-T", "fields", "-e", "pgsql.query").CombinedOutput()
	if err != nil || !strings.Contains(string(q), "SELECT 'exported' AS marker") {
		t.Errorf("tshark -Y pgsql on the export: %v\n%s", err, q)
	}
	out, err := d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "jsonl")
	if err != nil || !strings.Contains(out, `"type":"statement"`) || !strings.Contains(out, `"session":"`+id+`"`) {
		t.Errorf("export jsonl: %v\n%s", err, out)
	}
	out, err = d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "asciicast")
	if err != nil || !strings.HasPrefix(out, `{"version":2`) || !strings.Contains(out, "exported") {
		t.Errorf("export asciicast: %v\n%s", err, out)
	}
	if out, err := d.Sluice(t, "replay", "--socket", d.Socket, "--speed", "1000", id); err != nil || !strings.Contains(out, "=> SELECT 'exported' AS marker") {
		t.Errorf("replay: %v\n%s", err, out)
	}
}

// TestRemoteResponderAPI: a responder reads recordings over HTTPS with a
// bearer token from the configured issuer; a token without the required
// claim, or none, is refused.
func TestRemoteResponderAPI(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	is := testenv.NewIssuer(t)
	port := testenv.FreePort(t, "127.0.0.1")
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: fmt.Sprintf("remote_api {\n  listen = \"127.0.0.1:%d\"\n  issuer = %q\n  audience = \"sluice-responders\"\n  allow_claims = { groups = \"security\" }\n  ca_file = %q\n}\n", port, is.URL, is.CAFile)})
	psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "select 1"))

	ca, token := remoteCredentials(t, d, is)
	good := token("good", map[string]any{"sub": "alice", "aud": "sluice-responders", "groups": []string{"dev", "security"}})
	outsider := token("outsider", map[string]any{"sub": "bob", "aud": "sluice-responders", "groups": []string{"dev"}})
	wrongAud := token("wrongaud", map[string]any{"sub": "carol", "aud": "something-else", "groups": []string{"security"}})

	out, err := d.Sluice(t, "sessions", "list", "--server", server, "--ca", ca, "--token-file", good)
	if err != nil || !strings.Contains(out, "psql") {
		t.Fatalf("remote sessions list with a security token: %v\n%s", err, out)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	if out, err := d.Sluice(t, "sessions", "show", "--server", server, "--ca", ca, "--token-file", good, id); err != nil || !strings.Contains(out, "=> select 1") {
		t.Errorf("remote sessions show: %v\n%s", err, out)
	}
	for name, tok := range map[string]string{"outsider": outsider, "wrong audience": wrongAud} {
		if out, err := d.Sluice(t, "sessions", "list", "--server", server, "--ca", ca, "--token-file", tok); err == nil {
			t.Errorf("remote list with the %s token was served:\n%s", name, out)
		}
	}
	if out, err := d.Sluice(t, "sessions", "list", "--server", server, "--ca", ca); err == nil || !strings.Contains(out, "bearer token") {
		t.Errorf("remote list without a token: %v\n%s", err, out)
	}
}

// remoteCredentials is what a responder needs for the daemon's remote API:
// the daemon's CA in a file (from sluice ca), and a function writing a
// token of the test's issuer with the given claims to a file, returning
// its path (for --token-file).
func remoteCredentials(t *testing.T, d *testenv.Daemon, is *testenv.Issuer) (ca string, token func(name string, claims map[string]any) string) {
	t.Helper()
	dir := t.TempDir()
	caPEM, err := d.Sluice(t, "ca", "--data-dir", d.DataDir)
	if err != nil {
		t.Fatalf("sluice ca: %v", err)
	}
	ca = filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte(caPEM[strings.Index(caPEM, "-----BEGIN"):]), 0o600)
	return ca, func(name string, claims map[string]any) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(is.Sign(t, claims)), 0o600)
		return p
	}
}
