package events

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Buffer is an on-disk queue of records (one JSON line each) in
// append-only segment files under one directory, bounded in bytes. When a
// record would take it past the bound, the oldest segments are deleted,
// sent or not, and their unsent records are counted as dropped. What was
// acknowledged is remembered in a small position file, so a restarted
// daemon resumes where it was; records sent but not yet remembered as
// acknowledged are sent again (the stream drops them as duplicates).
//
// A Buffer is safe for concurrent use by one appender and one reader.
type Buffer struct {
	dir     string
	max     int64
	segSize int64

	mu      sync.Mutex
	segs    []segment // oldest first; the last is the one appended to
	f       *os.File  // the last segment, open for appending
	ackSeg  uint64    // the acknowledged position: segment and offset
	ackOff  int64
	pending int64  // records after the acknowledged position
	dropped int64  // records deleted unsent since Open
	drops   uint64 // segments deleted by the bound since Open
	notify  chan struct{}
}

type segment struct {
	n    uint64
	size int64
}

// Pos is a position in a Buffer, returned by Next and given to Ack.
type Pos struct {
	seg uint64
	off int64
	n   int    // records read
	gen uint64 // Buffer.drops when read
}

// OpenBuffer opens (creating) the buffer in dir, bounded by max bytes,
// and recovers what an earlier run left there.
func OpenBuffer(dir string, max int64) (*Buffer, error) {
	if max <= 0 {
		return nil, errors.New("open event buffer: the bound must be positive")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open event buffer: %w", err)
	}
	b := &Buffer{dir: dir, max: max, segSize: max / 8, notify: make(chan struct{}, 1)}
	if b.segSize > 4<<20 {
		b.segSize = 4 << 20
	}
	if b.segSize < 4096 {
		b.segSize = 4096
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open event buffer: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("open event buffer: %w", err)
		}
		b.segs = append(b.segs, segment{n: n, size: fi.Size()})
	}
	sort.Slice(b.segs, func(i, j int) bool { return b.segs[i].n < b.segs[j].n })
	if p, err := os.ReadFile(filepath.Join(dir, "acked")); err == nil {
		fmt.Sscanf(string(p), "%d %d", &b.ackSeg, &b.ackOff)
	}
	// A torn last line (a crash mid-write) is cut off.
	for i := range b.segs {
		s := &b.segs[i]
		if err := b.trimTorn(s); err != nil {
			return nil, err
		}
	}
	if len(b.segs) == 0 || b.ackSeg < b.segs[0].n {
		b.ackSeg, b.ackOff = 0, 0
		if len(b.segs) > 0 {
			b.ackSeg = b.segs[0].n
		}
	}
	for _, s := range b.segs {
		if s.n < b.ackSeg {
			continue
		}
		off := int64(0)
		if s.n == b.ackSeg {
			off = b.ackOff
		}
		c, err := b.countLines(s.n, off)
		if err != nil {
			return nil, err
		}
		b.pending += c
	}
	next := uint64(1)
	if len(b.segs) > 0 {
		next = b.segs[len(b.segs)-1].n + 1
	}
	if err := b.newSegment(next); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Buffer) path(n uint64) string {
	return filepath.Join(b.dir, fmt.Sprintf("%016d.seg", n))
}

func (b *Buffer) trimTorn(s *segment) error {
	p, err := os.ReadFile(b.path(s.n))
	if err != nil {
		return fmt.Errorf("open event buffer: %w", err)
	}
	keep := int64(bytes.LastIndexByte(p, '\n') + 1)
	if keep != int64(len(p)) {
		if err := os.Truncate(b.path(s.n), keep); err != nil {
			return fmt.Errorf("open event buffer: %w", err)
		}
		s.size = keep
	}
	return nil
}

func (b *Buffer) countLines(n uint64, off int64) (int64, error) {
	p, err := os.ReadFile(b.path(n))
	if err != nil {
		return 0, fmt.Errorf("open event buffer: %w", err)
	}
	if off > int64(len(p)) {
		return 0, nil
	}
	return int64(bytes.Count(p[off:], []byte{'\n'})), nil
}

func (b *Buffer) newSegment(n uint64) error {
	if b.f != nil {
		b.f.Close()
	}
	f, err := os.OpenFile(b.path(n), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create event segment: %w", err)
	}
	b.f = f
	b.segs = append(b.segs, segment{n: n})
	return nil
}

func (b *Buffer) total() int64 {
	var t int64
	for _, s := range b.segs {
		t += s.size
	}
	return t
}

// Append adds one record (without a newline; it must hold none). When the
// buffer would pass its bound, the oldest segments are deleted first.
func (b *Buffer) Append(rec []byte) error {
	if bytes.IndexByte(rec, '\n') >= 0 {
		return errors.New("append event: the record holds a newline")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	need := int64(len(rec)) + 1
	last := &b.segs[len(b.segs)-1]
	if last.size > 0 && last.size+need > b.segSize {
		if err := b.newSegment(last.n + 1); err != nil {
			return err
		}
	}
	for b.total()+need > b.max && len(b.segs) > 1 {
		b.dropOldest()
	}
	line := append(append(make([]byte, 0, need), rec...), '\n')
	if _, err := b.f.Write(line); err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	b.segs[len(b.segs)-1].size += need
	b.pending++
	select {
	case b.notify <- struct{}{}:
	default:
	}
	return nil
}

// dropOldest deletes the oldest segment, counting its unacknowledged
// records as dropped.
func (b *Buffer) dropOldest() {
	s := b.segs[0]
	if s.n >= b.ackSeg {
		off := int64(0)
		if s.n == b.ackSeg {
			off = b.ackOff
		}
		c, _ := b.countLines(s.n, off)
		b.dropped += c
		b.pending -= c
	}
	os.Remove(b.path(s.n))
	b.drops++
	b.segs = b.segs[1:]
	if b.ackSeg <= s.n {
		b.ackSeg, b.ackOff = b.segs[0].n, 0
	}
}

// Ready is signalled (without blocking the appender) after an append.
func (b *Buffer) Ready() <-chan struct{} { return b.notify }

// Next returns up to max unacknowledged records from the acknowledged
// position on, and the position after them. The records are fresh copies.
func (b *Buffer) Next(max int) ([][]byte, Pos, error) {
	b.mu.Lock()
	seg, off, gen := b.ackSeg, b.ackOff, b.drops
	var segs []segment
	for _, s := range b.segs {
		if s.n >= seg {
			segs = append(segs, s)
		}
	}
	b.mu.Unlock()
	var recs [][]byte
	pos := Pos{seg: seg, off: off, gen: gen}
	for _, s := range segs {
		if len(recs) >= max {
			break
		}
		start := int64(0)
		if s.n == seg {
			start = off
		}
		if start >= s.size {
			pos = Pos{seg: s.n, off: s.size, n: len(recs), gen: gen}
			continue
		}
		f, err := os.Open(b.path(s.n))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) { // dropped under us
				continue
			}
			return nil, pos, fmt.Errorf("read events: %w", err)
		}
		r := bufio.NewReader(io.NewSectionReader(f, start, s.size-start))
		at := start
		for len(recs) < max {
			line, err := r.ReadBytes('\n')
			if err != nil {
				break
			}
			at += int64(len(line))
			recs = append(recs, line[:len(line)-1])
		}
		f.Close()
		pos = Pos{seg: s.n, off: at, n: len(recs), gen: gen}
	}
	return recs, pos, nil
}

// Ack marks everything before p as sent: fully sent segments are deleted
// and the position is remembered on disk. A position that was dropped
// meanwhile is ignored.
func (b *Buffer) Ack(p Pos) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.seg < b.ackSeg || (p.seg == b.ackSeg && p.off <= b.ackOff) {
		return nil
	}
	b.ackSeg, b.ackOff = p.seg, p.off
	if p.gen == b.drops {
		b.pending -= int64(p.n)
	} else {
		// The bound deleted segments while these were sent: count again
		// (rare: only when the buffer is full).
		b.pending = 0
		for _, s := range b.segs {
			if s.n < b.ackSeg {
				continue
			}
			off := int64(0)
			if s.n == b.ackSeg {
				off = b.ackOff
			}
			c, _ := b.countLines(s.n, off)
			b.pending += c
		}
	}
	for len(b.segs) > 1 && b.segs[0].n < b.ackSeg ||
		len(b.segs) > 1 && b.segs[0].n == b.ackSeg && b.ackOff >= b.segs[0].size {
		os.Remove(b.path(b.segs[0].n))
		b.segs = b.segs[1:]
		if b.ackSeg < b.segs[0].n {
			b.ackSeg, b.ackOff = b.segs[0].n, 0
		}
	}
	tmp := filepath.Join(b.dir, "acked.tmp")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", b.ackSeg, b.ackOff), 0o600); err != nil {
		return fmt.Errorf("remember sent events: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(b.dir, "acked")); err != nil {
		return fmt.Errorf("remember sent events: %w", err)
	}
	return nil
}

// BufferStats are a Buffer's counts.
type BufferStats struct {
	// Pending records wait to be sent; Bytes is the size of the segments
	// on disk.
	Pending, Bytes int64
	// Dropped counts the records deleted unsent (the bound was reached)
	// since OpenBuffer.
	Dropped int64
}

// Stats returns the buffer's counts.
func (b *Buffer) Stats() BufferStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BufferStats{Pending: b.pending, Bytes: b.total(), Dropped: b.dropped}
}

// Close closes the segment being appended to.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.f.Close()
}
