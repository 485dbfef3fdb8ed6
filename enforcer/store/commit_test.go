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
		return len(s.queue) == n
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
		return len(s.queue) == 1
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
