package export

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/enforcer/record"
)

// MaxReplayGap is the longest pause Replay makes between two lines at
// speed 1: a recorded gap longer than this (a job that sat idle) is cut to
// it, then divided by the speed like every other gap.
const MaxReplayGap = 2 * time.Second

// chunk is the rendering of one event: text ending in "\n", and when the
// event happened.
type chunk struct {
	at   time.Time
	text string
}

// Transcript writes the session as plain text: the rendering described in
// the package documentation, without timing.
func Transcript(w io.Writer, events []record.Event) error {
	for _, c := range render(events) {
		if _, err := io.WriteString(w, c.text); err != nil {
			return fmt.Errorf("write transcript: %w", err)
		}
	}
	return nil
}

// Replay writes the transcript to w paced by the recorded timing: before
// each event's lines it waits for the time that passed since the previous
// one, cut to MaxReplayGap and divided by speed. Speed 2 plays twice as
// fast; speed 0 or less means 1, and math.Inf(1) writes everything at once.
// It blocks until the whole transcript is written and returns nil, or until
// ctx is done and returns ctx.Err(). What it writes in full equals
// Transcript's output, except for an SSH session.
//
// An SSH session is played as its terminal instead: the output events of
// WriteAsciicast, raw, paced the same way, as asciinema play would show
// them. The terminal's bytes are the host's, escape sequences included,
// and reach w unchanged; Transcript is the escaped form.
func Replay(ctx context.Context, w io.Writer, events []record.Event, speed float64) error {
	if speed <= 0 || math.IsNaN(speed) {
		speed = 1
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	chunks := render(events)
	switch {
	case isSSH(events):
		chunks = sshTerminal(events).output()
	case isK8s(events):
		chunks = k8sTerminal(events).output()
	}
	var prev time.Time
	for i, c := range chunks {
		if i > 0 {
			gap := min(c.at.Sub(prev), MaxReplayGap)
			if d := time.Duration(float64(gap) / speed); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-timer.C:
				}
			}
		}
		if c.at.After(prev) {
			prev = c.at
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := io.WriteString(w, c.text); err != nil {
			return fmt.Errorf("write replay: %w", err)
		}
	}
	return nil
}

// render turns the events a person reads into lines. Wire bytes and
// integrity events render as nothing.
func render(events []record.Event) []chunk {
	if isSSH(events) || isK8s(events) {
		// A Kubernetes session's exec and attach streams are recorded
		// as an SSH channel's are, and read the same way.
		return renderSSH(events)
	}
	var out []chunk
	for i := range events {
		e := &events[i]
		var b strings.Builder
		switch e.Type {
		case record.TypeSessionStart:
			writeSessionStart(&b, e)
		case record.TypeStatement:
			writeStatement(&b, e)
			writeVerdict(&b, e)
		case record.TypeResult:
			b.WriteString("   (" + outcome(e) + ")\n")
		case record.TypeError:
			writeError(&b, e)
		case record.TypeNote:
			writeNote(&b, e)
			b.WriteString("\n")
		case record.TypeSessionEnd:
			b.WriteString("-- session ended")
			if e.Reason != "" {
				b.WriteString(": " + safe(e.Reason))
			}
			if s := outcome(e); s != "" {
				b.WriteString(" (" + s + ")")
			}
			b.WriteString("\n")
		}
		if b.Len() > 0 {
			out = append(out, chunk{at: e.Time, text: b.String()})
		}
	}
	return out
}

// writeSessionStart writes "-- session started TIME k=v ..." and the
// connection's verdict when it was not allowed.
func writeSessionStart(b *strings.Builder, e *record.Event) {
	b.WriteString("-- session started " + e.Time.UTC().Format(time.RFC3339Nano))
	writeFields(b, e.Fields)
	b.WriteString("\n")
	if e.Verdict != "" && e.Verdict != "allow" {
		writeVerdict(b, e)
	}
}

// writeFields writes " k=v" for each field, in key order.
func writeFields(b *strings.Builder, fields map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		b.WriteString(" " + safe(k) + "=" + quoteField(fields[k]))
	}
}

// writeError writes "!! ERROR CODE: message".
func writeError(b *strings.Builder, e *record.Event) {
	b.WriteString("!! ERROR")
	if e.ErrCode != "" {
		b.WriteString(" " + safe(e.ErrCode))
	}
	msg := e.Text
	if msg == "" {
		msg = e.Reason
	}
	if msg != "" {
		b.WriteString(": " + indent(safe(msg), "   "))
	}
	b.WriteString("\n")
}

// writeNote writes "-- note: reason text (rule ID)", without the line's
// end.
func writeNote(b *strings.Builder, e *record.Event) {
	b.WriteString("-- note:")
	for _, s := range []string{e.Reason, e.Text} {
		if s != "" {
			b.WriteString(" " + indent(safe(s), "   "))
		}
	}
	if e.Rule != "" {
		b.WriteString(" (rule " + safe(e.Rule) + ")")
	}
}

func writeStatement(b *strings.Builder, e *record.Event) {
	switch {
	case e.Text != "":
		b.WriteString("=> " + indent(safe(strings.TrimSpace(e.Text)), "   ") + "\n")
		if e.TextBytes > 0 {
			fmt.Fprintf(b, "   ... (statement cut; %d bytes in all)\n", e.TextBytes)
		}
	case e.Kind != "":
		b.WriteString("=> (" + safe(e.Kind) + " statement; text not recorded)\n")
	default:
		b.WriteString("=> (statement; text not recorded)\n")
	}
}

// writeVerdict writes "   [verdict] rule ID: reason".
func writeVerdict(b *strings.Builder, e *record.Event) {
	if e.Verdict == "" && e.Rule == "" && e.Reason == "" {
		return
	}
	v := e.Verdict
	if v == "" {
		v = "?"
	}
	b.WriteString("   [" + safe(v) + "]")
	if e.Rule != "" {
		b.WriteString(" rule " + safe(e.Rule))
	}
	if e.Reason != "" {
		b.WriteString(": " + indent(safe(e.Reason), "   "))
	}
	b.WriteString("\n")
}

// outcome is "1 row, 12 bytes, 0.412 ms" or "failed: SQLSTATE 42P01, ...".
func outcome(e *record.Event) string {
	var parts []string
	if e.ErrCode != "" {
		parts = append(parts, "failed: SQLSTATE "+safe(e.ErrCode))
	}
	if e.Rows != 0 || (e.ErrCode == "" && e.Type == record.TypeResult) {
		unit := "rows"
		if e.Rows == 1 {
			unit = "row"
		}
		parts = append(parts, strconv.FormatInt(e.Rows, 10)+" "+unit)
	}
	if e.Bytes != 0 {
		parts = append(parts, strconv.FormatInt(e.Bytes, 10)+" bytes")
	}
	if e.DurationUS != 0 {
		parts = append(parts, formatDuration(e.DurationUS))
	}
	return strings.Join(parts, ", ")
}

func formatDuration(us int64) string {
	if us < 1000_000 {
		return strconv.FormatFloat(float64(us)/1000, 'f', 3, 64) + " ms"
	}
	return (time.Duration(us) * time.Microsecond).Round(time.Millisecond).String()
}

// indent puts prefix before every line of s but the first.
func indent(s, prefix string) string {
	return strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// quoteField quotes a field value when it is empty or has spaces.
func quoteField(v string) string {
	if v == "" || strings.ContainsAny(v, " \t\n\"") {
		return strconv.Quote(v)
	}
	return safe(v)
}

// safe makes text from a client or server safe to print on a terminal:
// "\r\n" becomes "\n", tabs and newlines stay, every other C0 or C1 control
// character and DEL is escaped as \xNN or \uNNNN, and invalid UTF-8 becomes
// U+FFFD.
func safe(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || (isControl(r) && r != '\n' && r != '\t') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x80 && isControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case isControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r) // RuneError for invalid bytes
		}
	}
	return b.String()
}

func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r < 0xa0) }
