package ssh

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// writes records each Write it gets.
type writes struct{ got [][]byte }

func (w *writes) Write(b []byte) (int, error) {
	w.got = append(w.got, append([]byte(nil), b...))
	return len(b), nil
}

// FuzzPacketWriter: an SFTP stream written in pieces of any size comes
// out byte for byte, and every packet up to maxCoalesce in a Write of its
// own, whole.
func FuzzPacketWriter(f *testing.F) {
	f.Add([]byte{9, 200, 0, 3, 70, 255}, []byte{9, 1, 40})
	f.Add([]byte{0, 0, 0}, []byte{})
	f.Add([]byte{1, 255, 1, 255}, []byte{2, 3})
	f.Fuzz(func(t *testing.T, spec, cuts []byte) {
		// Each pair of spec bytes is a packet's length: up to 36 bytes,
		// plus up to 255 times 300 when the first is odd (past
		// maxCoalesce).
		var all []byte
		var sizes []int
		for i := 0; i+1 < len(spec) && len(sizes) < 64; i += 2 {
			n := 5 + int(spec[i])%32
			if spec[i]%2 == 1 {
				n += int(spec[i+1]) * 300
			} else {
				n += int(spec[i+1])
			}
			pkt := make([]byte, n)
			binary.BigEndian.PutUint32(pkt, uint32(n-4))
			for j := 4; j < n; j++ {
				pkt[j] = byte(len(sizes)*7 + j)
			}
			all = append(all, pkt...)
			sizes = append(sizes, n)
		}
		var w writes
		p := &packetWriter{w: &w}
		rest := all
		for i := 0; len(rest) > 0; i++ {
			k := len(rest)
			if i < len(cuts) {
				k = min(k, 1+int(cuts[i])*97)
			}
			if n, err := p.Write(rest[:k]); n != k || err != nil {
				t.Fatalf("Write: %d of %d, %v", n, k, err)
			}
			rest = rest[k:]
		}
		if len(p.buf) != 0 || p.pass != 0 {
			t.Fatalf("%d bytes gathered, %d to pass after whole packets", len(p.buf), p.pass)
		}
		if !bytes.Equal(bytes.Join(w.got, nil), all) {
			t.Fatal("bytes out differ from bytes in")
		}
		// Writes of gathered packets are whole packets.
		got := w.got
		for _, n := range sizes {
			if n > maxCoalesce {
				// The large packet's bytes may come in any pieces.
				for n > 0 && len(got) > 0 {
					n -= len(got[0])
					got = got[1:]
				}
				continue
			}
			if len(got) == 0 || len(got[0]) != n {
				t.Fatalf("packet of %d bytes not written whole", n)
			}
			got = got[1:]
		}
	})
}
