package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/api"
)

// serveSessions answers GET /v1/sessions/{id} on a socket of its own, as
// the daemon does, from sessions and their events; it returns the
// socket's path. The daemon is not what these tests are about: its own
// tests and the end-to-end tests serve real recordings.
func serveSessions(t *testing.T, sessions map[string][]record.Event, protocol map[string]string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-cli") // short: socket paths have a limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		events, ok := sessions[id]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": "no such session"})
			return
		}
		start := events[0].Time
		sess := store.Session{ID: id, Start: start, End: events[len(events)-1].Time, Status: store.StatusSealed, Target: "web",
			Protocol: protocol[id], OrigDst: "10.9.8.7:22", PID: 42, Comm: "ssh", IdentityLevel: "oidc", Level: "full"}
		for _, e := range events {
			if e.Type == record.TypeStatement {
				sess.Statements++
				if e.Verdict == "deny" {
					sess.Denied++
				}
			}
		}
		var d api.SessionDetail
		d.Session, _ = json.Marshal(sess)
		d.Header, _ = json.Marshal(record.Header{Version: 1, Session: id, Start: start})
		d.Events, _ = json.Marshal(events)
		d.RecordingStatus = "sealed"
		json.NewEncoder(w).Encode(d)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// sshEvents is a short SSH session at level full: a shell on a terminal,
// a command that exits with status 3, and a refused one.
func sshEvents() []record.Event {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	wire := func(ms int, ch, stream, dir, data string) record.Event {
		return record.Event{Time: at(ms), Type: record.TypeWire, Dir: dir, Data: []byte(data), Fields: map[string]string{"channel": ch, "stream": stream}}
	}
	return []record.Event{
		{Time: at(0), Type: record.TypeSessionStart, Fields: map[string]string{"protocol": "ssh", "target": "web"}},
		{Time: at(1), Type: record.TypeNote, Reason: "pty-req", Fields: map[string]string{"channel": "0", "term": "xterm", "cols": "100", "rows": "30"}},
		{Time: at(2), Type: record.TypeStatement, Kind: "shell", Text: "shell", Verdict: "allow", Rule: "ci/default"},
		wire(3, "0", "tty", record.DirServerToClient, "\x1b[32m$\x1b[0m "),
		wire(4, "0", "tty", record.DirClientToServer, "echo hi\r"),
		wire(5, "0", "tty", record.DirServerToClient, "echo hi\r\nhi\r\n"),
		{Time: at(6), Type: record.TypeResult, Kind: "shell", Bytes: 20, DurationUS: 4000, Fields: map[string]string{"channel": "0"}},
		{Time: at(10), Type: record.TypeStatement, Kind: "exec", Text: "make test", Verdict: "allow", Rule: "ci/default"},
		wire(11, "1", "stdout", record.DirServerToClient, "ok\n"),
		wire(12, "1", "stderr", record.DirServerToClient, "1 failed\n"),
		{Time: at(13), Type: record.TypeResult, Kind: "exec", ErrCode: "exit 3", Bytes: 12, DurationUS: 3000, Fields: map[string]string{"channel": "1"}},
		{Time: at(20), Type: record.TypeStatement, Kind: "exec", Text: "pg_dump prod", Verdict: "deny", Rule: "ci/deny/dumps", Reason: "no dumps"},
		{Time: at(30), Type: record.TypeSessionEnd, Reason: "client closed the connection"},
	}
}

func TestSessionsSSH(t *testing.T) {
	sql := []record.Event{
		{Time: time.Unix(1e9, 0), Type: record.TypeSessionStart, Fields: map[string]string{"target": "db"}},
		{Time: time.Unix(1e9, 0), Type: record.TypeStatement, Kind: "select", Text: "SELECT 1", Verdict: "allow"},
	}
	sock := serveSessions(t, map[string][]record.Event{"s-ssh": sshEvents(), "s-sql": sql},
		map[string]string{"s-ssh": "ssh", "s-sql": "postgres"})

	t.Run("show", func(t *testing.T) {
		code, out, errOut := sluice(t, "sessions", "show", "s-ssh", "--socket", sock)
		if code != 0 || errOut != "" {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		for _, want := range []string{
			"target    web (ssh) 10.9.8.7:22\n",
			"requests 3, denied 1\n\n",
			"=> shell\n   [allow] rule ci/default\n   | $ echo hi\n   | hi\n   (exit 0, 20 bytes, 4.000 ms)\n",
			"=> make test\n   [allow] rule ci/default\n   | ok\n   ! 1 failed\n   (exit 3, 12 bytes, 3.000 ms)\n",
			"=> pg_dump prod\n   [deny] rule ci/deny/dumps: no dumps\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("sessions show lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "\x1b") || strings.Contains(out, "statements") {
			t.Errorf("sessions show of an ssh session:\n%q", out)
		}
		// A SQL session's is as it was.
		if _, out, _ := sluice(t, "sessions", "show", "s-sql", "--socket", sock); !strings.Contains(out, "statements 1, denied 0\n\n") ||
			!strings.Contains(out, "=> SELECT 1\n   [allow]\n") {
			t.Errorf("sessions show of a SQL session:\n%s", out)
		}
	})

	t.Run("replay plays the terminal", func(t *testing.T) {
		code, out, errOut := sluice(t, "replay", "s-ssh", "--socket", sock, "--speed", "1000")
		want := "\x1b[32m$\x1b[0m echo hi\r\nhi\r\n$ make test\r\nok\r\n1 failed\r\n[exit 3]\r\nsluice: pg_dump prod denied by rule ci/deny/dumps: no dumps\r\n"
		if code != 0 || errOut != "" || out != want {
			t.Errorf("exit %d, stderr %q, stdout\n%q\nwant\n%q", code, errOut, out, want)
		}
	})

	t.Run("export", func(t *testing.T) {
		code, out, errOut := sluice(t, "export", "s-ssh", "--socket", sock, "--format", "asciicast")
		if code != 0 || errOut != "" || !strings.HasPrefix(out, `{"version":2,"width":100,"height":30,`) ||
			!strings.Contains(out, `{"TERM":"xterm"}}`) || !strings.Contains(out, `, "i", "echo hi\r"]`) {
			t.Errorf("export asciicast: exit %d, stderr %q\n%s", code, errOut, out)
		}
		code, out, errOut = sluice(t, "export", "s-ssh", "--socket", sock, "--format", "jsonl")
		if code != 0 || errOut != "" || !strings.Contains(out, `"fields":{"channel":"1","stream":"stderr"}`) {
			t.Errorf("export jsonl: exit %d, stderr %q\n%s", code, errOut, out)
		}

		// pcap: an error that names the formats that work, and no file.
		f := filepath.Join(t.TempDir(), "s.pcap")
		code, out, errOut = sluice(t, "export", "s-ssh", "--socket", sock, "--format", "pcap", "-o", f)
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "sluice export: --format pcap: ") ||
			!strings.Contains(errOut, "jsonl") || !strings.Contains(errOut, "asciicast") {
			t.Errorf("export pcap: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if _, err := os.Stat(f); err == nil {
			t.Errorf("export pcap of an ssh session made %s", f)
		}
	})
}
