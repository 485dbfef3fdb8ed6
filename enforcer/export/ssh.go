package export

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/enforcer/record"
)

// SSH sessions (the session_start event's protocol field is "ssh") are
// recorded as requests (statement events whose Kind is an ssh request kind
// or "sftp"), the outcome of each channel (result events whose ErrCode is
// "exit N" or "signal NAME", empty for status 0), notes for a terminal's
// size (pty-req, window-change), and at the full level the channels'
// decrypted bytes: wire events whose Fields name the channel and the
// stream (stdin, stdout, stderr, or tty both ways for a terminal).

// isSSH reports whether events are an SSH session's.
func isSSH(events []record.Event) bool {
	for i := range events {
		if events[i].Type == record.TypeSessionStart {
			return events[i].Fields["protocol"] == "ssh"
		}
	}
	return false
}

// sshOutcome is "exit 7, 120 bytes, 3.200 ms" for a channel's result.
func sshOutcome(e *record.Event) string {
	var parts []string
	switch {
	case e.ErrCode != "":
		parts = append(parts, safe(e.ErrCode))
	case e.Kind != "sftp" && e.Kind != "direct_tcpip":
		parts = append(parts, "exit 0")
	}
	if e.Bytes != 0 {
		parts = append(parts, strconv.FormatInt(e.Bytes, 10)+" bytes")
	}
	if e.DurationUS != 0 {
		parts = append(parts, formatDuration(e.DurationUS))
	}
	return strings.Join(parts, ", ")
}

// streamKey names one direction of one channel's stream.
type streamKey struct{ channel, stream, dir string }

// utf8Carry keeps each stream's incomplete UTF-8 sequence at the end of a
// wire event for the next one, so that a character split across events
// is not turned into two replacement characters.
type utf8Carry map[streamKey][]byte

// text returns b, after what was carried for k, as a string up to its
// last complete character; the rest is carried.
func (c utf8Carry) text(k streamKey, b []byte) string {
	buf := append(c[k], b...)
	cut := len(buf)
	// An incomplete sequence can only be in the last 3 bytes.
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-3; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	c[k] = append([]byte(nil), buf[cut:]...)
	return string(buf[:cut])
}

// rest returns what is still carried for k.
func (c utf8Carry) rest(k streamKey) string {
	s := string(c[k])
	delete(c, k)
	return s
}

// sshOutput renders an SSH session's channel output for a transcript:
// what the job saw on stdout, stderr and its terminal, each line indented
// and made safe to print. Input is left out (a terminal echoes what was
// typed; a command's stdin can be a whole file).
type sshOutput struct {
	carry utf8Carry
	// midLine is set for a stream whose last rendered byte was not a
	// newline.
	midLine map[streamKey]bool
}

func (o *sshOutput) render(b *strings.Builder, e *record.Event) {
	if e.Dir != record.DirServerToClient || e.Fields["stream"] == "" || e.Fields["stream"] == "data" {
		return
	}
	if o.carry == nil {
		o.carry, o.midLine = utf8Carry{}, map[streamKey]bool{}
	}
	k := streamKey{e.Fields["channel"], e.Fields["stream"], e.Dir}
	s := safe(strings.ReplaceAll(o.carry.text(k, e.Data), "\r", ""))
	for s != "" {
		if !o.midLine[k] {
			b.WriteString("   | ")
		}
		line, rest, nl := strings.Cut(s, "\n")
		b.WriteString(line)
		if nl {
			b.WriteString("\n")
		}
		o.midLine[k] = !nl
		s = rest
	}
}

// endLines ends every stream's unfinished line, before a line of
// Sluice's own.
func (o *sshOutput) endLines(b *strings.Builder) {
	ended := false
	for k, mid := range o.midLine {
		if mid && !ended {
			b.WriteString("\n")
			ended = true
		}
		o.midLine[k] = false
	}
}

// writeSSHAsciicast writes an SSH session as an asciicast v2 recording.
// The first channel with a terminal sets the size (its pty-req) and
// TERM; a terminal's output is an "o" event and what was typed an "i"
// event, byte for byte; a window change is an "r" event. A command
// without a terminal shows as a prompt line with its command, then its
// stdout and stderr as "o" events (lone newlines made "\r\n", as a
// terminal needs), then its exit status when not 0. Refusals and SFTP
// operations show as lines.
func writeSSHAsciicast(w io.Writer, hdr record.Header, events []record.Event, width, height int) error {
	term := ""
	for i := range events {
		e := &events[i]
		if e.Type == record.TypeNote && e.Reason == "pty-req" {
			if width <= 0 {
				width, _ = strconv.Atoi(e.Fields["cols"])
			}
			if height <= 0 {
				height, _ = strconv.Atoi(e.Fields["rows"])
			}
			term = e.Fields["term"]
			break
		}
	}
	if width <= 0 {
		width = DefaultWidth
	}
	if height <= 0 {
		height = DefaultHeight
	}
	h := struct {
		asciicastHeader
		Env map[string]string `json:"env,omitempty"`
	}{asciicastHeader: asciicastHeader{Version: 2, Width: width, Height: height, Title: "sluice session " + hdr.Session}}
	if term != "" {
		h.Env = map[string]string{"TERM": term}
	}
	start := hdr.Start
	if start.IsZero() && len(events) > 0 {
		start = events[0].Time
	}
	if !start.IsZero() {
		h.Timestamp = start.Unix()
	}
	bw := bufio.NewWriter(w)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(h); err != nil {
		return fmt.Errorf("write asciicast header: %w", err)
	}
	bw.Write(buf.Bytes())
	var last time.Duration
	emit := func(at time.Time, code, data string) error {
		if data == "" {
			return nil
		}
		if d := at.Sub(start); d > last {
			last = d
		}
		buf.Reset()
		buf.WriteString("[" + strconv.FormatFloat(last.Seconds(), 'f', 6, 64) + `, "` + code + `", `)
		if err := enc.Encode(data); err != nil {
			return fmt.Errorf("write asciicast event: %w", err)
		}
		buf.Truncate(buf.Len() - 1)
		buf.WriteString("]\n")
		bw.Write(buf.Bytes())
		return nil
	}
	carry := utf8Carry{}
	crlf := strings.NewReplacer("\r\n", "\r\n", "\n", "\r\n")
	for i := range events {
		e := &events[i]
		var err error
		switch e.Type {
		case record.TypeStatement:
			switch {
			case e.Verdict == "deny" || e.Verdict == "hold":
				err = emit(e.Time, "o", crlf.Replace(fmt.Sprintf("sluice: %s %s by rule %s: %s\n", e.Text, deniedWord(e.Verdict), e.Rule, e.Reason)))
			case e.Kind == "exec":
				err = emit(e.Time, "o", crlf.Replace("$ "+e.Text+"\n"))
			case e.Kind == "sftp" || e.Kind == "subsystem" || e.Kind == "direct_tcpip" || e.Kind == "tcpip_forward":
				err = emit(e.Time, "o", crlf.Replace("-- "+e.Text+"\n"))
			}
		case record.TypeResult:
			if e.ErrCode != "" && e.Kind != "sftp" {
				err = emit(e.Time, "o", "["+e.ErrCode+"]\r\n")
			}
		case record.TypeNote:
			if e.Reason == "window-change" {
				err = emit(e.Time, "r", e.Fields["cols"]+"x"+e.Fields["rows"])
			}
		case record.TypeWire:
			st := e.Fields["stream"]
			k := streamKey{e.Fields["channel"], st, e.Dir}
			switch {
			case st == "tty" && e.Dir == record.DirServerToClient:
				err = emit(e.Time, "o", carry.text(k, e.Data))
			case st == "tty":
				err = emit(e.Time, "i", carry.text(k, e.Data))
			case (st == "stdout" || st == "stderr") && e.Dir == record.DirServerToClient:
				err = emit(e.Time, "o", crlf.Replace(carry.text(k, e.Data)))
			}
		}
		if err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write asciicast: %w", err)
	}
	return nil
}

func deniedWord(verdict string) string {
	if verdict == "hold" {
		return "held"
	}
	return "denied"
}
