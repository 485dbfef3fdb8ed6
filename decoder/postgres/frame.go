package postgres

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// DefaultMaxMessage is the largest message either side may send unless
// the configuration says otherwise. PostgreSQL's own limit for most
// messages is 1 GiB; CI has no business near it.
const DefaultMaxMessage = 64 << 20

// bufSize is the buffered reader and writer size on each side.
const bufSize = 64 << 10

// ProtocolError is malformed framing or an oversized message. The session
// ends with a protocol-violation error and nothing of the message is
// forwarded.
type ProtocolError struct {
	Msg string
	// Pending is how many bytes of the refused message the peer is still
	// sending; they are read and discarded (never forwarded) so the peer
	// finishes its write and reads the error instead of a reset.
	Pending int64
}

func (e *ProtocolError) Error() string { return "protocol violation: " + e.Msg }

// frameReader reads typed messages (a type byte and a 4-byte length that
// counts itself). Bodies that must be decoded are read into a buffer that
// is reused: a body is valid until the next call. Bodies that need no
// decoding are copied straight to a writer.
type frameReader struct {
	r   *bufio.Reader
	max int
	hdr [5]byte
	buf []byte
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, bufSize), max: max}
}

// next reads a message header and returns its type and body length. The
// length is checked before anything is allocated or forwarded.
func (fr *frameReader) next() (byte, int, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, 0, err
	}
	n := int(int32(binary.BigEndian.Uint32(fr.hdr[1:])))
	if n < 4 {
		return 0, 0, &ProtocolError{Msg: fmt.Sprintf("message %q has an invalid length %d", fr.hdr[0], n)}
	}
	if n-4 > fr.max {
		return 0, 0, &ProtocolError{Msg: fmt.Sprintf("message %q of %d bytes exceeds the %d-byte limit", fr.hdr[0], n-4, fr.max), Pending: int64(n - 4)}
	}
	return fr.hdr[0], n - 4, nil
}

// body reads the current message's body (n bytes) into the reused buffer.
func (fr *frameReader) body(n int) ([]byte, error) {
	if cap(fr.buf) < n {
		fr.buf = make([]byte, n, max(n, 512))
	}
	b := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return nil, unexpected(err)
	}
	// Large one-off bodies should not pin memory for the session's life.
	if cap(fr.buf) > 1<<20 {
		fr.buf = nil
	}
	return b, nil
}

// forward writes the current header and copies its n-byte body to w
// without buffering it whole: straight from the reader's buffer, in as
// many pieces as the body arrives in. (io.CopyN would allocate a reader
// per message and take the connection's ReadFrom path.)
func (fr *frameReader) forward(w *bufio.Writer, n int) error {
	if _, err := w.Write(fr.hdr[:]); err != nil {
		return err
	}
	for n > 0 {
		k := fr.r.Buffered()
		if k == 0 {
			// Wait for more of the body.
			if _, err := fr.r.Peek(1); err != nil {
				return unexpected(err)
			}
			k = fr.r.Buffered()
		}
		b, _ := fr.r.Peek(min(k, n))
		if _, err := w.Write(b); err != nil {
			return err
		}
		fr.r.Discard(len(b))
		n -= len(b)
	}
	return nil
}

// discard reads and drops up to n bytes within d, so a peer blocked
// writing a refused message can finish and read our answer.
func (fr *frameReader) discard(conn interface{ SetReadDeadline(time.Time) error }, n int64, d time.Duration) {
	const maxDiscard = 256 << 20
	if n > maxDiscard {
		n = maxDiscard
	}
	conn.SetReadDeadline(time.Now().Add(d))
	io.CopyN(io.Discard, fr.r, n)
}

// idle reports whether nothing more is buffered: the peer may be waiting
// for us, so pending output must be flushed before the next read blocks.
func (fr *frameReader) idle() bool { return fr.r.Buffered() == 0 }

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeMsg writes a message of type typ with body b. The header is
// built in w's own free space, so writing allocates nothing.
func writeMsg(w *bufio.Writer, typ byte, b []byte) error {
	if w.Available() < 5 {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	hdr := append(w.AvailableBuffer(), typ, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(hdr[len(hdr)-4:], uint32(len(b)+4))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (string, []byte, error) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], nil
		}
	}
	return "", nil, &ProtocolError{Msg: "string without terminator"}
}

// readStartup reads an untyped startup-phase packet (length, then body).
func readStartup(r io.Reader) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(l[:])))
	if n < 8 || n > 10000 {
		return nil, &ProtocolError{Msg: fmt.Sprintf("startup packet has an invalid length %d", n)}
	}
	b := make([]byte, n-4)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, unexpected(err)
	}
	return b, nil
}
