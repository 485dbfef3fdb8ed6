package export

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/enforcer/record"
)

// MaxShownOutput is the most of one stream of one channel (a terminal's
// output, a command's stdout or its stderr) that an SSH transcript
// shows, in recorded bytes; past it the transcript says how much more
// there was. JSON lines hold all of it.
const MaxShownOutput = 256 << 10

// renderSSH renders an SSH session for Transcript and show: the
// package documentation's lines, where requests are "=> TEXT" with their
// verdict, the output of channels (at level full) is "   | " lines for a
// terminal's output or a command's stdout and "   ! " lines for stderr,
// and each channel ends in "   (exit N, BYTES bytes, DURATION)". Output
// and results that do not follow their own request are introduced by
// "<= TEXT (channel N)". Notes show their fields.
func renderSSH(events []record.Event) []chunk {
	r := &sshRender{x: indexSSH(events), events: events, lines: map[streamKey]*lineBuf{}, context: "-"}
	var out []chunk
	for i := range events {
		e := &events[i]
		var b strings.Builder
		switch e.Type {
		case record.TypeSessionStart:
			r.flushAll(&b)
			writeSessionStart(&b, e)
		case record.TypeStatement:
			r.flushAll(&b)
			b.WriteString("=> " + indent(safe(strings.TrimSpace(requestText(e))), "   ") + "\n")
			if e.TextBytes > 0 {
				fmt.Fprintf(&b, "   ... (request cut; %d bytes in all)\n", e.TextBytes)
			}
			writeVerdict(&b, e)
			r.context = "#" + strconv.Itoa(i)
			if ch, ok := r.x.channel[i]; ok {
				r.context = ch
			}
		case record.TypeResult:
			ch := r.x.resultChannel(i)
			r.flushAll(&b)
			switch j, ok := r.x.result[i]; {
			case ch != "":
				r.label(&b, ch)
			case ok && r.context != "#"+strconv.Itoa(j):
				b.WriteString("<= " + firstLine(requestText(&events[j])) + "\n")
			}
			b.WriteString("   (" + sshOutcome(e) + ")\n")
			r.context = "-"
		case record.TypeError:
			r.flushAll(&b)
			writeError(&b, e)
		case record.TypeNote:
			// A note does not end the lines it comes between.
			writeNote(&b, e)
			writeFields(&b, e.Fields)
			b.WriteString("\n")
		case record.TypeWire:
			r.wire(&b, e)
		case record.TypeSessionEnd:
			r.flushAll(&b)
			b.WriteString("-- session ended")
			if e.Reason != "" {
				b.WriteString(": " + safe(e.Reason))
			}
			if s := sshOutcome(e); s != "" {
				b.WriteString(" (" + s + ")")
			}
			b.WriteString("\n")
		}
		if b.Len() > 0 {
			out = append(out, chunk{at: e.Time, text: b.String()})
		}
	}
	var b strings.Builder
	r.flushAll(&b)
	if b.Len() > 0 && len(events) > 0 {
		out = append(out, chunk{at: events[len(events)-1].Time, text: b.String()})
	}
	return out
}

// sshRender is renderSSH's state.
type sshRender struct {
	x      *sshIndex
	events []record.Event
	// lines are the output streams, keys in order of first use.
	lines map[streamKey]*lineBuf
	keys  []streamKey
	// context is what the lines last written belong to: a channel, "#I"
	// for the request at event I whose channel is not known, or "-".
	context string
}

// label introduces channel ch's output or result unless the lines just
// written were its own.
func (r *sshRender) label(b *strings.Builder, ch string) {
	if r.context == ch {
		return
	}
	r.context = ch
	if i, ok := r.x.request[ch]; ok {
		b.WriteString("<= " + firstLine(requestText(&r.events[i])) + " (channel " + safe(ch) + ")\n")
		return
	}
	b.WriteString("<= channel " + safe(ch) + "\n")
}

// firstLine is s's first line, escaped, with "..." when there is more.
func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if l, _, more := strings.Cut(s, "\n"); more {
		s = l + " ..."
	}
	return safe(s)
}

// wire renders a channel's output: complete lines as they end.
func (r *sshRender) wire(b *strings.Builder, e *record.Event) {
	st := e.Fields["stream"]
	if e.Dir != record.DirServerToClient || (st != streamStdout && st != streamStderr && st != streamTTY) {
		// What the job sent is left out: a terminal echoes what was
		// typed (and not what was typed at a password prompt), and a
		// command's stdin can be a whole file.
		return
	}
	k := streamKey{e.Fields["channel"], st, e.Dir}
	l := r.lines[k]
	if l == nil {
		l = &lineBuf{}
		r.lines[k] = l
		r.keys = append(r.keys, k)
	}
	lines := l.write(e.Data)
	if len(lines) == 0 {
		return
	}
	// Another stream's unfinished line came first.
	for _, o := range r.keys {
		if o != k {
			r.flush(b, o)
		}
	}
	r.writeLines(b, k, lines)
}

func (r *sshRender) writeLines(b *strings.Builder, k streamKey, lines []string) {
	if len(lines) == 0 {
		return
	}
	r.label(b, k.channel)
	prefix := "   | "
	if k.stream == streamStderr {
		prefix = "   ! "
	}
	for _, s := range lines {
		b.WriteString(strings.TrimRight(prefix+s, " ") + "\n")
	}
}

// flush writes k's unfinished line and what was not shown.
func (r *sshRender) flush(b *strings.Builder, k streamKey) {
	r.writeLines(b, k, r.lines[k].flush())
}

func (r *sshRender) flushAll(b *strings.Builder) {
	for _, k := range r.keys {
		r.flush(b, k)
	}
}

// lineBuf turns one output stream into the lines a terminal would show,
// escaped: a small line editor that applies carriage returns,
// backspaces and the escape sequences that move along or erase the line
// (which readline and progress bars use), drops the other escape
// sequences (colours, titles, cursor addressing), and escapes what
// control characters are left as the transcript's text is escaped.
type lineBuf struct {
	u    utf8Text
	line []rune
	col  int
	esc  escState
	// param is the parameter bytes of a CSI sequence so far.
	param []byte
	// shown counts the bytes written to the transcript; hidden those
	// past MaxShownOutput.
	shown, hidden int64
}

type escState uint8

const (
	escNone    escState = iota
	escStart            // after ESC
	escCSI              // ESC [ ...
	escString           // OSC, DCS, SOS, PM, APC: up to BEL or ST
	escStrESC           // ESC inside a string: ST is ESC \
	escCharset          // ESC ( and the like: one more character
)

// write adds b and returns the lines it completed.
func (l *lineBuf) write(b []byte) []string {
	if l.shown >= MaxShownOutput {
		l.hidden += int64(len(b))
		return nil
	}
	if n := MaxShownOutput - l.shown; int64(len(b)) > n {
		l.hidden += int64(len(b)) - n
		b = b[:n]
	}
	l.shown += int64(len(b))
	var lines []string
	for _, c := range l.u.text(b) {
		if s, ok := l.rune(c); ok {
			lines = append(lines, s)
		}
	}
	return lines
}

// flush returns the unfinished line and a line saying how much was not
// shown, and starts afresh.
func (l *lineBuf) flush() []string {
	var lines []string
	for _, c := range l.u.flush() {
		l.rune(c)
	}
	if len(l.line) > 0 {
		lines = append(lines, string(l.line))
	}
	if l.hidden > 0 {
		lines = append(lines, fmt.Sprintf("... (%d more bytes not shown)", l.hidden))
		l.hidden = 0
	}
	l.line, l.col, l.esc, l.param = l.line[:0], 0, escNone, l.param[:0]
	return lines
}

// rune adds one character, returning the line when it ends one.
func (l *lineBuf) rune(c rune) (string, bool) {
	switch l.esc {
	case escStart:
		switch c {
		case '[':
			l.esc, l.param = escCSI, l.param[:0]
		case ']', 'P', 'X', '^', '_':
			l.esc = escString
		case '(', ')', '*', '+', '-', '.', '/', '#', '%', ' ':
			l.esc = escCharset
		default:
			l.esc = escNone // a two-character sequence (ESC 7, ESC M ...)
		}
		return "", false
	case escCSI:
		switch {
		case c >= 0x20 && c <= 0x3f:
			if len(l.param) < 32 {
				l.param = append(l.param, byte(c))
			}
		case c >= 0x40 && c <= 0x7e:
			l.esc = escNone
			l.csi(byte(c))
		default:
			l.esc = escNone // malformed: dropped
		}
		return "", false
	case escString:
		switch c {
		case 0x07:
			l.esc = escNone
		case 0x1b:
			l.esc = escStrESC
		}
		return "", false
	case escStrESC:
		l.esc = escString
		if c == '\\' {
			l.esc = escNone
		}
		return "", false
	case escCharset:
		l.esc = escNone
		return "", false
	}
	switch {
	case c == 0x1b:
		l.esc = escStart
	case c == '\n':
		s := string(l.line)
		l.line, l.col = l.line[:0], 0
		return s, true
	case c == '\r':
		l.col = 0
	case c == '\b':
		if l.col > 0 {
			l.col--
		}
	case c == 0x07:
		// The bell shows nothing.
	case c == '\t':
		l.put('\t')
	case isControl(c):
		for _, x := range controlEscape(c) {
			l.put(x)
		}
	default:
		l.put(c) // U+FFFD for invalid bytes
	}
	return "", false
}

// controlEscape is \xNN or \uNNNN for a control character, as safe
// writes it.
func controlEscape(c rune) string {
	if c < 0x80 {
		return fmt.Sprintf(`\x%02x`, c)
	}
	return fmt.Sprintf(`\u%04x`, c)
}

// put writes c at the cursor, over what is there.
func (l *lineBuf) put(c rune) {
	for len(l.line) < l.col {
		l.line = append(l.line, ' ')
	}
	if l.col < len(l.line) {
		l.line[l.col] = c
	} else {
		l.line = append(l.line, c)
	}
	l.col++
}

// maxCol bounds the cursor moves a sequence can make.
const maxCol = 1024

// csi applies a CSI sequence that moves along or edits the line; the
// others (colours, cursor addressing, screen erases) are dropped.
func (l *lineBuf) csi(final byte) {
	n, err := strconv.Atoi(string(l.param))
	if err != nil || n < 0 {
		n = 0
	}
	n1 := min(max(n, 1), maxCol) // a count: 0 or absent means 1
	switch final {
	case 'C': // cursor forward
		l.col = min(l.col+n1, maxCol)
	case 'D': // cursor back
		l.col = max(l.col-n1, 0)
	case 'G': // cursor to column
		l.col = n1 - 1
	case 'K': // erase in line
		switch n {
		case 0:
			if l.col < len(l.line) {
				l.line = l.line[:l.col]
			}
		case 1:
			for i := 0; i < l.col && i < len(l.line); i++ {
				l.line[i] = ' '
			}
		case 2:
			l.line = l.line[:0]
		}
	case 'P': // delete characters
		if l.col < len(l.line) {
			end := min(l.col+n1, len(l.line))
			l.line = append(l.line[:l.col], l.line[end:]...)
		}
	case '@': // insert blanks
		if l.col < len(l.line) {
			blanks := []rune(strings.Repeat(" ", n1))
			l.line = append(l.line[:l.col], append(blanks, l.line[l.col:]...)...)
		}
	}
}
