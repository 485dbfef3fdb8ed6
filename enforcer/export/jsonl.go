package export

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
)

// line is one JSON lines record; its names are the schema in the package
// documentation and must not change.
type line struct {
	Session    string            `json:"session"`
	Seq        uint64            `json:"seq"`
	Time       string            `json:"time"`
	Type       string            `json:"type"`
	Text       string            `json:"text,omitempty"`
	TextBytes  int64             `json:"text_bytes,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	Verdict    string            `json:"verdict,omitempty"`
	Rule       string            `json:"rule,omitempty"`
	Reason     string            `json:"reason,omitempty"`
	Rows       int64             `json:"rows,omitempty"`
	Bytes      int64             `json:"bytes,omitempty"`
	DurationUS int64             `json:"duration_us,omitempty"`
	ErrCode    string            `json:"err_code,omitempty"`
	Dir        string            `json:"dir,omitempty"`
	Data       []byte            `json:"data,omitempty"`
	Fields     map[string]string `json:"fields,omitempty"`
	Sig        []byte            `json:"sig,omitempty"`
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
		e := &events[i]
		l := line{
			Session: hdr.Session, Seq: e.Seq, Time: e.Time.UTC().Format(time.RFC3339Nano), Type: e.Type,
			Text: e.Text, TextBytes: e.TextBytes, Kind: e.Kind, Verdict: e.Verdict, Rule: e.Rule, Reason: e.Reason,
			Rows: e.Rows, Bytes: e.Bytes, DurationUS: e.DurationUS, ErrCode: e.ErrCode,
			Dir: e.Dir, Data: e.Data, Fields: e.Fields, Sig: e.Sig,
		}
		if err := enc.Encode(&l); err != nil {
			return fmt.Errorf("write jsonl event %d: %w", e.Seq, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write jsonl: %w", err)
	}
	return nil
}
