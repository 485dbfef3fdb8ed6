package record

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// checkpointed returns a sealed recording of the sample events twice over,
// with a checkpoint after each round, and its frames.
func checkpointed(t *testing.T) ([]byte, []frame) {
	t.Helper()
	s := &memSink{}
	w := newMemWriter(t, s, testKeys(1), Options{FsyncEvery: -1})
	ctx := context.Background()
	for range 2 {
		for _, e := range sampleEvents() {
			if err := w.Append(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Append(ctx, sampleEvents()[1]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data := s.bytes()
	fs := splitFrames(t, data)
	// header, 9 events, checkpoint, 9 events, checkpoint, 1 event, seal
	if len(fs) != 23 {
		t.Fatalf("%d frames, want 23", len(fs))
	}
	return data, fs
}

var checkpoints = []uint64{10, 20}

func TestVerifySealed(t *testing.T) {
	data, fs := checkpointed(t)
	res, evs, err := verifyBytes(data, testKeys(1).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusSealed || res.Frames != uint64(len(fs)) || res.Events != 19 || res.SignedThrough != 22 || res.Size != int64(len(data)) {
		t.Errorf("result %+v", res)
	}
	for i, cp := range checkpoints {
		if evs[cp-1].Type != TypeCheckpoint {
			t.Errorf("checkpoint %d: frame %d is %s", i, cp, evs[cp-1].Type)
		}
	}
}

// TestTruncateAnywhere cuts a recording at every byte: inside the magic or
// header it is an error; anywhere else it reads as interrupted with every
// complete frame, and the seal is only there at full length.
func TestTruncateAnywhere(t *testing.T) {
	data, fs := checkpointed(t)
	pub := testKeys(1).PublicKey()
	for cut := 0; cut < len(data); cut++ {
		res, _, err := verifyBytes(data[:cut], pub)
		if cut < fs[1].off {
			if fe := asFrameError(t, err); fe.Frame != 0 || !errors.Is(err, ErrTruncated) {
				t.Fatalf("cut %d: %v", cut, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		complete := 0
		for _, f := range fs {
			if f.off+len(f.raw) <= cut {
				complete++
			}
		}
		var signed uint64
		for _, cp := range checkpoints {
			if int(cp) < complete {
				signed = cp
			}
		}
		torn := int64(cut - fs[complete-1].off - len(fs[complete-1].raw))
		if res.Status != StatusInterrupted || res.Frames != uint64(complete) || res.SignedThrough != signed || res.TornBytes != torn {
			t.Fatalf("cut %d: %+v; want %d frames, signed through %d, %d torn bytes", cut, res, complete, signed, torn)
		}
	}
}

// TestFlipEveryByte flips each byte of a sealed recording in turn: each
// must fail verification naming the frame that holds the byte.
func TestFlipEveryByte(t *testing.T) {
	data, fs := checkpointed(t)
	pub := testKeys(1).PublicKey()
	frameAt := func(i int) (uint64, int) {
		if i < len(magic) {
			return 0, 0
		}
		for n, f := range fs {
			if i < f.off+len(f.raw) {
				return uint64(n), f.off
			}
		}
		t.Fatalf("byte %d is in no frame", i)
		return 0, 0
	}
	for i := range data {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= mask
			res, _, err := verifyBytes(bad, pub)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: verified as %v", i, mask, res.Status)
			}
			fe := asFrameError(t, err)
			n, off := frameAt(i)
			if fe.Frame != n || fe.Offset != int64(off) {
				t.Fatalf("byte %d ^ %#x: %v; want frame %d at offset %d", i, mask, err, n, off)
			}
			if n > 0 && !errors.Is(err, ErrHeaderCRC) && !errors.Is(err, ErrCRC) {
				t.Fatalf("byte %d ^ %#x: %v; want a checksum error", i, mask, err)
			}
		}
	}
}

// TestFlipOnDisk is the acceptance check through Verify on a real file.
func TestFlipOnDisk(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(1)
	w, err := Create(dir, "flip", keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sampleEvents() {
		if err := w.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	fs := splitFrames(t, data)
	data[fs[4].off+frameHeader+40] ^= 1
	if err := os.WriteFile(w.Path(), data, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(w.Path(), keys.PublicKey())
	if fe := asFrameError(t, err); fe.Frame != 4 || !errors.Is(err, ErrCRC) {
		t.Fatalf("Verify: %v; want a checksum error at frame 4", err)
	}
	if rec, err := Open(w.Path()); err == nil || len(rec.Events()) != 3 {
		t.Fatalf("Open: %v with %d events; want the 3 events before frame 4", err, len(rec.Events()))
	}
}

// TestTamper covers deliberate edits that keep every checksum correct.
func TestTamper(t *testing.T) {
	data, fs := checkpointed(t)
	raw := make([][]byte, len(fs))
	for i, f := range fs {
		raw[i] = f.raw
	}
	edit := func(n int, old, new string) []byte {
		p := bytes.Replace(fs[n].payload(), []byte(old), []byte(new), 1)
		if bytes.Equal(p, fs[n].payload()) {
			t.Fatalf("frame %d has no %q", n, old)
		}
		return buildFrame(p)
	}
	with := func(n int, f []byte) [][]byte {
		c := append([][]byte(nil), raw...)
		c[n] = f
		return c
	}
	cut := func(c [][]byte, i, j int) [][]byte { return append(append([][]byte(nil), c[:i]...), c[j:]...) }
	swap := func(i, j int) [][]byte {
		c := append([][]byte(nil), raw...)
		c[i], c[j] = c[j], c[i]
		return c
	}
	dup := append(append(append([][]byte(nil), raw[:6]...), raw[5]), raw[6:]...)

	tests := []struct {
		name   string
		file   []byte
		key    *Keys
		frame  uint64
		err    error
		status Status // when err is nil
	}{
		{name: "edit statement", file: joinFrames(with(6, edit(6, "DROP TABLE", "drop table"))), frame: 7, err: ErrChain},
		{name: "edit verdict before seal", file: joinFrames(with(21, edit(21, `"allow"`, `"deny!"`))), frame: 22, err: ErrChain},
		{name: "remove frame", file: joinFrames(cut(raw, 6, 7)), frame: 6, err: ErrChain},
		{name: "remove header", file: joinFrames(raw[1:]), frame: 0, err: ErrMalformed},
		{name: "swap frames", file: joinFrames(swap(3, 4)), frame: 3, err: ErrChain},
		{name: "duplicate frame", file: joinFrames(dup), frame: 6, err: ErrChain},
		{name: "edit and rechain", file: joinFrames(rechain(with(6, edit(6, "DROP TABLE", "drop table")))), frame: 10, err: ErrSignature},
		{name: "edit after last checkpoint and rechain", file: joinFrames(rechain(with(21, edit(21, `"allow"`, `"deny!"`)))), frame: 22, err: ErrSignature},
		{name: "edit seal time", file: joinFrames(with(22, edit(22, `"time":"`, `"time":"1`))), frame: 22, err: ErrMalformed},
		{name: "checkpoint passed off as seal", file: joinFrames(with(20, edit(20, `"checkpoint"`, `"seal"`))[:21]), frame: 20, err: ErrSignature},
		{name: "extra field on seal", file: joinFrames(with(22, edit(22, `"type":"seal"`, `"type":"seal","text":"x"`))), frame: 22, err: ErrMalformed},
		{name: "data after seal", file: append(bytes.Clone(data), 0), frame: 23, err: ErrTrailing},
		{name: "frame after seal", file: joinFrames(append(append([][]byte(nil), raw...), raw[5])), frame: 23, err: ErrTrailing},
		{name: "wrong key", file: data, key: testKeys(2), frame: 0, err: ErrWrongKey},
		{name: "bad magic", file: append([]byte("SLUICEREC2\n"), data[len(magic):]...), frame: 0, err: ErrBadMagic},
		// Without a seal, trailing frames can be removed undetected; the
		// result says how far the signatures reach.
		{name: "seal removed", file: joinFrames(raw[:22]), status: StatusInterrupted},
		{name: "cut before checkpoint", file: joinFrames(raw[:20]), status: StatusInterrupted},
		{name: "zeros after a crash", file: append(joinFrames(raw[:15]), make([]byte, 4096)...), status: StatusInterrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.key
			if key == nil {
				key = testKeys(1)
			}
			res, _, err := verifyBytes(tt.file, key.PublicKey())
			if tt.err == nil {
				if err != nil || res.Status != tt.status {
					t.Fatalf("got %v, %v; want %v", res.Status, err, tt.status)
				}
				t.Logf("%+v", res)
				return
			}
			if fe := asFrameError(t, err); fe.Frame != tt.frame || !errors.Is(err, tt.err) {
				t.Fatalf("got %v; want %v at frame %d", err, tt.err, tt.frame)
			}
			t.Log(err)
		})
	}
}

func TestVerifyFileErrors(t *testing.T) {
	pub := testKeys(1).PublicKey()
	if _, err := Verify(filepath.Join(t.TempDir(), "none.rec"), pub); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Verify("x", nil); err == nil {
		t.Error("Verify accepted a nil key")
	}
	empty := filepath.Join(t.TempDir(), "empty.rec")
	os.WriteFile(empty, nil, 0o600)
	if _, err := Verify(empty, pub); !errors.Is(err, ErrTruncated) {
		t.Errorf("empty file: %v", err)
	}
}
