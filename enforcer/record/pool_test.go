package record_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
)

func poolKeys() *Keys {
	return NewKeys(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize)))
}

func pooledFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, PoolPattern))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func poolLen(p *Pool) int { return PoolLen(p) }

// The pool fills to its size, a Create takes a file (renamed to the
// session's name, a sealed recording that verifies) and the pool refills;
// Close removes what it holds.
func TestPoolCreateRefill(t *testing.T) {
	dir := t.TempDir()
	keys := poolKeys()
	p := NewPool(dir, 3)
	testenv.WaitFor(t, 10*time.Second, "the pool to fill", func() bool { return poolLen(p) == 3 })
	if n := len(pooledFiles(t, dir)); n != 3 {
		t.Fatalf("%d pooled files on disk, want 3", n)
	}
	w, err := p.Create("pooled-1", keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append(context.Background(), Event{Type: TypeStatement, Text: "SELECT 1"}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := PathFor(dir, "pooled-1", time.Now()); w.Path() != want {
		t.Errorf("path %s, want %s", w.Path(), want)
	}
	res, err := Verify(w.Path(), keys.PublicKey())
	if err != nil || res.Status != StatusSealed || res.Events != 1 {
		t.Fatalf("verify: %+v, %v; want sealed with 1 event", res, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the pool to refill", func() bool { return poolLen(p) == 3 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if m := pooledFiles(t, dir); len(m) != 0 {
		t.Errorf("pooled files left after Close: %v", m)
	}
	if l, _ := List(dir); len(l) != 1 {
		t.Errorf("recordings %v, want the one session", l)
	}
}

// A session whose file exists is refused, as Create's O_EXCL refuses
// it; the existing file is untouched.
func TestPoolCreateNoReplace(t *testing.T) {
	dir := t.TempDir()
	p := NewPool(dir, 1)
	defer p.Close()
	testenv.WaitFor(t, 10*time.Second, "the pool to fill", func() bool { return poolLen(p) == 1 })
	path := PathFor(dir, "taken", time.Now())
	if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Create("taken", poolKeys(), Options{}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create over an existing recording: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Errorf("existing recording now %q", b)
	}
}

// Concurrent Creates, more than the pool holds, all get their own sealed
// recording.
func TestPoolConcurrent(t *testing.T) {
	dir := t.TempDir()
	keys := poolKeys()
	p := NewPool(dir, 2)
	const n = 16
	var wg sync.WaitGroup
	paths := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := p.Create(fmt.Sprintf("conc-%02d", i), keys, Options{})
			if err != nil {
				t.Error(err)
				return
			}
			paths[i] = w.Path()
			if err := w.Close(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p.Close()
	for i, path := range paths {
		if path == "" {
			continue
		}
		if res, err := Verify(path, keys.PublicKey()); err != nil || res.Status != StatusSealed {
			t.Errorf("session %d: %+v, %v", i, res, err)
		}
	}
	if m := pooledFiles(t, dir); len(m) != 0 {
		t.Errorf("pooled files left after Close: %v", m)
	}
}

// A new pool removes the empty pooled files a crashed daemon left, and
// leaves one with content (which a pooled file never has before its
// rename) for an operator.
func TestPoolRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	day := filepath.Join(dir, "2026-12-01")
	os.MkdirAll(day, 0o750)
	empty := filepath.Join(day, PoolPrefix+"00"+PoolSuffix)
	full := filepath.Join(day, PoolPrefix+"01"+PoolSuffix)
	os.WriteFile(empty, nil, 0o640)
	os.WriteFile(full, []byte("x"), 0o640)
	p := NewPool(dir, 1)
	defer p.Close()
	if _, err := os.Stat(empty); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty leftover: %v, want removed", err)
	}
	if _, err := os.Stat(full); err != nil {
		t.Errorf("leftover with content: %v, want kept", err)
	}
}

// A pooled file of another day is not used: the recording goes into its
// own day's directory.
func TestPoolOtherDay(t *testing.T) {
	dir := t.TempDir()
	p := NewPool(dir, 1)
	defer p.Close()
	testenv.WaitFor(t, 10*time.Second, "the pool to fill", func() bool { return poolLen(p) == 1 })
	stale := PoolMoveDay(p, filepath.Join(dir, "2000-01-01"))
	w, err := p.Create("today", poolKeys(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if want := PathFor(dir, "today", time.Now()); w.Path() != want {
		t.Errorf("path %s, want %s", w.Path(), want)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the other day's pooled file: %v, want removed", err)
	}
}
