package export

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestWriteJSONL(t *testing.T) {
	s := newSession(t)
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, s.hdr, s.events); err != nil {
		t.Fatalf("WriteJSONL: %v", err)
	}

	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, 1<<20)
	n := 0
	for ; sc.Scan(); n++ {
		if n >= len(s.events) {
			t.Fatalf("more lines than the %d events", len(s.events))
		}
		want := s.events[n]

		// The schema as a SIEM sees it: plain JSON names and types.
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", n+1, err, sc.Bytes())
		}
		if m["session"] != s.hdr.Session || m["type"] != want.Type || m["seq"] != float64(want.Seq) {
			t.Errorf("line %d: session %v type %v seq %v; want %s %s %d", n+1, m["session"], m["type"], m["seq"],
				s.hdr.Session, want.Type, want.Seq)
		}
		if ts, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil || !ts.Equal(want.Time) {
			t.Errorf("line %d: time %v (%v), want %v", n+1, m["time"], err, want.Time)
		}
		if want.Data != nil {
			got, err := base64.StdEncoding.DecodeString(m["data"].(string))
			if err != nil || !bytes.Equal(got, want.Data) {
				t.Errorf("line %d: data does not decode as standard base64 to the wire bytes (%v)", n+1, err)
			}
		}
		for k, v := range m {
			if _, ok := schema[k]; !ok {
				t.Errorf("line %d: name %q (%v) is not in the documented schema", n+1, k, v)
			}
		}

		// Every field round-trips.
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		got := l.Event
		if !reflect.DeepEqual(got, want) {
			t.Errorf("line %d round-trips to\n%+v\nwant\n%+v", n+1, got, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(s.events) {
		t.Fatalf("%d lines, want one per event (%d)", n, len(s.events))
	}
}

// schema is the names the package documentation lists.
var schema = map[string]bool{
	"session": true, "seq": true, "time": true, "type": true, "text": true, "text_bytes": true, "kind": true,
	"verdict": true, "rule": true, "reason": true, "rows": true, "bytes": true, "duration_us": true, "err_code": true,
	"dir": true, "data": true, "fields": true, "sig": true,
}
