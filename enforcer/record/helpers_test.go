package record

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// testKeys returns a fixed key, so a child process signs with the same one.
func testKeys(seed byte) *Keys {
	return NewKeys(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
}

// memSink is an in-memory sink. When gate is non-nil, every Write first
// signals entered (once) and waits for gate to be closed.
type memSink struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	syncs    int
	closed   bool
	writeErr error

	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.gate != nil {
		s.once.Do(func() { close(s.entered) })
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeErr != nil && s.buf.Len() > 0 {
		return 0, s.writeErr
	}
	return s.buf.Write(p)
}

func (s *memSink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	return nil
}

func (s *memSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

func (s *memSink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

// newMemWriter starts a Writer on a memSink.
func newMemWriter(t testing.TB, s *memSink, keys *Keys, opts Options) *Writer {
	t.Helper()
	w, err := newWriter(s, "mem", "sess-1", keys, opts, time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC), nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// verifyBytes is Verify on an in-memory recording, also returning the
// events read.
func verifyBytes(data []byte, pub ed25519.PublicKey) (Result, []Event, error) {
	rd, err := NewReader(bytes.NewReader(data), pub)
	if err != nil {
		return Result{}, nil, err
	}
	var evs []Event
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return rd.Result(), evs, nil
		}
		if err != nil {
			return rd.Result(), evs, err
		}
		evs = append(evs, e)
	}
}

// frame is one frame of a recording file as raw bytes.
type frame struct {
	off int
	raw []byte // header and payload
}

func (f frame) payload() []byte { return f.raw[frameHeader:] }

// splitFrames cuts a complete recording into its frames, without checks.
func splitFrames(t testing.TB, data []byte) []frame {
	t.Helper()
	var fs []frame
	off := len(magic)
	for off < len(data) {
		if len(data)-off < frameHeader {
			t.Fatalf("splitFrames: %d trailing bytes", len(data)-off)
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		end := off + frameHeader + n
		if end > len(data) {
			t.Fatalf("splitFrames: frame at %d overruns the file", off)
		}
		fs = append(fs, frame{off: off, raw: data[off:end]})
		off = end
	}
	return fs
}

// buildFrame returns a frame with a correct header for payload p.
func buildFrame(p []byte) []byte {
	return append(appendFrameHeader(nil, p), p...)
}

// joinFrames reassembles a file from frames.
func joinFrames(fs [][]byte) []byte {
	b := []byte(magic)
	for _, f := range fs {
		b = append(b, f...)
	}
	return b
}

// rechain rewrites every event frame's previous hash and checksums so the
// chain is consistent again, as a forger without the key would.
func rechain(fs [][]byte) [][]byte {
	out := make([][]byte, len(fs))
	out[0] = fs[0]
	head := sha256.Sum256(fs[0][frameHeader:])
	for i := 1; i < len(fs); i++ {
		p := bytes.Clone(fs[i][frameHeader:])
		copy(p, head[:])
		out[i] = buildFrame(p)
		head = sha256.Sum256(p)
	}
	return out
}

func asFrameError(t testing.TB, err error) *FrameError {
	t.Helper()
	var fe *FrameError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FrameError", err, err)
	}
	return fe
}
