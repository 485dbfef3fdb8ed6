package record

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBackpressure blocks the sink and checks that Append accepts exactly
// what the queue holds, then blocks, then records everything once the
// sink moves again.
func TestBackpressure(t *testing.T) {
	const queue = 4
	s := &memSink{}
	keys := testKeys(1)
	w := newMemWriter(t, s, keys, Options{QueueLen: queue, FsyncEvery: -1})
	s.gate, s.entered = make(chan struct{}), make(chan struct{}) // after the header write
	ctx := context.Background()
	note := func(i int) Event { return Event{Type: TypeNote, Reason: strconv.Itoa(i)} }

	// The first event drains the queue, so the writer flushes and blocks in
	// the sink; the next `queue` events fill the queue.
	if err := w.Append(ctx, note(0)); err != nil {
		t.Fatal(err)
	}
	<-s.entered
	for i := 1; i <= queue; i++ {
		if err := w.Append(ctx, note(i)); err != nil {
			t.Fatal(err)
		}
	}

	// The queue is full: a bounded Append gives up, and records nothing.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := w.Append(short, Event{Type: TypeNote, Reason: "dropped by its caller"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append on a full queue: %v, want deadline exceeded", err)
	}

	// An unbounded Append waits until the sink moves.
	var appended atomic.Bool
	done := make(chan error)
	go func() {
		err := w.Append(ctx, note(queue+1))
		appended.Store(true)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if appended.Load() {
		t.Fatal("Append returned while the queue was full")
	}
	close(s.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	_, evs, err := verifyBytes(s.bytes(), keys.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	evs = evs[:len(evs)-1] // the seal
	if len(evs) != queue+2 {
		t.Fatalf("%d events recorded, want %d", len(evs), queue+2)
	}
	for i, e := range evs {
		if e.Reason != strconv.Itoa(i) {
			t.Errorf("event %d is %q", i, e.Reason)
		}
	}
}

// TestAppendReachesTheOS: events appended without Flush reach the sink
// within flushEvery (batched, not at once), and in order.
func TestAppendReachesTheOS(t *testing.T) {
	s := &memSink{}
	w := newMemWriter(t, s, testKeys(1), Options{FsyncEvery: -1})
	defer w.Close()
	start := time.Now()
	for i := range 3 {
		if err := w.Append(context.Background(), Event{Type: TypeNote, Reason: "note-" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for !bytes.Contains(s.bytes(), []byte("note-2")) {
		if time.Since(start) > 10*flushEvery {
			t.Fatalf("the events did not reach the sink within %v", 10*flushEvery)
		}
		time.Sleep(time.Millisecond)
	}
	b := s.bytes()
	if i0, i1, i2 := bytes.Index(b, []byte("note-0")), bytes.Index(b, []byte("note-1")), bytes.Index(b, []byte("note-2")); i0 < 0 || i0 > i1 || i1 > i2 {
		t.Errorf("events out of order or missing: %d %d %d", i0, i1, i2)
	}
}

// TestConcurrentAppend appends from two goroutines through a small queue:
// nothing is lost and each goroutine's events stay in its order.
func TestConcurrentAppend(t *testing.T) {
	s := &memSink{}
	w := newMemWriter(t, s, testKeys(1), Options{QueueLen: 8, FsyncEvery: time.Millisecond})
	const n = 2000
	var wg sync.WaitGroup
	for _, dir := range []string{DirClientToServer, DirServerToClient} {
		wg.Go(func() {
			buf := make([]byte, 8)
			for i := range n {
				copy(buf, fmt.Sprintf("%08d", i)) // reused: Append must copy
				if err := w.Append(context.Background(), Event{Type: TypeWire, Dir: dir, Data: buf}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	res, evs, err := verifyBytes(s.bytes(), testKeys(1).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	next := map[string]int{}
	for _, e := range evs {
		if e.Type != TypeWire {
			continue
		}
		if want := fmt.Sprintf("%08d", next[e.Dir]); string(e.Data) != want {
			t.Fatalf("%s event %d holds %q, want %q", e.Dir, e.Seq, e.Data, want)
		}
		next[e.Dir]++
	}
	if next[DirClientToServer] != n || next[DirServerToClient] != n || res.Events != 2*n {
		t.Fatalf("recorded %v, %d events", next, res.Events)
	}
	t.Logf("%d frames, %d checkpoints, signed through %d", res.Frames, res.Frames-res.Events-2, res.SignedThrough)
}

func TestWriteErrorIsSticky(t *testing.T) {
	boom := errors.New("disk on fire")
	s := &memSink{writeErr: boom}
	var calls atomic.Int32
	w := newMemWriter(t, s, testKeys(1), Options{QueueLen: 2, OnError: func(error) { calls.Add(1) }})
	ctx := context.Background()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = w.Append(ctx, Event{Type: TypeNote})
		if err == nil && i == 0 {
			err = w.Flush(ctx)
		}
	}
	if !errors.Is(err, boom) {
		t.Fatalf("Append: %v, want %v", err, boom)
	}
	if err := w.Append(ctx, Event{Type: TypeNote}); !errors.Is(err, boom) {
		t.Errorf("second Append: %v", err)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("Close: %v", err)
	}
	if calls.Load() != 1 || !s.closed {
		t.Errorf("OnError called %d times, sink closed %v", calls.Load(), s.closed)
	}
}

func TestFrameTooLarge(t *testing.T) {
	s := &memSink{}
	w := newMemWriter(t, s, testKeys(1), Options{})
	big := map[string]string{"k": string(make([]byte, MaxFrame))}
	if err := w.Append(context.Background(), Event{Type: TypeSessionStart, Fields: big}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Close: %v, want ErrFrameTooLarge", err)
	}
}

func TestAppendRules(t *testing.T) {
	w := newMemWriter(t, &memSink{}, testKeys(1), Options{})
	ctx := context.Background()
	for _, typ := range []string{"", TypeSeal, TypeCheckpoint} {
		if err := w.Append(ctx, Event{Type: typ}); err == nil {
			t.Errorf("Append accepted type %q", typ)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Append(ctx, Event{Type: TypeNote}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v", err)
	}
	if err := w.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	for i := range 20 {
		w, err := Create(dir, "leak-"+strconv.Itoa(i), testKeys(1), Options{FsyncEvery: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		w.Append(context.Background(), Event{Type: TypeNote})
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d goroutines after, %d before", runtime.NumGoroutine(), before)
}

func TestCreateLayout(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(1)
	w, err := Create(dir, "a", keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := Create(dir, "a", keys, Options{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Create of one session: %v", err)
	}
	w2, err := Create(dir, "b", keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
	got, err := List(dir)
	if err != nil || len(got) != 2 || got[0] != w.Path() || got[1] != w2.Path() {
		t.Errorf("List = %v, %v", got, err)
	}
	if filepath.Dir(w.Path()) != filepath.Join(dir, time.Now().UTC().Format(time.DateOnly)) {
		t.Errorf("path %s", w.Path())
	}
	if _, err := Find(dir, "c"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Find of a missing session: %v", err)
	}
}

func TestKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, PrivateKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key: %v, %v", fi, err)
	}
	k2, err := LoadOrCreateKeys(dir)
	if err != nil || !k2.PublicKey().Equal(k1.PublicKey()) {
		t.Fatalf("second load: %v, same key %v", err, err == nil && k2.PublicKey().Equal(k1.PublicKey()))
	}
	pub, err := LoadPublicKey(dir)
	if err != nil || !pub.Equal(k1.PublicKey()) || KeyID(pub) != k1.ID() {
		t.Fatalf("LoadPublicKey: %v", err)
	}

	os.Remove(filepath.Join(dir, PublicKeyFile))
	if _, err := LoadOrCreateKeys(dir); err != nil {
		t.Fatal(err)
	}
	if pub, err := LoadPublicKey(dir); err != nil || !pub.Equal(k1.PublicKey()) {
		t.Fatalf("public key not rewritten: %v", err)
	}

	os.Chmod(filepath.Join(dir, PrivateKeyFile), 0o640)
	if _, err := LoadOrCreateKeys(dir); err == nil {
		t.Error("loaded a group-readable private key")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	if len(matches) != 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}
