package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// copyIndex copies the index file as it is on disk now (the store still
// open) and opens the copy: what a crash at this instant would leave.
func copyIndex(t *testing.T, s *Store) *Store {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatalf("open a copy of the index: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func entry(i int) *Session {
	return &Session{ID: fmt.Sprintf("20261204T190000.000Z-%08d", i), Status: StatusActive, Target: "db",
		Start: time.Date(2026, 12, 4, 19, 0, 0, i, time.UTC)}
}

// Concurrent Puts and PutDeferreds all return once their entry is in the
// file (a copy taken then holds it), and fewer commits than Puts ran.
func TestConcurrentPutsDurable(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := entry(i)
			put := s.Put
			if i%2 == 1 {
				put = s.PutDeferred
			}
			if err := put(e); err != nil {
				errs <- err
				return
			}
			// Visible on return (the copy below checks the file itself).
			if _, err := s.Get(e.ID); err != nil {
				errs <- fmt.Errorf("entry %d not visible after its Put: %v", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := copyIndex(t, s)
	l, err := c.List(Filter{})
	if err != nil || len(l) != n {
		t.Fatalf("copy of the index lists %d entries (%v), want %d", len(l), err, n)
	}
	if got := s.commits.Load(); got > n {
		t.Errorf("%d commits for %d puts", got, n)
	}
}

// A Put returns with its entry already in the file, as the writer of a
// session start relies on; the same holds for PutDeferred.
func TestPutInFileOnReturn(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(entry(1)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDeferred(entry(2)); err != nil {
		t.Fatal(err)
	}
	c := copyIndex(t, s)
	for _, i := range []int{1, 2} {
		if _, err := c.Get(entry(i).ID); err != nil {
			t.Errorf("entry %d is not in the file after its Put returned: %v", i, err)
		}
	}
}

// Deferred entries wait for a Put and share its commit: one transaction
// for all of them.
func TestPutDeferredSharesCommit(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	s.delay = time.Hour // only a Put (or Close) commits them
	s.mu.Unlock()
	const n = 10
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.PutDeferred(entry(i)); err != nil {
				t.Error(err)
			}
		}()
	}
	testenv.WaitFor(t, 10*time.Second, "the deferred entries to queue", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == n
	})
	before := s.commits.Load()
	if err := s.Put(entry(n)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if got := s.commits.Load() - before; got != 1 {
		t.Errorf("%d commits for %d deferred entries and one Put, want 1", got, n)
	}
	if l, _ := s.List(Filter{}); len(l) != n+1 {
		t.Errorf("%d entries listed, want %d", len(l), n+1)
	}
}

// A deferred entry alone is committed after DeferDelay, and Close commits
// whatever is still queued before it closes the file.
func TestPutDeferredAloneAndClose(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutDeferred(entry(1)); err != nil { // returns after about DeferDelay
		t.Fatal(err)
	}
	s.mu.Lock()
	s.delay = time.Hour
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- s.PutDeferred(entry(2)) }()
	testenv.WaitFor(t, 10*time.Second, "the deferred entry to queue", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) == 1
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("deferred put pending at Close: %v", err)
	}
	if err := s.Put(entry(3)); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if l, _ := s2.List(Filter{}); len(l) != 2 {
		t.Errorf("reopened index lists %d entries, want 2", len(l))
	}
}

// An entry bbolt would refuse fails alone; the others queued beside it
// are committed.
func TestBadEntryFailsAlone(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(&Session{ID: strings.Repeat("a", 40000)}); err == nil {
		t.Error("a key longer than bbolt's limit was accepted")
	}
	if err := s.Put(&Session{}); err == nil {
		t.Error("an empty ID was accepted")
	}
	if err := s.Put(entry(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(entry(1).ID); err != nil {
		t.Error(err)
	}
}

// PutAsync returns before the commit, keeps the order of the calls with
// the Puts after it (a session's start, then its end), and reports a
// failed commit to onErr.
func TestPutAsync(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := entry(1)
	if err := s.PutAsync(start, func(err error) { t.Errorf("commit failed: %v", err) }); err != nil {
		t.Fatal(err)
	}
	// Changes after the call are not part of the queued entry.
	start.Status = "changed after PutAsync"
	end := entry(1)
	end.Status = StatusSealed
	if err := s.PutDeferred(end); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(end.ID)
	if err != nil || got.Status != StatusSealed {
		t.Fatalf("after the start and the end: %+v %v, want the end's sealed entry", got, err)
	}
	if err := s.PutAsync(&Session{}, nil); err == nil {
		t.Error("an entry without an ID was queued")
	}

	// A commit that fails calls onErr: the file is read-only.
	failed := make(chan error, 1)
	s.db.Close()
	if err := s.PutAsync(entry(2), func(err error) { failed <- err }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		if err == nil {
			t.Error("onErr got nil")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed commit did not call onErr within 5s")
	}
}
