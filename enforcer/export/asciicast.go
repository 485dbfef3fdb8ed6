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
	Version   int    `json:"version"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
	Timestamp int64  `json:"timestamp,omitempty"`
	Title     string `json:"title,omitempty"`
}

// WriteAsciicast writes the session as an asciicast v2 recording
// (https://docs.asciinema.org/manual/asciicast/v2/). An SSH session is
// written as its terminal and its commands' output (writeSSHAsciicast).
// Any other session is what asciinema play shows as the transcript typed
// out in recorded time: a header line, then
// one [time, "o", text] output event per rendered event, with time in
// seconds since hdr.Start (or since the first event when hdr.Start is
// zero). Times never decrease; an event earlier than the one before it is
// shown with the previous time. Lines end in "\r\n" as a terminal expects.
// width and height are the terminal size, DefaultWidth and DefaultHeight
// when 0 or less; the transcript is not wrapped to them.
func WriteAsciicast(w io.Writer, hdr record.Header, events []record.Event, width, height int) error {
	if isSSH(events) {
		return writeSSHAsciicast(w, hdr, events, width, height)
	}
	if width <= 0 {
		width = DefaultWidth
	}
	if height <= 0 {
		height = DefaultHeight
	}
	chunks := render(events)
	start := hdr.Start
	if start.IsZero() && len(chunks) > 0 {
		start = chunks[0].at
	}
	h := asciicastHeader{Version: 2, Width: width, Height: height, Title: "sluice session " + hdr.Session}
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
	for _, c := range chunks {
		if d := c.at.Sub(start); d > last {
			last = d
		}
		// [seconds, "o", text], the time in fixed notation (never 1e-06).
		buf.Reset()
		buf.WriteString("[" + strconv.FormatFloat(last.Seconds(), 'f', 6, 64) + `, "o", `)
		if err := enc.Encode(strings.ReplaceAll(c.text, "\n", "\r\n")); err != nil {
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
