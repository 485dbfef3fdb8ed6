package export

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
)

const wantTranscript = `-- session started 2025-03-04T05:06:07.123456789Z client=10.1.2.3:51234 comm=psql job="build #7" orig_dst=10.9.8.7:5432 pid=4242 target=app-db
=> SELECT 42
   [allow] rule read-only
   (1 row, 2 bytes, 1.850 ms)
=> SELECT repeat('x', 150000)
   [allow] rule read-only
   (1 row, 150000 bytes, 250.000 ms)
=> DROP TABLE users;
   [deny] rule no-drop: dropping tables is not allowed
!! ERROR 42501: sluice: statement denied by rule no-drop: dropping tables is not allowed
-- session ended: client closed the connection (2 rows, 150002 bytes, 9s)
`

func TestTranscript(t *testing.T) {
	var buf bytes.Buffer
	if err := Transcript(&buf, newSession(t).events); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != wantTranscript {
		t.Errorf("transcript:\n%s\nwant:\n%s", got, wantTranscript)
	}
}

func TestTranscriptRendering(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    record.Event
		want string
	}{
		{"terminal escapes in a statement are escaped",
			record.Event{Type: record.TypeStatement, Text: "SELECT '\x1b]0;owned\x07\x1b[2J'\r\nFROM t\u009b\xff", Verdict: "allow"},
			"=> SELECT '\\x1b]0;owned\\x07\\x1b[2J'\n   FROM t\\u009b\uFFFD\n   [allow]\n"},
		{"invalid UTF-8 is replaced",
			record.Event{Type: record.TypeError, ErrCode: "22021", Text: "bad byte \xff"},
			"!! ERROR 22021: bad byte \uFFFD\n"},
		{"text below level commands",
			record.Event{Type: record.TypeStatement, Kind: "select", Verdict: "allow", Rule: "r"},
			"=> (select statement; text not recorded)\n   [allow] rule r\n"},
		{"cut statement",
			record.Event{Type: record.TypeStatement, Text: "INSERT", TextBytes: 2 << 20, Verdict: "hold"},
			"=> INSERT\n   ... (statement cut; 2097152 bytes in all)\n   [hold]\n"},
		{"failed result",
			record.Event{Type: record.TypeResult, ErrCode: "57014", DurationUS: 2_500_000},
			"   (failed: SQLSTATE 57014, 2.5s)\n"},
		{"empty result",
			record.Event{Type: record.TypeResult, DurationUS: 12},
			"   (0 rows, 0.012 ms)\n"},
		{"note",
			record.Event{Type: record.TypeNote, Rule: "mask-pii", Reason: "verdict mask not applied"},
			"-- note: verdict mask not applied (rule mask-pii)\n"},
		{"denied connection",
			record.Event{Type: record.TypeSessionStart, Time: t0, Verdict: "deny", Rule: "no-prod", Fields: map[string]string{"target": ""}},
			"-- session started 2025-03-04T05:06:07.123456789Z target=\"\"\n   [deny] rule no-prod\n"},
		{"wire bytes are not shown",
			record.Event{Type: record.TypeWire, Dir: record.DirClientToServer, Data: []byte("Q")}, ""},
		{"seal is not shown",
			record.Event{Type: record.TypeSeal, Sig: []byte{1}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Transcript(&buf, []record.Event{tc.e}); err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestWriteAsciicast(t *testing.T) {
	s := newSession(t)
	// An event recorded out of order must not make time go back.
	s.events[6].Time = t0.Add(-time.Second) // the first result

	var buf bytes.Buffer
	if err := WriteAsciicast(&buf, s.hdr, s.events, 120, 40); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	if !sc.Scan() {
		t.Fatal("no header line")
	}
	var h struct {
		Version, Width, Height int
		Timestamp              int64
		Title                  string
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		t.Fatalf("header: %v\n%s", err, sc.Bytes())
	}
	if h.Version != 2 || h.Width != 120 || h.Height != 40 || h.Timestamp != t0.Unix() || !strings.Contains(h.Title, s.hdr.Session) {
		t.Errorf("header %+v", h)
	}

	var out strings.Builder
	var times []float64
	for sc.Scan() {
		var ev []any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("event line %q: %v", sc.Bytes(), err)
		}
		at, _ := ev[0].(float64)
		text, _ := ev[2].(string)
		if ev[1] != "o" {
			t.Errorf("event type %v, want o", ev[1])
		}
		if len(times) > 0 && at < times[len(times)-1] {
			t.Errorf("time goes back: %v after %v", at, times[len(times)-1])
		}
		if strings.Contains(strings.ReplaceAll(text, "\r\n", ""), "\n") {
			t.Errorf("bare newline in %q; a terminal needs \\r\\n", text)
		}
		times = append(times, at)
		out.WriteString(strings.ReplaceAll(text, "\r\n", "\n"))
	}
	if out.String() != wantTranscript {
		t.Errorf("asciicast output:\n%s\nwant the transcript:\n%s", out.String(), wantTranscript)
	}
	if want := []float64{0, 0.01, 0.01, 0.7, 0.95, 4, 4.0001, 9}; !slices.Equal(times, want) {
		t.Errorf("times %v, want %v", times, want)
	}
}

func TestReplay(t *testing.T) {
	s := newSession(t)
	for _, speed := range []float64{1e9, math.Inf(1)} {
		var buf bytes.Buffer
		start := time.Now()
		if err := Replay(context.Background(), &buf, s.events, speed); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("speed %v took %v", speed, d)
		}
		if buf.String() != wantTranscript {
			t.Errorf("speed %v replayed:\n%s\nwant the transcript:\n%s", speed, buf.String(), wantTranscript)
		}
	}
}

func TestReplayPacing(t *testing.T) {
	// Two lines a minute apart at speed 10: the gap is cut to
	// MaxReplayGap, then divided by 10.
	events := []record.Event{
		{Time: t0, Type: record.TypeNote, Reason: "one"},
		{Time: t0.Add(time.Minute), Type: record.TypeNote, Reason: "two"},
	}
	start := time.Now()
	if err := Replay(context.Background(), new(bytes.Buffer), events, 10); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	if want := MaxReplayGap / 10; d < want || d > 3*time.Second {
		t.Errorf("replay took %v; want about %v (not the 6s an uncut gap takes)", d, want)
	}

	// Cancelling stops a replay in the middle of a gap.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	var buf bytes.Buffer
	start = time.Now()
	if err := Replay(ctx, &buf, events, 0.001); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Replay = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancelled Replay returned after %v", d)
	}
	if buf.String() != "-- note: one\n" {
		t.Errorf("cancelled Replay wrote %q, want only the first line", buf.String())
	}
}
