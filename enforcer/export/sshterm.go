package export

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// termEvent is one event of an SSH session played as a terminal, in
// asciicast v2's terms: code "o" is output, "i" input (what was typed),
// "r" a resize to "COLSxROWS". data is valid UTF-8.
type termEvent struct {
	at   time.Time
	code string
	data string
}

// sshTerm is an SSH session as one terminal.
type sshTerm struct {
	// cols, rows and term are the first terminal's size and type, from
	// its pty-req; zero and "" when no channel asked for a terminal.
	cols, rows int
	term       string
	events     []termEvent
}

// streamKey names one direction of one channel's stream.
type streamKey struct{ channel, stream, dir string }

// utf8Text decodes a byte stream that arrives in pieces into valid
// UTF-8: a character split across two pieces is kept whole, and every
// byte that is not part of a valid character becomes U+FFFD.
type utf8Text struct{ carry []byte }

// text returns b, after what was carried, up to its last complete
// character, and carries the rest (at most 3 bytes).
func (u *utf8Text) text(b []byte) string {
	buf := b
	if len(u.carry) > 0 {
		buf = append(u.carry, b...)
	}
	cut := len(buf)
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-(utf8.UTFMax-1); i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	u.carry = append(u.carry[:0:0], buf[cut:]...)
	return validUTF8(buf[:cut])
}

// flush returns what is still carried, an incomplete character, as
// U+FFFD for each byte.
func (u *utf8Text) flush() string {
	s := validUTF8(u.carry)
	u.carry = nil
	return s
}

// validUTF8 is b as a string with each invalid byte replaced by U+FFFD.
func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var s strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		s.WriteRune(r) // RuneError for an invalid byte
		b = b[n:]
	}
	return s.String()
}

// sshTerminal plays an SSH session as one terminal, the form of
// WriteAsciicast and Replay:
//
//   - a channel with a terminal is its bytes as they were: what the
//     terminal showed ("o") and what was typed ("i");
//   - a command without one is a prompt line "$ COMMAND", then its stdout
//     and stderr as they came, each newline made "\r\n" (without a
//     terminal nothing turned "\n" into "\r\n"), then "[exit N]" or
//     "[signal NAME]" when it did not exit with status 0;
//   - a refused request is the line "sluice: TEXT denied by rule ID:
//     REASON" (a held one "... held for approval by rule ...", and its
//     outcome a line of its own);
//   - other requests (a shell without a terminal, a subsystem, each SFTP
//     operation, forwards, agent and X11) are a line "-- TEXT", and an
//     SFTP operation that failed on the host "-- TEXT: failed: WHY";
//   - a terminal's window change, or a second terminal of another size,
//     is a resize ("r").
//
// Lines Sluice writes start on a line of their own and are escaped like
// the transcript's text; the channels' bytes are not. Events of several
// channels are in recording order, so concurrent channels interleave.
func sshTerminal(events []record.Event) *sshTerm {
	x := indexSSH(events)
	t := &sshTerm{}
	p := &termPlay{t: t, x: x, events: events, col0: true, text: map[streamKey]*utf8Text{}, cr: map[streamKey]bool{}}
	for i := range events {
		e := &events[i]
		if e.Type == record.TypeNote && e.Reason == "pty-req" {
			t.cols, _ = strconv.Atoi(e.Fields["cols"])
			t.rows, _ = strconv.Atoi(e.Fields["rows"])
			t.term = e.Fields["term"]
			p.cols, p.rows = t.cols, t.rows
			break
		}
	}
	for i := range events {
		p.event(i)
	}
	if len(events) > 0 {
		p.flush(events[len(events)-1].Time, "")
	}
	return t
}

// termPlay is sshTerminal's state.
type termPlay struct {
	t      *sshTerm
	x      *sshIndex
	events []record.Event
	// col0 is set while the terminal's cursor is at the start of a line
	// (as far as the output so far tells).
	col0 bool
	// text decodes each stream; keys in order of first use.
	text map[streamKey]*utf8Text
	keys []streamKey
	// cr is set for a stream without a terminal whose last byte was
	// "\r".
	cr         map[streamKey]bool
	cols, rows int
}

func (p *termPlay) emit(at time.Time, code, data string) {
	if data == "" {
		return
	}
	p.t.events = append(p.t.events, termEvent{at: at, code: code, data: data})
	if code == "o" {
		p.col0 = strings.HasSuffix(data, "\n")
	}
}

// line writes a line of Sluice's, escaped, on a line of its own.
func (p *termPlay) line(at time.Time, s string) {
	s = strings.ReplaceAll(safe(s), "\n", "\r\n") + "\r\n"
	if !p.col0 {
		s = "\r\n" + s
	}
	p.emit(at, "o", s)
}

// stream returns k's decoder.
func (p *termPlay) stream(k streamKey) *utf8Text {
	u := p.text[k]
	if u == nil {
		u = &utf8Text{}
		p.text[k] = u
		p.keys = append(p.keys, k)
	}
	return u
}

// flush writes what the streams of channel ch (every channel when "")
// still carry: an incomplete character at their end.
func (p *termPlay) flush(at time.Time, ch string) {
	for _, k := range p.keys {
		if ch != "" && k.channel != ch {
			continue
		}
		code := "o"
		if k.dir == record.DirClientToServer {
			code = "i"
		}
		p.emit(at, code, p.text[k].flush())
	}
}

// resize emits an "r" event when cols x rows is a new size.
func (p *termPlay) resize(at time.Time, cols, rows string) {
	c, err1 := strconv.Atoi(cols)
	r, err2 := strconv.Atoi(rows)
	if err1 != nil || err2 != nil || c <= 0 || r <= 0 || (c == p.cols && r == p.rows) {
		return
	}
	p.cols, p.rows = c, r
	p.emit(at, "r", strconv.Itoa(c)+"x"+strconv.Itoa(r))
}

func (p *termPlay) event(i int) {
	e := &p.events[i]
	switch e.Type {
	case record.TypeStatement:
		text := requestText(e)
		switch {
		case e.Verdict == "deny":
			p.line(e.Time, "sluice: "+text+" denied by rule "+e.Rule+": "+e.Reason)
		case e.Verdict == "hold":
			p.line(e.Time, "sluice: "+text+" held for approval by rule "+e.Rule+": "+e.Reason)
		case e.Kind == ruleset.SSHExec:
			p.line(e.Time, "$ "+text)
		case e.Kind == ruleset.SSHShell && p.x.pty[p.x.channel[i]]:
			// The terminal shows the shell's own prompt.
		default:
			p.line(e.Time, "-- "+text)
		}
	case record.TypeNote:
		switch {
		case e.Reason == "pty-req" || e.Reason == "window-change":
			p.resize(e.Time, e.Fields["cols"], e.Fields["rows"])
		case strings.HasPrefix(e.Reason, "hold (") && e.Verdict == "deny":
			p.line(e.Time, "sluice: refused by rule "+e.Rule+": "+e.Reason)
		case strings.HasPrefix(e.Reason, "hold ("):
			p.line(e.Time, "sluice: approved: "+e.Reason)
		}
	case record.TypeResult:
		ch := p.x.resultChannel(i)
		switch {
		case ch != "" || startsChannel(e.Kind):
			p.flush(e.Time, ch)
			if e.ErrCode != "" && startsChannel(e.Kind) {
				p.line(e.Time, "["+e.ErrCode+"]")
			}
		case e.Kind == ruleset.KindSFTP && e.ErrCode != "":
			what := "sftp operation"
			if j, ok := p.x.result[i]; ok {
				what = requestText(&p.events[j])
			}
			p.line(e.Time, "-- "+what+": failed: "+sftpFailure(e.ErrCode))
		}
	case record.TypeWire:
		st := e.Fields["stream"]
		k := streamKey{e.Fields["channel"], st, e.Dir}
		switch {
		case st == streamTTY && e.Dir == record.DirServerToClient:
			p.emit(e.Time, "o", p.stream(k).text(e.Data))
		case st == streamTTY && e.Dir == record.DirClientToServer:
			p.emit(e.Time, "i", p.stream(k).text(e.Data))
		case (st == streamStdout || st == streamStderr) && e.Dir == record.DirServerToClient:
			s := p.stream(k).text(e.Data)
			if s == "" {
				return
			}
			// "\n" becomes "\r\n" unless a "\r" came just before it,
			// in this event or at the end of the last.
			var b strings.Builder
			prevCR := p.cr[k]
			for j := 0; j < len(s); j++ {
				if s[j] == '\n' && !prevCR {
					b.WriteByte('\r')
				}
				b.WriteByte(s[j])
				prevCR = s[j] == '\r'
			}
			p.cr[k] = prevCR
			p.emit(e.Time, "o", b.String())
		}
	case record.TypeSessionEnd:
		p.flush(e.Time, "")
	}
}

// output returns the terminal's output events as transcript chunks, for
// Replay.
func (t *sshTerm) output() []chunk {
	var out []chunk
	for _, e := range t.events {
		if e.code == "o" {
			out = append(out, chunk{at: e.at, text: e.data})
		}
	}
	return out
}
