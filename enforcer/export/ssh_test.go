package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
)

// sshSession is a recorded SSH session: a shell on a terminal whose
// output splits a UTF-8 character across two wire events, a command with
// stdout, stderr and exit status 3, a refused command, and an SFTP
// operation.
func sshSession() (record.Header, []record.Event) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tty := func(dir string) map[string]string { return map[string]string{"channel": "0", "stream": "tty"} }
	ch1 := func(s string) map[string]string { return map[string]string{"channel": "1", "stream": s} }
	euro := []byte("€") // 3 bytes
	ev := []record.Event{
		{Time: at(0), Type: record.TypeSessionStart, Fields: map[string]string{"protocol": "ssh", "target": "web"}},
		{Time: at(1), Type: record.TypeNote, Reason: "pty-req", Fields: map[string]string{"channel": "0", "term": "xterm-256color", "cols": "100", "rows": "30"}},
		{Time: at(2), Type: record.TypeStatement, Kind: "shell", Text: "shell", Verdict: "allow", Rule: "ci/default"},
		{Time: at(3), Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte("$ "), Fields: tty("s2c")},
		{Time: at(4), Type: record.TypeWire, Dir: record.DirClientToServer, Data: []byte("echo hi\r"), Fields: tty("c2s")},
		{Time: at(5), Type: record.TypeWire, Dir: record.DirServerToClient, Data: append([]byte("echo hi\r\nhi "), euro[:1]...), Fields: tty("s2c")},
		{Time: at(6), Type: record.TypeWire, Dir: record.DirServerToClient, Data: append(append([]byte{}, euro[1:]...), "\r\n"...), Fields: tty("s2c")},
		{Time: at(7), Type: record.TypeNote, Reason: "window-change", Fields: map[string]string{"channel": "0", "cols": "120", "rows": "40"}},
		{Time: at(8), Type: record.TypeResult, Kind: "shell", Bytes: 20, DurationUS: 8000, Fields: map[string]string{"channel": "0"}},
		{Time: at(9), Type: record.TypeStatement, Kind: "exec", Text: "make test", Verdict: "allow", Rule: "ci/default"},
		{Time: at(10), Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte("ok 1\nok 2\n"), Fields: ch1("stdout")},
		{Time: at(11), Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte("warning\n"), Fields: ch1("stderr")},
		{Time: at(12), Type: record.TypeResult, Kind: "exec", ErrCode: "exit 3", Bytes: 18, DurationUS: 3000, Fields: map[string]string{"channel": "1"}},
		{Time: at(13), Type: record.TypeStatement, Kind: "exec", Text: "pg_dump prod", Verdict: "deny", Rule: "ci/deny/dumps", Reason: "no dumps"},
		{Time: at(14), Type: record.TypeStatement, Kind: "sftp", Text: "open /srv/app.tar (read)", Verdict: "allow", Rule: "ci/default"},
		{Time: at(15), Type: record.TypeResult, Kind: "sftp", Bytes: 1024, DurationUS: 500},
		{Time: at(16), Type: record.TypeSessionEnd},
	}
	return record.Header{Version: 1, Session: "s1", Start: t0}, ev
}

func TestSSHAsciicast(t *testing.T) {
	hdr, ev := sshSession()
	var b bytes.Buffer
	if err := WriteAsciicast(&b, hdr, ev, 0, 0); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	var h struct {
		Version, Width, Height int
		Timestamp              int64
		Env                    map[string]string
	}
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil || h.Version != 2 || h.Width != 100 || h.Height != 30 ||
		h.Env["TERM"] != "xterm-256color" || h.Timestamp != hdr.Start.Unix() {
		t.Fatalf("header %s: %+v %v", lines[0], h, err)
	}
	var out, in strings.Builder
	var resizes []string
	last := -1.0
	for _, l := range lines[1:] {
		var e []any
		if err := json.Unmarshal([]byte(l), &e); err != nil || len(e) != 3 {
			t.Fatalf("event %s: %v", l, err)
		}
		tm, code, data := e[0].(float64), e[1].(string), e[2].(string)
		if tm < last {
			t.Fatalf("time goes back at %s", l)
		}
		last = tm
		switch code {
		case "o":
			out.WriteString(data)
		case "i":
			in.WriteString(data)
		case "r":
			resizes = append(resizes, data)
		default:
			t.Fatalf("event code %q", code)
		}
	}
	want := "$ echo hi\r\nhi €\r\n$ make test\r\nok 1\r\nok 2\r\nwarning\r\n[exit 3]\r\nsluice: pg_dump prod denied by rule ci/deny/dumps: no dumps\r\n-- open /srv/app.tar (read)\r\n"
	if out.String() != want {
		t.Errorf("output:\n%q\nwant\n%q", out.String(), want)
	}
	if in.String() != "echo hi\r" || len(resizes) != 1 || resizes[0] != "120x40" {
		t.Errorf("input %q, resizes %q", in.String(), resizes)
	}
}

func TestSSHTranscript(t *testing.T) {
	_, ev := sshSession()
	var b bytes.Buffer
	if err := Transcript(&b, ev); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"=> shell\n   [allow] rule ci/default\n",
		"   | $ echo hi\n   | hi €\n",
		"   (exit 0, 20 bytes, 8.000 ms)\n",
		"=> make test\n   [allow] rule ci/default\n   | ok 1\n   | ok 2\n   | warning\n   (exit 3, 18 bytes, 3.000 ms)\n",
		"=> pg_dump prod\n   [deny] rule ci/deny/dumps: no dumps\n",
		"=> open /srv/app.tar (read)\n   [allow] rule ci/default\n   (1024 bytes, 0.500 ms)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "SQLSTATE") || strings.Contains(got, "rows") {
		t.Errorf("an SSH transcript speaks of SQL:\n%s", got)
	}
}

func TestSSHNoPCAP(t *testing.T) {
	_, ev := sshSession()
	var b bytes.Buffer
	err := WritePCAP(&b, ev, netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.5:22"))
	if !errors.Is(err, ErrNotAStream) || b.Len() != 0 {
		t.Fatalf("pcap of an SSH session: %v, %d bytes written", err, b.Len())
	}
}
