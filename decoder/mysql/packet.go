package mysql

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MySQL's framing: every packet is a 3-byte little-endian payload length,
// a 1-byte sequence id, then the payload. A payload of 0xffffff bytes or
// more is split into 0xffffff-byte pieces, each with its own header, the
// last one shorter (possibly empty). The sequence id counts the packets
// of one exchange: it is 0 on a command and goes up by one per packet,
// from either side, until the exchange ends.

// maxPiece is the largest payload one frame carries.
const maxPiece = 0xffffff

// DefaultMaxMessage bounds one logical packet (its pieces reassembled)
// when Params.MaxMessage is 0: MariaDB's own max_allowed_packet default
// is 16 MiB, and a row or statement bigger than this is refused.
const DefaultMaxMessage = 64 << 20

// ProtocolError is a packet the decoder cannot accept: the session ends,
// with an ERR packet naming it sent to the client.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return e.Msg }

// errTooLarge is a packet beyond the session's bound.
func errTooLarge(n, max int) error {
	return &ProtocolError{Msg: fmt.Sprintf("a packet of more than %d bytes (the bound is %d)", n, max)}
}

// packetReader reads whole packets, reassembling split payloads.
type packetReader struct {
	r   *bufio.Reader
	max int
	buf []byte // reused for payloads that span several frames
	seq byte   // the sequence id of the last frame read
}

func newPacketReader(r io.Reader, max int) *packetReader {
	return &packetReader{r: bufio.NewReaderSize(r, 16<<10), max: max}
}

// next returns the next packet's payload and its (first frame's)
// sequence id. The payload is valid until the next call.
func (pr *packetReader) next() ([]byte, byte, error) {
	n, seq, err := pr.header()
	if err != nil {
		return nil, 0, err
	}
	if n < maxPiece {
		b, err := pr.frame(n)
		return b, seq, err
	}
	// A split payload: gather the pieces.
	pr.buf = pr.buf[:0]
	for {
		if len(pr.buf)+n > pr.max {
			return nil, 0, errTooLarge(len(pr.buf)+n, pr.max)
		}
		b, err := pr.frame(n)
		if err != nil {
			return nil, 0, err
		}
		pr.buf = append(pr.buf, b...)
		if n < maxPiece {
			return pr.buf, seq, nil
		}
		if n, _, err = pr.header(); err != nil {
			return nil, 0, unexpected(err)
		}
	}
}

// header reads one frame's header.
func (pr *packetReader) header() (int, byte, error) {
	h, err := pr.r.Peek(4)
	if err != nil {
		if len(h) > 0 {
			return 0, 0, unexpected(err)
		}
		return 0, 0, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	seq := h[3]
	pr.r.Discard(4)
	pr.seq = seq
	if n > pr.max {
		return 0, 0, errTooLarge(n, pr.max)
	}
	return n, seq, nil
}

// frame reads one frame's n-byte payload, from the reader's buffer when
// it fits there.
func (pr *packetReader) frame(n int) ([]byte, error) {
	if n <= pr.r.Size() {
		b, err := pr.r.Peek(n)
		if err != nil {
			return nil, unexpected(err)
		}
		pr.r.Discard(n)
		return b, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(pr.r, b); err != nil {
		return nil, unexpected(err)
	}
	return b, nil
}

// buffered reports whether a whole packet's first frame is in the
// buffer, so a reader knows whether the next read may block.
func (pr *packetReader) buffered() int { return pr.r.Buffered() }

// unexpected turns a clean EOF in the middle of a packet into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// packetWriter writes packets with the sequence ids of one exchange.
type packetWriter struct {
	w   *bufio.Writer
	seq byte // the next packet's sequence id
}

func newPacketWriter(w io.Writer) *packetWriter {
	return &packetWriter{w: bufio.NewWriterSize(w, 16<<10)}
}

// write appends one packet (split as the framing requires) with the next
// sequence ids. It does not flush.
func (pw *packetWriter) write(b []byte) error {
	for {
		n := min(len(b), maxPiece)
		if _, err := pw.w.Write([]byte{byte(n), byte(n >> 8), byte(n >> 16), pw.seq}); err != nil {
			return err
		}
		pw.seq++
		if _, err := pw.w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
		if n < maxPiece {
			return nil
		}
	}
}

func (pw *packetWriter) flush() error { return pw.w.Flush() }

// Length-encoded integers and strings.

// readLenenc reads a length-encoded integer from b. null is set for 0xfb
// (SQL NULL in a text row).
func readLenenc(b []byte) (v uint64, n int, null bool, err error) {
	if len(b) == 0 {
		return 0, 0, false, errShort
	}
	switch c := b[0]; {
	case c < 0xfb:
		return uint64(c), 1, false, nil
	case c == 0xfb:
		return 0, 1, true, nil
	case c == 0xfc:
		if len(b) < 3 {
			return 0, 0, false, errShort
		}
		return uint64(b[1]) | uint64(b[2])<<8, 3, false, nil
	case c == 0xfd:
		if len(b) < 4 {
			return 0, 0, false, errShort
		}
		return uint64(b[1]) | uint64(b[2])<<8 | uint64(b[3])<<16, 4, false, nil
	case c == 0xfe:
		if len(b) < 9 {
			return 0, 0, false, errShort
		}
		var v uint64
		for i := 8; i >= 1; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v, 9, false, nil
	}
	return 0, 0, false, &ProtocolError{Msg: "invalid length-encoded integer"}
}

// readLenencString reads a length-encoded string from b: its bytes and
// the rest of b.
func readLenencString(b []byte) (s, rest []byte, null bool, err error) {
	v, n, null, err := readLenenc(b)
	if err != nil || null {
		return nil, b[n:], null, err
	}
	if uint64(len(b)-n) < v {
		return nil, nil, false, errShort
	}
	return b[n : n+int(v)], b[n+int(v):], false, nil
}

// appendLenenc appends v as a length-encoded integer.
func appendLenenc(b []byte, v uint64) []byte {
	switch {
	case v < 0xfb:
		return append(b, byte(v))
	case v <= 0xffff:
		return append(b, 0xfc, byte(v), byte(v>>8))
	case v <= 0xffffff:
		return append(b, 0xfd, byte(v), byte(v>>8), byte(v>>16))
	}
	return append(b, 0xfe, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}

// appendLenencString appends s with its length-encoded length.
func appendLenencString(b, s []byte) []byte {
	return append(appendLenenc(b, uint64(len(s))), s...)
}

// errShort is a payload that ends before its fields do.
var errShort = &ProtocolError{Msg: "a packet ends before its fields do"}

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (s, rest []byte, err error) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], nil
		}
	}
	return nil, nil, errShort
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func put32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
