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

	"github.com/sluicehq/sluice/enforcer/record"
)

// Default terminal size of WriteAsciicast.
const (
	DefaultWidth  = 80
	DefaultHeight = 24
)

// asciicastHeader is the first line of an asciicast v2 file.
type asciicastHeader struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// WriteAsciicast writes the session as an asciicast v2 recording
// (https://docs.asciinema.org/manual/asciicast/v2/): a header line, then
// one [time, code, data] event per line, with time in seconds since
// hdr.Start (or since the first event when hdr.Start is zero). Times never
// decrease; an event earlier than the one before it is given the previous
// time. width and height are the terminal size; 0 or less means the
// session's own, else DefaultWidth and DefaultHeight.
//
// An SSH session is written as the terminal the job saw: a channel's
// terminal output as "o" events and what was typed as "i" events, byte
// for byte (a UTF-8 character split across recorded pieces kept whole,
// invalid bytes as U+FFFD), in the size and TERM of the first terminal's
// pty-req, with "r" events for window changes; commands without a
// terminal as a prompt line, their output and their exit status;
// refusals and SFTP operations as lines (see the package documentation).
// A Kubernetes session is played the same way: an exec's terminal, or
// its command line, stdout, stderr and exit, in the size of its first
// window change, and the session's other API requests as lines.
//
// Any other session is its transcript typed out in recorded time: one
// "o" event per rendered event, lines ending in "\r\n" as a terminal
// expects, not wrapped to the width.
func WriteAsciicast(w io.Writer, hdr record.Header, events []record.Event, width, height int) error {
	h := asciicastHeader{Version: 2, Width: width, Height: height, Title: "sluice session " + hdr.Session}
	var out []termEvent
	var t *sshTerm
	switch {
	case isSSH(events):
		t = sshTerminal(events)
	case isK8s(events):
		t = k8sTerminal(events)
	}
	if t != nil {
		if h.Width <= 0 {
			h.Width = t.cols
		}
		if h.Height <= 0 {
			h.Height = t.rows
		}
		if t.term != "" {
			h.Env = map[string]string{"TERM": t.term}
		}
		out = t.events
	} else {
		for _, c := range render(events) {
			out = append(out, termEvent{at: c.at, code: "o", data: strings.ReplaceAll(c.text, "\n", "\r\n")})
		}
	}
	if h.Width <= 0 {
		h.Width = DefaultWidth
	}
	if h.Height <= 0 {
		h.Height = DefaultHeight
	}
	start := hdr.Start
	if start.IsZero() && len(out) > 0 {
		start = out[0].at
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
	for _, e := range out {
		if d := e.at.Sub(start); d > last {
			last = d
		}
		// [seconds, "o", data], the time in fixed notation (never 1e-06).
		buf.Reset()
		buf.WriteString("[" + strconv.FormatFloat(last.Seconds(), 'f', 6, 64) + `, "` + e.code + `", `)
		if err := enc.Encode(e.data); err != nil {
			return fmt.Errorf("write asciicast event: %w", err)
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
		buf.WriteString("]\n")
		bw.Write(buf.Bytes())
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write asciicast: %w", err)
	}
	return nil
}
