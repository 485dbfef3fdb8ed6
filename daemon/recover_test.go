package daemon

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
)

// TestRecoverUnindexed: a recording whose index entry was never committed
// (the daemon died first) is indexed at the next start, with what its
// session_start event says, interrupted or, when its seal was written,
// sealed; indexed ones are left alone.
func TestRecoverUnindexed(t *testing.T) {
	dir := t.TempDir()
	keys, err := record.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	write := func(id string, fields map[string]string, seal bool) string {
		w, err := record.Create(dir, id, keys, record.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Append(t.Context(), record.Event{Type: record.TypeSessionStart, Fields: fields}); err != nil {
			t.Fatal(err)
		}
		path := w.Path()
		if seal {
			w.Close()
		} else {
			// Written to the file, never sealed: what a killed
			// daemon leaves.
			if err := w.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
		}
		return path
	}
	now := time.Now()
	lost := write("20261205T100000.000Z-0000000a", map[string]string{"target": "db", "protocol": "postgres", "orig_dst": "127.0.0.2:5432",
		"pid": "42", "uid": "1000", "comm": "psql", "identity.level": "oidc", "claim.repository": "acme/api", "claim.run_id": "7", "record_level": "commands"}, false)
	sealed := write("20261205T100000.000Z-0000000c", map[string]string{"target": "db"}, true)
	kept := write("20261205T100000.000Z-0000000b", map[string]string{"target": "db"}, true)

	idx, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	if err := idx.Put(&store.Session{ID: "20261205T100000.000Z-0000000b", Path: kept, Status: store.StatusSealed, Target: "db"}); err != nil {
		t.Fatal(err)
	}
	n, err := recoverUnindexed(idx, dir, now)
	if err != nil || n != 2 {
		t.Fatalf("recovered %d (%v), want 2", n, err)
	}
	if s, err := idx.Get("20261205T100000.000Z-0000000c"); err != nil || s.Status != store.StatusSealed || s.Path != sealed {
		t.Errorf("recovered sealed entry %+v %v", s, err)
	}
	got, err := idx.Get("20261205T100000.000Z-0000000a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusInterrupted || got.Path != lost || got.Target != "db" || got.PID != 42 || got.UID != 1000 ||
		got.Comm != "psql" || got.Repository != "acme/api" || got.RunID != "7" || got.Level != "commands" || got.Bytes == 0 ||
		filepath.Dir(got.Path) != filepath.Dir(kept) {
		t.Errorf("recovered entry %+v", got)
	}
	if other, _ := idx.Get("20261205T100000.000Z-0000000b"); other.Status != store.StatusSealed {
		t.Errorf("the indexed session became %q", other.Status)
	}
	if n, _ := recoverUnindexed(idx, dir, now); n != 0 {
		t.Errorf("a second pass recovered %d", n)
	}
}
