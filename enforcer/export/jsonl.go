package export

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/enforcer/record"
)

// Line is one JSON lines record: the event's own JSON names (the schema
// in the package documentation, which must not change) plus the session
// it belongs to. The daemon's live export writes the same records.
type Line struct {
	Session string `json:"session"`
	record.Event
}

// WriteJSONL writes every event as one JSON object on its own line, in the
// schema of the package documentation, tagged with hdr's session id.
// Integrity events (checkpoint, seal) are included so the export accounts
// for every frame.
func WriteJSONL(w io.Writer, hdr record.Header, events []record.Event) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range events {
		l := Line{Session: hdr.Session, Event: events[i]}
		l.Time = l.Time.UTC() // RFC 3339 with nanoseconds, in UTC
		if err := enc.Encode(&l); err != nil {
			return fmt.Errorf("write jsonl event %d: %w", l.Seq, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write jsonl: %w", err)
	}
	return nil
}
