package events

import (
	"fmt"
	"os"
	"testing"
)

func appendN(t *testing.T, b *Buffer, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := b.Append(fmt.Appendf(nil, `{"n":%d,"pad":"%0100d"}`, i, 0)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBufferBoundDropsOldest(t *testing.T) {
	dir := t.TempDir()
	const max = 64 << 10
	b, err := OpenBuffer(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	appendN(t, b, 0, 5000) // about 560 KB into a 64 KiB bound
	st := b.Stats()
	if st.Bytes > max {
		t.Errorf("buffer holds %d bytes, over its bound of %d", st.Bytes, max)
	}
	if st.Pending+st.Dropped != 5000 {
		t.Errorf("pending %d + dropped %d != 5000 appended", st.Pending, st.Dropped)
	}
	if st.Dropped == 0 {
		t.Error("nothing dropped past the bound")
	}
	recs, _, err := b.Next(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(recs)) != st.Pending {
		t.Fatalf("Next returned %d records, pending %d", len(recs), st.Pending)
	}
	// What is kept is the newest, in order, ending with the last.
	want := fmt.Sprintf(`{"n":%d,`, 5000-len(recs))
	if got := string(recs[0][:len(want)]); got != want {
		t.Errorf("oldest kept record starts %s, want %s", got, want)
	}
	t.Logf("bound %d B: %d appended, %d kept (%d B on disk), %d dropped", max, 5000, st.Pending, st.Bytes, st.Dropped)
}

func TestBufferAckAndRestart(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBuffer(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, b, 0, 1000)
	recs, pos, err := b.Next(600)
	if err != nil || len(recs) != 600 {
		t.Fatalf("Next: %d records, %v", len(recs), err)
	}
	if err := b.Ack(pos); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Pending != 400 {
		t.Fatalf("pending after ack %d, want 400", st.Pending)
	}
	// Read but not acknowledged: sent again after a restart.
	if _, _, err := b.Next(100); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// A torn last line (a crash mid-write) is cut off at reopening.
	ents, _ := os.ReadDir(dir)
	last := ""
	for _, e := range ents {
		if e.Name() > last && e.Name() != "acked" && e.Name() != "acked.tmp" {
			last = e.Name()
		}
	}
	f, _ := os.OpenFile(dir+"/"+last, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"n":torn`)
	f.Close()

	b, err = OpenBuffer(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if st := b.Stats(); st.Pending != 400 || st.Dropped != 0 {
		t.Fatalf("after restart: pending %d dropped %d, want 400 and 0", st.Pending, st.Dropped)
	}
	appendN(t, b, 1000, 10)
	recs, pos, err = b.Next(1 << 20)
	if err != nil || len(recs) != 410 {
		t.Fatalf("Next after restart: %d records, %v", len(recs), err)
	}
	if want := `{"n":600,`; string(recs[0][:len(want)]) != want {
		t.Errorf("first record after restart %s, want n 600", recs[0])
	}
	if want := `{"n":1009,`; string(recs[409][:len(want)]) != want {
		t.Errorf("last record %s, want n 1009", recs[409])
	}
	if err := b.Ack(pos); err != nil {
		t.Fatal(err)
	}
	// Only the segment being appended to stays.
	if st := b.Stats(); st.Pending != 0 || st.Bytes > b.segSize {
		t.Errorf("after acking everything: %+v, want nothing pending and at most one segment (%d B)", st, b.segSize)
	}
}

// TestBufferDropWhileSending: segments deleted by the bound between Next
// and Ack leave the counts right.
func TestBufferDropWhileSending(t *testing.T) {
	b, err := OpenBuffer(t.TempDir(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	appendN(t, b, 0, 300)
	recs, pos, err := b.Next(1 << 20)
	if err != nil || len(recs) != 300 {
		t.Fatalf("Next: %d, %v", len(recs), err)
	}
	appendN(t, b, 300, 2000) // the bound deletes what was read, and more
	if err := b.Ack(pos); err != nil {
		t.Fatal(err)
	}
	st := b.Stats()
	rest, _, err := b.Next(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(rest)) != st.Pending {
		t.Errorf("pending %d, but %d records are left to send", st.Pending, len(rest))
	}
	if want := `{"n":2299,`; string(rest[len(rest)-1][:len(want)]) != want {
		t.Errorf("last record %s", rest[len(rest)-1])
	}
}
