package record

import (
	"bytes"
	"context"
	"strconv"
	"testing"
)

func benchEvents() map[string]Event {
	return map[string]Event{
		"statement": {Time: t0, Type: TypeStatement, Kind: "select", Verdict: "allow", Rule: "policy.ci-main-readonly",
			Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;"},
		"wire200": {Time: t0, Type: TypeWire, Dir: DirServerToClient, Data: bytes.Repeat([]byte{'D', 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, '7'}, 17)[:200]},
	}
}

// BenchmarkAppend is the recording cost per event: Append plus the
// writer goroutine's encoding, hashing, writing and periodic checkpoint
// and fsync, to a file in a temporary directory, with default Options.
// The timer includes Close, so every event is on disk when it stops.
func BenchmarkAppend(b *testing.B) {
	for _, name := range []string{"statement", "wire200"} {
		e := benchEvents()[name]
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			w, err := Create(dir, "bench-"+strconv.Itoa(b.N), testKeys(1), Options{})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := w.Append(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(fileSize(w.Path()))/float64(b.N), "disk-B/event")
		})
	}
}

// BenchmarkFrame is the writer goroutine's share alone: encoding one event
// into a chained, checksummed frame.
func BenchmarkFrame(b *testing.B) {
	for _, name := range []string{"statement", "wire200"} {
		e := benchEvents()[name]
		b.Run(name, func(b *testing.B) {
			var prev [hashSize]byte
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				var err error
				buf, prev, err = appendEventFrame(buf[:0], &prev, &e)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}
