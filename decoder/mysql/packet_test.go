package mysql

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// frames writes payloads with a packetWriter and returns the bytes.
func frames(t testing.TB, payloads ...[]byte) []byte {
	var buf bytes.Buffer
	w := newPacketWriter(&buf)
	for _, p := range payloads {
		if err := w.write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFramingRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), maxPiece) // exactly one full piece: an empty piece follows
	bigger := bytes.Repeat([]byte("y"), maxPiece+10)
	payloads := [][]byte{{comQuery, 'S'}, {}, big, bigger, []byte("tail")}
	raw := frames(t, payloads...)
	// A payload of exactly 0xffffff bytes is followed by an empty piece.
	if want := 4*7 + 2 + maxPiece + maxPiece + 10 + 4; len(raw) != want {
		t.Fatalf("framed length %d, want %d", len(raw), want)
	}
	r := newPacketReader(bytes.NewReader(raw), 64<<20)
	for i, want := range payloads {
		got, _, err := r.next()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("packet %d: %d bytes, want %d", i, len(got), len(want))
		}
	}
	if _, _, err := r.next(); err != io.EOF {
		t.Fatalf("after the last packet: %v, want EOF", err)
	}
}

func TestFramingBound(t *testing.T) {
	raw := frames(t, bytes.Repeat([]byte("z"), 2000))
	r := newPacketReader(bytes.NewReader(raw), 1000)
	_, _, err := r.next()
	var pe *ProtocolError
	if !errors.As(err, &pe) {
		t.Fatalf("a packet past the bound: %v, want a ProtocolError", err)
	}
	// A truncated packet is an unexpected EOF, not a clean end.
	r = newPacketReader(bytes.NewReader(raw[:10]), 1<<20)
	if _, _, err := r.next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated packet: %v, want ErrUnexpectedEOF", err)
	}
}

// FuzzFraming feeds arbitrary bytes to the packet reader. The property:
// it never panics, never returns a payload past its bound, and the
// payloads it returns, framed again with their sequence ids, are exactly
// the bytes it consumed: nothing is dropped, added or reordered, so what
// the decoder decides is what the server would read.
func FuzzFraming(f *testing.F) {
	f.Add(frames(f, []byte{comQuery, 'S', 'E', 'L'}, []byte{comQuit}))
	f.Add([]byte{0xff, 0xff, 0xff, 0, 1, 2, 3})
	f.Add([]byte{5, 0, 0, 0, 3, 'a'})
	f.Fuzz(func(t *testing.T, raw []byte) {
		const max = 1 << 12
		r := newPacketReader(bytes.NewReader(raw), max)
		var again bytes.Buffer
		for {
			p, seq, err := r.next()
			if err != nil {
				break
			}
			if len(p) > max {
				t.Fatalf("payload of %d bytes past the bound %d", len(p), max)
			}
			w := newPacketWriter(&again)
			w.seq = seq
			w.write(p)
			w.flush()
		}
		if !bytes.HasPrefix(raw, again.Bytes()) {
			t.Fatalf("re-framed payloads differ from the input:\n in %x\nout %x", raw, again.Bytes())
		}
	})
}

func TestLenenc(t *testing.T) {
	for _, v := range []uint64{0, 1, 250, 251, 0xffff, 0x10000, 0xffffff, 0x1000000, 1 << 40} {
		b := appendLenenc(nil, v)
		got, n, null, err := readLenenc(b)
		if err != nil || null || n != len(b) || got != v {
			t.Errorf("%d: got %d (n %d, null %v, err %v)", v, got, n, null, err)
		}
	}
	if _, _, null, _ := readLenenc([]byte{0xfb}); !null {
		t.Error("0xfb is NULL")
	}
}

func TestServerVersion(t *testing.T) {
	for _, c := range []struct {
		in      string
		mariaDB bool
		version int
	}{
		{"5.5.5-10.11.19-MariaDB-0+deb12u1", true, 101119},
		{"10.11.6-MariaDB", true, 101106},
		{"8.0.36", false, 80036},
		{"garbage", false, 0},
	} {
		m, v := parseServerVersion(c.in)
		if m != c.mariaDB || v != c.version {
			t.Errorf("%q: %v %d, want %v %d", c.in, m, v, c.mariaDB, c.version)
		}
	}
}
