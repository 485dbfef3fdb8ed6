package export

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
)

// sshOpts are how the decoder tells events of a channel apart.
type sshOpts struct {
	// statementChannel: statements name their channel
	// (Fields["channel"]), as the result events do.
	statementChannel bool
	// noResultChannel: results do not name theirs; the order says it.
	noResultChannel bool
}

// sshSession is a recorded SSH session at level full, in the format of
// decoder/ssh:
//
//   - channel 0: a shell on a terminal, whose output (with colours and a
//     title) and input both split a UTF-8 character across two wire
//     events, a window change, and an exit with status 0;
//   - channel 1: `make test` without a terminal: stdout, stderr, stdout
//     again without a final newline, exit status 3;
//   - channel 2: `pg_dump prod`, refused;
//   - channel 3: the sftp subsystem: a download whose handle is closed
//     after the next operations, a stat, a refused remove and an upload
//     the host refuses;
//   - an ssh -L forward, refused.
func sshSession(o sshOpts) (record.Header, []record.Event) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	var ev []record.Event
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	add := func(e record.Event) {
		e.Seq = uint64(len(ev) + 1)
		ev = append(ev, e)
	}
	wire := func(ms int, ch, stream, dir, data string) {
		add(record.Event{Time: at(ms), Type: record.TypeWire, Dir: dir, Data: []byte(data),
			Fields: map[string]string{"channel": ch, "stream": stream}})
	}
	out := func(ms int, ch, stream, data string) { wire(ms, ch, stream, record.DirServerToClient, data) }
	in := func(ms int, ch, data string) { wire(ms, ch, "tty", record.DirClientToServer, data) }
	req := func(ms int, ch, kind, text, verdict, rule, reason string) {
		e := record.Event{Time: at(ms), Type: record.TypeStatement, Kind: kind, Text: text, Verdict: verdict, Rule: rule, Reason: reason}
		if o.statementChannel && ch != "" {
			e.Fields = map[string]string{"channel": ch}
		}
		add(e)
	}
	done := func(ms int, ch, kind, code string, bytes, us int64) {
		e := record.Event{Time: at(ms), Type: record.TypeResult, Kind: kind, ErrCode: code, Bytes: bytes, DurationUS: us}
		if !o.noResultChannel && ch != "" {
			e.Fields = map[string]string{"channel": ch}
		}
		add(e)
	}

	add(record.Event{Time: at(0), Type: record.TypeSessionStart, Verdict: "allow", Rule: "ci/connect",
		Fields: map[string]string{"protocol": "ssh", "target": "web", "client": "10.1.2.3:40000", "orig_dst": "10.9.8.7:22"}})
	add(record.Event{Time: at(1), Type: record.TypeNote, Reason: "ssh login",
		Fields: map[string]string{"client_user": "deploy", "user": "deploy", "credential": "web-key", "cert_key_id": "sluice job=7"}})

	// Channel 0: a shell on a terminal.
	add(record.Event{Time: at(10), Type: record.TypeNote, Reason: "pty-req",
		Fields: map[string]string{"channel": "0", "term": "xterm-256color", "cols": "100", "rows": "30"}})
	req(11, "0", "shell", "shell", "allow", "ci/default", "")
	out(20, "0", "tty", "\x1b]0;deploy@web\x07\x1b[01;32mdeploy@web\x1b[0m:~$ ")
	in(100, "0", "echo caf\xc3")
	in(110, "0", "\xa9\r")
	out(101, "0", "tty", "echo caf\xc3")
	out(111, "0", "tty", "\xa9\r\ncaf\xc3")
	out(112, "0", "tty", "\xa9 \xe2\x82")
	out(113, "0", "tty", "\xac\r\n\x1b[01;32mdeploy@web\x1b[0m:~$ ")
	add(record.Event{Time: at(150), Type: record.TypeNote, Reason: "window-change",
		Fields: map[string]string{"channel": "0", "cols": "120", "rows": "40"}})
	in(200, "0", "exit\r")
	out(201, "0", "tty", "exit\r\nlogout\r\n")
	done(210, "0", "shell", "", 120, 200_000)

	// Channel 1: a command without a terminal.
	req(300, "1", "exec", "make test", "allow", "ci/default", "")
	out(310, "1", "stdout", "ok 1\nok 2\n")
	out(311, "1", "stderr", "warning: flaky\n")
	out(312, "1", "stdout", "3 passed")
	done(320, "1", "exec", "exit 3", 33, 20_000)

	// Channel 2: refused.
	req(400, "2", "exec", "pg_dump prod", "deny", "ci/deny/dumps", "no dumps over ssh")

	// Channel 3: SFTP.
	req(500, "3", "subsystem", "subsystem sftp", "allow", "ci/default", "")
	req(510, "", "sftp", "open /srv/app.tar (read)", "allow", "ci/default", "")
	req(520, "", "sftp", "stat /srv/app.conf", "allow", "ci/default", "")
	done(521, "", "sftp", "", 0, 300)
	req(530, "", "sftp", "remove /srv/app.conf", "deny", "ci/deny/rm", "no removals")
	req(540, "", "sftp", "open /etc/passwd (write,create,trunc)", "allow", "ci/default", "")
	done(541, "", "sftp", "sftp 3", 0, 400)
	done(550, "", "sftp", "", 1024, 40_000)
	done(560, "3", "subsystem", "", 1024, 60_000)

	// A forward, refused.
	req(600, "", "direct_tcpip", "direct-tcpip 10.0.0.5:5432", "deny", "ci/deny/tunnels", "no tunnels")

	add(record.Event{Time: at(700), Type: record.TypeSessionEnd, Reason: "client closed the connection", Bytes: 1177, DurationUS: 700_000})
	return record.Header{Version: 1, Session: "s-ssh", Start: t0}, ev
}

// wantSSHOutput is what the sample session's asciicast shows (its "o"
// events, concatenated).
const wantSSHOutput = "\x1b]0;deploy@web\x07\x1b[01;32mdeploy@web\x1b[0m:~$ " +
	"echo café\r\ncafé €\r\n\x1b[01;32mdeploy@web\x1b[0m:~$ exit\r\nlogout\r\n" +
	"$ make test\r\nok 1\r\nok 2\r\nwarning: flaky\r\n3 passed\r\n[exit 3]\r\n" +
	"sluice: pg_dump prod denied by rule ci/deny/dumps: no dumps over ssh\r\n" +
	"-- subsystem sftp\r\n" +
	"-- open /srv/app.tar (read)\r\n" +
	"-- stat /srv/app.conf\r\n" +
	"sluice: remove /srv/app.conf denied by rule ci/deny/rm: no removals\r\n" +
	"-- open /etc/passwd (write,create,trunc)\r\n" +
	"-- open /etc/passwd (write,create,trunc): failed: permission denied (sftp 3)\r\n" +
	"sluice: direct-tcpip 10.0.0.5:5432 denied by rule ci/deny/tunnels: no tunnels\r\n"

// cast is an asciicast v2 file as read back.
type cast struct {
	Version, Width, Height int
	Timestamp              int64
	Title                  string
	Env                    map[string]string
	out, in                string
	resizes                []string
	times                  []float64
}

// parseCast reads an asciicast v2 file and checks it against the spec
// (https://docs.asciinema.org/manual/asciicast/v2/): a header object,
// then [time, code, data] arrays, times non-decreasing, codes o, i, r,
// resizes COLSxROWS, every line valid JSON of valid UTF-8.
func parseCast(t *testing.T, b []byte) *cast {
	t.Helper()
	if !utf8.Valid(b) {
		t.Fatalf("asciicast is not valid UTF-8:\n%q", b)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<24)
	if !sc.Scan() {
		t.Fatal("no header line")
	}
	c := &cast{}
	if err := json.Unmarshal(sc.Bytes(), c); err != nil {
		t.Fatalf("header %s: %v", sc.Bytes(), err)
	}
	if c.Version != 2 || c.Width <= 0 || c.Height <= 0 {
		t.Errorf("header %s", sc.Bytes())
	}
	resize := regexp.MustCompile(`^[1-9][0-9]*x[1-9][0-9]*$`)
	var out, in strings.Builder
	for sc.Scan() {
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event line %s: %v", sc.Bytes(), err)
		}
		at, ok1 := ev[0].(float64)
		code, ok2 := ev[1].(string)
		data, ok3 := ev[2].(string)
		if !ok1 || !ok2 || !ok3 || at < 0 {
			t.Fatalf("event line %s: want [seconds, code, data]", sc.Bytes())
		}
		if n := len(c.times); n > 0 && at < c.times[n-1] {
			t.Errorf("time goes back: %s after %v", sc.Bytes(), c.times[n-1])
		}
		c.times = append(c.times, at)
		switch code {
		case "o":
			out.WriteString(data)
		case "i":
			in.WriteString(data)
		case "r":
			if !resize.MatchString(data) {
				t.Errorf("resize %q, want COLSxROWS", data)
			}
			c.resizes = append(c.resizes, data)
		default:
			t.Errorf("event code %q in %s", code, sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	c.out, c.in = out.String(), in.String()
	return c
}

func TestSSHAsciicast(t *testing.T) {
	for name, o := range map[string]sshOpts{
		"results name channels": {},
		"all name channels":     {statementChannel: true},
		"order only":            {noResultChannel: true},
	} {
		t.Run(name, func(t *testing.T) {
			hdr, ev := sshSession(o)
			var b bytes.Buffer
			if err := WriteAsciicast(&b, hdr, ev, 0, 0); err != nil {
				t.Fatal(err)
			}
			c := parseCast(t, b.Bytes())
			if c.Width != 100 || c.Height != 30 || c.Env["TERM"] != "xterm-256color" || c.Timestamp != hdr.Start.Unix() ||
				!strings.Contains(c.Title, "s-ssh") {
				t.Errorf("header %+v", c)
			}
			if c.out != wantSSHOutput {
				t.Errorf("output:\n%q\nwant\n%q", c.out, wantSSHOutput)
			}
			if c.in != "echo café\rexit\r" {
				t.Errorf("input %q", c.in)
			}
			if len(c.resizes) != 1 || c.resizes[0] != "120x40" {
				t.Errorf("resizes %q", c.resizes)
			}
			if c.times[0] != 0.02 || c.times[len(c.times)-1] != 0.6 {
				t.Errorf("times %v", c.times)
			}
		})
	}

	// A size given by the caller wins over the pty-req's.
	hdr, ev := sshSession(sshOpts{})
	var b bytes.Buffer
	if err := WriteAsciicast(&b, hdr, ev, 132, 50); err != nil {
		t.Fatal(err)
	}
	if c := parseCast(t, b.Bytes()); c.Width != 132 || c.Height != 50 {
		t.Errorf("size %dx%d, want 132x50", c.Width, c.Height)
	}
}

// TestSSHAsciicastPlays: asciinema itself reads the export and prints
// its output events as they were written.
func TestSSHAsciicastPlays(t *testing.T) {
	hdr, ev := sshSession(sshOpts{})
	var b bytes.Buffer
	if err := WriteAsciicast(&b, hdr, ev, 0, 0); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "s.cast")
	if err := os.WriteFile(f, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := testenv.AsciinemaCat(t, f)
	if err != nil || out != wantSSHOutput {
		t.Errorf("asciinema cat: %v\n%q\nwant\n%q", err, out, wantSSHOutput)
	}
}

const wantSSHTranscript = `-- session started 2026-12-04T10:00:00Z client=10.1.2.3:40000 orig_dst=10.9.8.7:22 protocol=ssh target=web
-- note: ssh login cert_key_id="sluice job=7" client_user=deploy credential=web-key user=deploy
-- note: pty-req channel=0 cols=100 rows=30 term=xterm-256color
=> shell
   [allow] rule ci/default
   | deploy@web:~$ echo café
   | café €
-- note: window-change channel=0 cols=120 rows=40
   | deploy@web:~$ exit
   | logout
   (exit 0, 120 bytes, 200.000 ms)
=> make test
   [allow] rule ci/default
   | ok 1
   | ok 2
   ! warning: flaky
   | 3 passed
   (exit 3, 33 bytes, 20.000 ms)
=> pg_dump prod
   [deny] rule ci/deny/dumps: no dumps over ssh
=> subsystem sftp
   [allow] rule ci/default
=> open /srv/app.tar (read)
   [allow] rule ci/default
=> stat /srv/app.conf
   [allow] rule ci/default
   (0.300 ms)
=> remove /srv/app.conf
   [deny] rule ci/deny/rm: no removals
=> open /etc/passwd (write,create,trunc)
   [allow] rule ci/default
   (failed: permission denied (sftp 3), 0.400 ms)
<= open /srv/app.tar (read)
   (1024 bytes, 40.000 ms)
<= subsystem sftp (channel 3)
   (exit 0, 1024 bytes, 60.000 ms)
=> direct-tcpip 10.0.0.5:5432
   [deny] rule ci/deny/tunnels: no tunnels
-- session ended: client closed the connection (1177 bytes, 700.000 ms)
`

func TestSSHTranscript(t *testing.T) {
	for name, o := range map[string]sshOpts{
		"results name channels": {},
		"all name channels":     {statementChannel: true},
		"order only":            {noResultChannel: true},
	} {
		t.Run(name, func(t *testing.T) {
			_, ev := sshSession(o)
			var b bytes.Buffer
			if err := Transcript(&b, ev); err != nil {
				t.Fatal(err)
			}
			want := wantSSHTranscript
			if o.noResultChannel {
				// Nothing names the SFTP subsystem's channel.
				want = strings.Replace(want, "<= subsystem sftp (channel 3)", "<= subsystem sftp", 1)
			}
			if b.String() != want {
				t.Errorf("transcript:\n%s\nwant:\n%s", b.String(), want)
			}
		})
	}
}

// TestSSHInterleaved: two commands whose channels run at once; each
// line of output says whose it is when it does not follow its own.
func TestSSHInterleaved(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	wire := func(ch, stream, data string) record.Event {
		return record.Event{Time: t0, Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte(data),
			Fields: map[string]string{"channel": ch, "stream": stream}}
	}
	ev := []record.Event{
		{Time: t0, Type: record.TypeSessionStart, Fields: map[string]string{"protocol": "ssh"}},
		{Time: t0, Type: record.TypeStatement, Kind: "exec", Text: "sleep 1; echo a", Verdict: "allow"},
		{Time: t0, Type: record.TypeStatement, Kind: "exec", Text: "echo b\necho c", Verdict: "allow"},
		wire("1", "stdout", "b\n"),
		wire("0", "stdout", "a\n"),
		wire("1", "stdout", "c\n"),
		{Time: t0, Type: record.TypeResult, Kind: "exec", Bytes: 4, Fields: map[string]string{"channel": "1"}},
		{Time: t0, Type: record.TypeResult, Kind: "exec", Bytes: 2, Fields: map[string]string{"channel": "0"}},
	}
	var b bytes.Buffer
	if err := Transcript(&b, ev); err != nil {
		t.Fatal(err)
	}
	// Without channels on statements the order decides: the first
	// channel to show output is taken to be the first command's.
	want := `-- session started 0001-01-01T00:00:00Z protocol=ssh
=> sleep 1; echo a
   [allow]
=> echo b
   echo c
   [allow]
<= sleep 1; echo a (channel 1)
   | b
<= echo b ... (channel 0)
   | a
<= sleep 1; echo a (channel 1)
   | c
   (exit 0, 4 bytes)
<= echo b ... (channel 0)
   (exit 0, 2 bytes)
`
	want = strings.Replace(want, "0001-01-01T00:00:00Z", t0.Format(time.RFC3339Nano), 1)
	if b.String() != want {
		t.Errorf("transcript:\n%s\nwant:\n%s", b.String(), want)
	}
	// Statements that name their channels are never mistaken.
	ev[1].Fields = map[string]string{"channel": "0"}
	ev[2].Fields = map[string]string{"channel": "1"}
	b.Reset()
	Transcript(&b, ev)
	for _, w := range []string{"   echo c\n   [allow]\n   | b\n<= sleep 1; echo a (channel 0)\n   | a\n"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("transcript lacks %q:\n%s", w, b.String())
		}
	}
}

// TestSSHRendering: one channel's events in both forms: the transcript
// and the asciicast's output.
func TestSSHRendering(t *testing.T) {
	start := record.Event{Type: record.TypeSessionStart, Fields: map[string]string{"protocol": "ssh"}}
	exec := func(text, verdict string) record.Event {
		return record.Event{Type: record.TypeStatement, Kind: "exec", Text: text, Verdict: verdict, Rule: "r", Reason: "why"}
	}
	wire := func(stream, data string) record.Event {
		return record.Event{Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte(data),
			Fields: map[string]string{"channel": "0", "stream": stream}}
	}
	pty := record.Event{Type: record.TypeNote, Reason: "pty-req", Fields: map[string]string{"channel": "0", "cols": "80", "rows": "24", "term": "xterm"}}
	shell := record.Event{Type: record.TypeStatement, Kind: "shell", Text: "shell", Verdict: "allow"}
	result := func(code string) record.Event {
		return record.Event{Type: record.TypeResult, Kind: "exec", ErrCode: code, Fields: map[string]string{"channel": "0"}}
	}
	for _, tc := range []struct {
		name       string
		events     []record.Event
		transcript string // after the session's first line
		output     string
	}{
		{"invalid UTF-8 and a character cut by the channel's end",
			[]record.Event{exec("cat x", "allow"), wire("stdout", "a\xffb\n\xe2\x82"), result("")},
			"=> cat x\n   [allow] rule r: why\n   | a\uFFFDb\n   | \uFFFD\uFFFD\n   (exit 0)\n",
			"$ cat x\r\na\uFFFDb\r\n\uFFFD\uFFFD"},
		{"a CR LF split across events is not doubled",
			[]record.Event{exec("x", "allow"), wire("stdout", "one\r"), wire("stdout", "\ntwo\n"), result("")},
			"=> x\n   [allow] rule r: why\n   | one\n   | two\n   (exit 0)\n",
			"$ x\r\none\r\ntwo\r\n"},
		{"terminal escapes in a command and its output",
			[]record.Event{exec("echo \x1b[2J", "allow"), wire("stdout", "\x1b]52;c;cGF3bmVk\x07red \x1b[31mtext\x1b[0m\x01\n"), result("signal KILL")},
			"=> echo \\x1b[2J\n   [allow] rule r: why\n   | red text\\x01\n   (signal KILL)\n",
			"$ echo \\x1b[2J\r\n\x1b]52;c;cGF3bmVk\x07red \x1b[31mtext\x1b[0m\x01\r\n[signal KILL]\r\n"},
		{"a terminal's line editing",
			[]record.Event{pty, shell, wire("tty", "$ lx\b \bs\r\n10%\r50%\r100%\r\n$ ab\x1b[D\x1b[Kc\r\n")},
			"-- note: pty-req channel=0 cols=80 rows=24 term=xterm\n=> shell\n   [allow]\n   | $ ls\n   | 100%\n   | $ ac\n",
			"$ lx\b \bs\r\n10%\r50%\r100%\r\n$ ab\x1b[D\x1b[Kc\r\n"},
		{"a refused shell",
			[]record.Event{pty, {Type: record.TypeStatement, Kind: "shell", Text: "shell", Verdict: "deny", Rule: "r", Reason: "no shells"}},
			"-- note: pty-req channel=0 cols=80 rows=24 term=xterm\n=> shell\n   [deny] rule r: no shells\n",
			"sluice: shell denied by rule r: no shells\r\n"},
		{"a held command, approved",
			[]record.Event{exec("deploy", "hold"), {Type: record.TypeNote, Kind: "exec", Verdict: "allow", Rule: "r", Reason: "hold (before): approved by alice"},
				wire("stdout", "done\n"), result("")},
			"=> deploy\n   [hold] rule r: why\n-- note: hold (before): approved by alice (rule r)\n   | done\n   (exit 0)\n",
			"sluice: deploy held for approval by rule r: why\r\nsluice: approved: hold (before): approved by alice\r\ndone\r\n"},
		{"a held command, refused",
			[]record.Event{exec("deploy", "hold"), {Type: record.TypeNote, Kind: "exec", Verdict: "deny", Rule: "r", Reason: "hold (before): timed out"}},
			"=> deploy\n   [hold] rule r: why\n-- note: hold (before): timed out (rule r)\n",
			"sluice: deploy held for approval by rule r: why\r\nsluice: refused by rule r: hold (before): timed out\r\n"},
		{"output without a final newline, then the exit",
			[]record.Event{exec("printf x", "allow"), wire("stdout", "x"), result("exit 1")},
			"=> printf x\n   [allow] rule r: why\n   | x\n   (exit 1)\n",
			"$ printf x\r\nx\r\n[exit 1]\r\n"},
		{"below level commands",
			[]record.Event{{Type: record.TypeStatement, Kind: "exec", Verdict: "allow"}, {Type: record.TypeResult, Kind: "exec", Bytes: 3}},
			"=> (exec request; text not recorded)\n   [allow]\n   (exit 0, 3 bytes)\n",
			"$ (exec request; text not recorded)\r\n"},
		{"a shell without a terminal",
			[]record.Event{shell, wire("stdout", "hi\n"), {Type: record.TypeResult, Kind: "shell", Fields: map[string]string{"channel": "0"}}},
			"=> shell\n   [allow]\n   | hi\n   (exit 0)\n",
			"-- shell\r\nhi\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := append([]record.Event{start}, tc.events...)
			var b bytes.Buffer
			if err := Transcript(&b, ev); err != nil {
				t.Fatal(err)
			}
			_, got, _ := strings.Cut(b.String(), "\n")
			if got != tc.transcript {
				t.Errorf("transcript\n%q\nwant\n%q", got, tc.transcript)
			}
			b.Reset()
			if err := WriteAsciicast(&b, record.Header{Session: "s"}, ev, 0, 0); err != nil {
				t.Fatal(err)
			}
			if c := parseCast(t, b.Bytes()); c.out != tc.output {
				t.Errorf("asciicast output\n%q\nwant\n%q", c.out, tc.output)
			}
		})
	}
}

// TestSSHTranscriptCap: a stream shows MaxShownOutput bytes, then says
// how much more there was.
func TestSSHTranscriptCap(t *testing.T) {
	line := strings.Repeat("x", 1023) + "\n"
	big := strings.Repeat(line, MaxShownOutput/len(line)+10)
	ev := []record.Event{
		{Type: record.TypeSessionStart, Fields: map[string]string{"protocol": "ssh"}},
		{Type: record.TypeStatement, Kind: "exec", Text: "cat big", Verdict: "allow"},
		{Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte(big), Fields: map[string]string{"channel": "0", "stream": "stdout"}},
		{Type: record.TypeResult, Kind: "exec", Bytes: int64(len(big)), Fields: map[string]string{"channel": "0"}},
	}
	var b bytes.Buffer
	Transcript(&b, ev)
	if n := strings.Count(b.String(), "   | "+line); n != MaxShownOutput/len(line) {
		t.Errorf("%d lines shown, want %d", n, MaxShownOutput/len(line))
	}
	if want := "   | ... (10240 more bytes not shown)\n   (exit 0, "; !strings.Contains(b.String(), want) {
		t.Errorf("transcript does not end with %q:\n...%s", want, b.String()[b.Len()-200:])
	}
}

// TestSSHReplay: an SSH session replays as its terminal, raw.
func TestSSHReplay(t *testing.T) {
	_, ev := sshSession(sshOpts{})
	var b bytes.Buffer
	if err := Replay(context.Background(), &b, ev, math.Inf(1)); err != nil {
		t.Fatal(err)
	}
	if b.String() != wantSSHOutput {
		t.Errorf("replay:\n%q\nwant\n%q", b.String(), wantSSHOutput)
	}
}

// TestSSHJSONL: JSON lines carry an SSH session's channels and streams.
func TestSSHJSONL(t *testing.T) {
	hdr, ev := sshSession(sshOpts{})
	var b bytes.Buffer
	if err := WriteJSONL(&b, hdr, ev); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != len(ev) {
		t.Fatalf("%d lines for %d events", len(lines), len(ev))
	}
	for _, want := range []string{
		`"type":"wire","dir":"c2s","data":"ZWNobyBjYWbD","fields":{"channel":"0","stream":"tty"}}`,
		`"type":"wire","dir":"s2c","data":"d2FybmluZzogZmxha3kK","fields":{"channel":"1","stream":"stderr"}}`,
		`"type":"result","kind":"exec","bytes":33,"duration_us":20000,"err_code":"exit 3","fields":{"channel":"1"}}`,
		`"type":"note","reason":"window-change","fields":{"channel":"0","cols":"120","rows":"40"}}`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("jsonl lacks %s", want)
		}
	}
}

func TestSSHNoPCAP(t *testing.T) {
	_, ev := sshSession(sshOpts{})
	var b bytes.Buffer
	err := WritePCAP(&b, ev, netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.5:22"))
	if !errors.Is(err, ErrNotAStream) || b.Len() != 0 {
		t.Fatalf("pcap of an SSH session: %v, %d bytes written", err, b.Len())
	}
	for _, f := range []string{"jsonl", "asciicast"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
}

// FuzzSSHExport: whatever bytes a channel carries, cut anywhere, the
// asciicast is valid JSON lines of valid UTF-8, and the transcript is
// valid UTF-8 with no control character but newline and tab.
func FuzzSSHExport(f *testing.F) {
	f.Add([]byte("hello\r\nw\xc3\xb6rld\n"), 7, true)
	f.Add([]byte("\x1b[31mred\x1b[0m \x1b]0;title\x07\x1b[K\b\b\x1bP+q\x1b\\\xe2\x82"), 3, false)
	f.Add([]byte("\xff\xfe\x00\x9b1;2H\x1b[99999C\x1b[@\x1b[1P"), 1, true)
	f.Fuzz(func(t *testing.T, data []byte, cut int, pty bool) {
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		stream := "stdout"
		ev := []record.Event{{Type: record.TypeSessionStart, Fields: map[string]string{"protocol": "ssh"}}}
		if pty {
			stream = "tty"
			ev = append(ev, record.Event{Type: record.TypeNote, Reason: "pty-req", Fields: map[string]string{"channel": "0", "cols": "80", "rows": "24"}})
		}
		ev = append(ev, record.Event{Type: record.TypeStatement, Kind: "exec", Text: string(data), Verdict: "allow"})
		for _, d := range [][]byte{data[:cut], data[cut:]} {
			ev = append(ev, record.Event{Type: record.TypeWire, Dir: record.DirServerToClient, Data: d, Fields: map[string]string{"channel": "0", "stream": stream}})
			ev = append(ev, record.Event{Type: record.TypeWire, Dir: record.DirClientToServer, Data: d, Fields: map[string]string{"channel": "0", "stream": stream}})
		}
		var b bytes.Buffer
		if err := WriteAsciicast(&b, record.Header{}, ev, 0, 0); err != nil {
			t.Fatal(err)
		}
		parseCast(t, b.Bytes())
		b.Reset()
		if err := Transcript(&b, ev); err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(b.Bytes()) {
			t.Fatalf("transcript is not UTF-8: %q", b.Bytes())
		}
		for _, r := range b.String() {
			if isControl(r) && r != '\n' && r != '\t' {
				t.Fatalf("control character %U in the transcript: %q", r, b.String())
			}
		}
	})
}
