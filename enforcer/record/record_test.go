package record

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ruleset"
)

var t0 = time.Date(2025, 5, 1, 12, 0, 0, 123456789, time.UTC)

// sampleEvents holds one event of every type, with awkward content.
func sampleEvents() []Event {
	return []Event{
		{Time: t0, Type: TypeSessionStart, Verdict: "allow", Rule: "policy.ci-main",
			Fields: map[string]string{"target": "prod-db", "orig_dst": "10.0.0.5:5432", "pid": "4242", "comm": "psql", "identity": "oidc", "claim.repository": "acme/api"}},
		{Time: t0.Add(time.Millisecond), Type: TypeStatement, Kind: "select", Verdict: "allow", Rule: "policy.ci-main",
			Text: "SELECT \"email\" FROM users WHERE note = 'tab\there\nnewline \\ back \x01 ctl é 日本 \u2028'"},
		{Time: t0.Add(2 * time.Millisecond), Type: TypeWire, Dir: DirClientToServer, Data: []byte{'Q', 0, 0, 0, 5, 0, 0xff, 0x80}},
		{Time: t0.Add(3 * time.Millisecond), Type: TypeWire, Dir: DirServerToClient, Data: bytes.Repeat([]byte{'D'}, 200)},
		{Time: t0.Add(4 * time.Millisecond), Type: TypeResult, Rows: 3, Bytes: 210, DurationUS: 812},
		{Time: t0.Add(5 * time.Millisecond), Type: TypeStatement, Kind: "drop", Verdict: "deny", Rule: "policy.ci-main.deny[0]",
			Reason: "schema changes go through migrations", Text: "DROP TABLE users"},
		{Time: t0.Add(6 * time.Millisecond), Type: TypeError, ErrCode: "23505", Text: `duplicate key value violates unique constraint "users_email_key"`},
		{Time: t0.Add(7 * time.Millisecond), Type: TypeNote, Reason: "approval granted", Fields: map[string]string{"approver": "alice"}},
		{Time: t0.Add(8 * time.Millisecond), Type: TypeSessionEnd, Reason: "client closed", Rows: 3, Bytes: 4096, DurationUS: 9000},
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(1)
	w, err := Create(dir, "sess-rt.1", keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := sampleEvents()
	for _, e := range want {
		if err := w.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if p, err := Find(dir, "sess-rt.1"); err != nil || p != w.Path() {
		t.Fatalf("Find = %q, %v; want %q", p, err, w.Path())
	}
	if !strings.HasSuffix(w.Path(), "/sess-rt.1.rec") || !strings.HasPrefix(w.Path(), dir+"/2") {
		t.Errorf("path %s is not dir/YYYY-MM-DD/id.rec", w.Path())
	}

	rec, err := Open(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status() != StatusSealed {
		t.Errorf("status %v, want sealed", rec.Status())
	}
	if h := rec.Header(); h.Session != "sess-rt.1" || h.KeyID != keys.ID() || h.Version != 1 {
		t.Errorf("header %+v", h)
	}
	for i := range want {
		want[i].Seq = uint64(i + 1)
	}
	if got := rec.Events(); !reflect.DeepEqual(got, want) {
		t.Errorf("events differ\n got %+v\nwant %+v", got, want)
	}

	res, err := Verify(w.Path(), keys.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	seal := uint64(len(want) + 1)
	if res.Status != StatusSealed || res.Events != uint64(len(want)) || res.Frames != seal+1 || res.SignedThrough != seal || res.TornBytes != 0 {
		t.Errorf("Verify = %+v", res)
	}
}

func TestAppendSplitsAndCuts(t *testing.T) {
	s := &memSink{}
	w := newMemWriter(t, s, testKeys(1), Options{})
	data := bytes.Repeat([]byte("0123456789abcdef"), (2*MaxWireChunk+100)/16)
	text := strings.Repeat("é", MaxText) // 2 bytes each
	ctx := context.Background()
	if err := w.Append(ctx, Event{Type: TypeWire, Dir: DirServerToClient, Data: data}); err != nil {
		t.Fatal(err)
	}
	if err := w.Append(ctx, Event{Type: TypeStatement, Text: text}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, evs, err := verifyBytes(s.bytes(), testKeys(1).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, e := range evs[:3] {
		if e.Type != TypeWire || len(e.Data) > MaxWireChunk {
			t.Fatalf("event %d: %s with %d bytes", e.Seq, e.Type, len(e.Data))
		}
		got = append(got, e.Data...)
	}
	if !bytes.Equal(got, data) {
		t.Error("split wire data does not reassemble")
	}
	st := evs[3]
	if st.TextBytes != int64(len(text)) || len(st.Text) > MaxText || !strings.HasPrefix(text, st.Text) || len(st.Text) < MaxText-1 {
		t.Errorf("cut text: %d bytes, TextBytes %d", len(st.Text), st.TextBytes)
	}
}

// TestEventJSON checks the hand-written encoder against encoding/json.
func TestEventJSON(t *testing.T) {
	evs := append(sampleEvents(), Event{Seq: 7, Time: t0, Type: TypeSeal, Sig: []byte{1, 2, 3}},
		Event{Time: t0.In(time.FixedZone("x", 3600)), Type: "x", Text: "bad utf8 \xff\xfe end", TextBytes: 1, Rows: -1})
	for _, e := range evs {
		enc := appendEventJSON(nil, &e)
		if !json.Valid(enc) {
			t.Fatalf("invalid JSON: %s", enc)
		}
		var got Event
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatal(err)
		}
		std, _ := json.Marshal(e)
		var want Event
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		want.Time = want.Time.UTC()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("decoded\n got %+v\nwant %+v\nfrom %s", got, want, enc)
		}
	}
}

func FuzzEventJSON(f *testing.F) {
	f.Add("SELECT 1", "k", "v", []byte{0, 1})
	f.Add("\x00\"\\\u2028\xff", "\n", "\xc3", []byte(nil))
	f.Fuzz(func(t *testing.T, text, key, val string, data []byte) {
		e := Event{Seq: 1, Time: t0, Type: TypeNote, Text: text, Reason: val, Data: data, Fields: map[string]string{key: val}}
		enc := appendEventJSON(nil, &e)
		var got, want Event
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("%v: %q", err, enc)
		}
		std, _ := json.Marshal(e)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decoded\n got %+v\nwant %+v", got, want)
		}
	})
}

func TestLevelFilter(t *testing.T) {
	st := Event{Type: TypeStatement, Kind: "select", Verdict: "allow", Text: "SELECT 1", TextBytes: 9}
	wire := Event{Type: TypeWire, Dir: DirServerToClient, Data: []byte("D")}
	res := Event{Type: TypeResult, Rows: 1, Data: []byte("x")}
	tests := []struct {
		level Level
		in    Event
		want  Event
		keep  bool
	}{
		{None, st, Event{}, false},
		{Metadata, st, Event{Type: TypeStatement, Kind: "select", Verdict: "allow"}, true},
		{Commands, st, st, true},
		{Full, st, st, true},
		{Metadata, wire, Event{}, false},
		{Commands, wire, Event{}, false},
		{Full, wire, wire, true},
		{Commands, res, Event{Type: TypeResult, Rows: 1}, true},
	}
	for _, tt := range tests {
		got, keep := tt.level.Filter(tt.in)
		if keep != tt.keep || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%v.Filter(%s) = %+v, %v; want %+v, %v", tt.level, tt.in.Type, got, keep, tt.want, tt.keep)
		}
	}
}

func TestLevels(t *testing.T) {
	for _, rl := range []ruleset.RecordLevel{ruleset.RecordNone, ruleset.RecordMetadata, ruleset.RecordCommands, ruleset.RecordFull} {
		l, err := ParseLevel(rl.String())
		if err != nil || l != LevelOf(rl) || l.String() != rl.String() {
			t.Errorf("level %v: ParseLevel = %v, %v; LevelOf = %v", rl, l, err, LevelOf(rl))
		}
	}
	if _, err := ParseLevel("everything"); err == nil {
		t.Error("ParseLevel accepted an unknown level")
	}
}

func TestSessionID(t *testing.T) {
	for _, id := range []string{"", ".hidden", "a/b", "..", "a b", strings.Repeat("x", 129), "x*"} {
		if _, err := Create(t.TempDir(), id, testKeys(1), Options{}); err == nil {
			t.Errorf("Create accepted session id %q", id)
		}
	}
}
