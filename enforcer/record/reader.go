package record

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// Result is what reading or verifying a recording found. After an error
// it describes the frames read before the bad one.
type Result struct {
	Header Header
	Status Status
	// Frames is the number of complete frames read, the header included.
	Frames uint64
	// Events is the number of events other than checkpoints and the seal.
	Events uint64
	// Head is the chain hash of the last complete frame.
	Head [hashSize]byte
	// SignedThrough is the index of the last checkpoint or seal whose
	// signature verified, so frames 0 ... SignedThrough are authentic; 0
	// when there is none or no key was given.
	SignedThrough uint64
	// Size is how many bytes were read.
	Size int64
	// TornBytes is how many bytes at the end of an interrupted recording
	// belong to no complete frame: a frame the writer did not finish, or
	// zeros.
	TornBytes int64
}

// Reader reads a recording frame by frame, checking magic, frame headers,
// checksums, the hash chain and, when given a key, the key id and every
// checkpoint and seal signature. It holds one frame in memory at a time.
type Reader struct {
	r    *bufio.Reader
	pub  ed25519.PublicKey
	res  Result
	next uint64 // index of the next frame
	buf  []byte
	err  error // sticky: io.EOF or a *FrameError
}

// NewReader reads the magic and header from r. With a nil pub signatures
// are not checked and SignedThrough stays 0. An integrity failure is a
// *FrameError.
func NewReader(r io.Reader, pub ed25519.PublicKey) (*Reader, error) {
	rd := &Reader{r: bufio.NewReaderSize(r, 64<<10), pub: pub}
	var m [len(magic)]byte
	n, err := io.ReadFull(rd.r, m[:])
	rd.res.Size = int64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return nil, &FrameError{Err: ErrTruncated, Detail: "the file ends inside the magic"}
	case err != nil:
		return nil, fmt.Errorf("read recording: %w", err)
	case string(m[:]) != magic:
		return nil, &FrameError{Err: ErrBadMagic}
	}
	p, torn, err := rd.readFrame()
	if err != nil {
		return nil, err
	}
	if p == nil || torn > 0 {
		return nil, rd.frameErr(int64(len(magic)), ErrTruncated, "the file ends inside the header frame")
	}
	h := &rd.res.Header
	if err := json.Unmarshal(p, h); err != nil {
		return nil, rd.frameErr(int64(len(magic)), ErrMalformed, "header: "+err.Error())
	}
	if h.Version != version {
		return nil, rd.frameErr(int64(len(magic)), ErrMalformed, fmt.Sprintf("header: unsupported version %d", h.Version))
	}
	if err := checkSessionID(h.Session); err != nil {
		return nil, rd.frameErr(int64(len(magic)), ErrMalformed, "header: "+err.Error())
	}
	if pub != nil && h.KeyID != KeyID(pub) {
		return nil, rd.frameErr(int64(len(magic)), ErrWrongKey, fmt.Sprintf("header names key %s, the given key is %s", h.KeyID, KeyID(pub)))
	}
	rd.res.Head = sha256.Sum256(p)
	rd.res.Frames = 1
	rd.next = 1
	return rd, nil
}

// Header returns the recording's header.
func (rd *Reader) Header() Header { return rd.res.Header }

// Result returns what has been read so far; after Next returned io.EOF it
// is final.
func (rd *Reader) Result() Result { return rd.res }

// Next returns the next frame's event, checkpoints and the seal included.
// It returns io.EOF after the seal, or at the end of an interrupted
// recording (every complete frame having been returned), and a
// *FrameError for an integrity failure. Errors are sticky.
func (rd *Reader) Next() (Event, error) {
	if rd.err != nil {
		return Event{}, rd.err
	}
	e, err := rd.next1()
	if err != nil {
		rd.err = err
		return Event{}, err
	}
	return e, nil
}

func (rd *Reader) next1() (Event, error) {
	start := rd.res.Size
	if rd.res.Status == StatusSealed {
		var b [1]byte
		if n, _ := io.ReadFull(rd.r, b[:]); n > 0 {
			return Event{}, rd.frameErr(start, ErrTrailing, "data after the seal")
		}
		return Event{}, io.EOF
	}
	p, torn, err := rd.readFrame()
	if err != nil {
		return Event{}, err
	}
	if p == nil {
		rd.res.TornBytes = torn
		return Event{}, io.EOF
	}
	if len(p) < hashSize {
		return Event{}, rd.frameErr(start, ErrMalformed, fmt.Sprintf("payload of %d bytes is shorter than a chain hash", len(p)))
	}
	if !bytes.Equal(p[:hashSize], rd.res.Head[:]) {
		return Event{}, rd.frameErr(start, ErrChain, fmt.Sprintf("it records previous hash %s but frame %d hashes to %s (a frame up to this one was altered, removed, inserted or reordered)",
			short(p[:hashSize]), rd.next-1, short(rd.res.Head[:])))
	}
	var e Event
	if err := json.Unmarshal(p[hashSize:], &e); err != nil {
		return Event{}, rd.frameErr(start, ErrMalformed, err.Error())
	}
	if e.Seq != rd.next {
		return Event{}, rd.frameErr(start, ErrMalformed, fmt.Sprintf("seq %d, want %d", e.Seq, rd.next))
	}
	switch e.Type {
	case "":
		return Event{}, rd.frameErr(start, ErrMalformed, "no event type")
	case TypeCheckpoint, TypeSeal:
		// The signature covers seq, time and type; nothing else may be set.
		bare := Event{Seq: e.Seq, Time: e.Time, Type: e.Type, Sig: e.Sig}
		if !bytes.Equal(appendEventJSON(nil, &bare), p[hashSize:]) {
			return Event{}, rd.frameErr(start, ErrMalformed, e.Type+" frame holds more than seq, time, type and sig")
		}
		if rd.pub != nil {
			var prev [hashSize]byte
			copy(prev[:], p)
			m := sigMessage(e.Type, rd.res.Header.Session, e.Seq, e.Time, &prev)
			if !ed25519.Verify(rd.pub, m, e.Sig) {
				return Event{}, rd.frameErr(start, ErrSignature, e.Type)
			}
			rd.res.SignedThrough = e.Seq
		}
		if e.Type == TypeSeal {
			rd.res.Status = StatusSealed
		}
	default:
		rd.res.Events++
	}
	rd.res.Head = sha256.Sum256(p)
	rd.res.Frames++
	rd.next++
	return e, nil
}

// readFrame reads one frame and checks its header and payload checksums.
// It returns the payload (valid until the next call), or a nil payload
// and the number of bytes left when the input ends at a frame boundary
// (0), inside a frame whose header checks, or in zeros.
func (rd *Reader) readFrame() ([]byte, int64, error) {
	start := rd.res.Size
	var h [frameHeader]byte
	n, err := io.ReadFull(rd.r, h[:])
	rd.res.Size += int64(n)
	switch {
	case err == io.EOF:
		return nil, 0, nil
	case err == io.ErrUnexpectedEOF:
		return nil, int64(n), nil
	case err != nil:
		return nil, 0, fmt.Errorf("read recording: %w", err)
	}
	if crc32.Checksum(h[:8], castagnoli) != binary.BigEndian.Uint32(h[8:]) {
		if h == [frameHeader]byte{} {
			// A crash can leave the file extended with zeros.
			zeros, err := rd.skipZeros()
			if err != nil {
				return nil, 0, err
			}
			if zeros {
				return nil, rd.res.Size - start, nil
			}
		}
		return nil, 0, rd.frameErr(start, ErrHeaderCRC, "")
	}
	length := binary.BigEndian.Uint32(h[:4])
	if length == 0 || length > MaxFrame {
		return nil, 0, rd.frameErr(start, ErrMalformed, fmt.Sprintf("length %d is outside 1 ... %d", length, MaxFrame))
	}
	if cap(rd.buf) < int(length) {
		rd.buf = make([]byte, length)
	}
	p := rd.buf[:length]
	n, err = io.ReadFull(rd.r, p)
	rd.res.Size += int64(n)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return nil, rd.res.Size - start, nil
	case err != nil:
		return nil, 0, fmt.Errorf("read recording: %w", err)
	}
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(h[4:]) {
		return nil, 0, rd.frameErr(start, ErrCRC, "")
	}
	return p, 0, nil
}

// skipZeros consumes the rest of the input and reports whether it was all
// zero bytes.
func (rd *Reader) skipZeros() (bool, error) {
	zeros := true
	for {
		b, err := rd.r.ReadByte()
		if err == io.EOF {
			return zeros, nil
		} else if err != nil {
			return false, fmt.Errorf("read recording: %w", err)
		}
		rd.res.Size++
		zeros = zeros && b == 0
	}
}

func (rd *Reader) frameErr(off int64, err error, detail string) *FrameError {
	return &FrameError{Frame: rd.next, Offset: off, Err: err, Detail: detail}
}

func short(h []byte) string { return hex.EncodeToString(h[:8]) }

// Recording is a recording read into memory by Open.
type Recording struct {
	res    Result
	events []Event
}

// Open reads the recording at path: its header and every complete frame,
// checking checksums and the hash chain but not signatures (see Verify).
// A recording whose writer was killed opens with StatusInterrupted. On an
// integrity failure Open returns a *FrameError together with a Recording
// holding the events before the bad frame (nil if the header is bad).
func Open(path string) (*Recording, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open recording: %w", err)
	}
	defer f.Close()
	rd, err := NewReader(f, nil)
	if err != nil {
		return nil, err
	}
	rec := &Recording{}
	for {
		e, err := rd.Next()
		if err != nil {
			rec.res = rd.Result()
			if err == io.EOF {
				err = nil
			}
			return rec, err
		}
		if e.Type != TypeCheckpoint && e.Type != TypeSeal {
			rec.events = append(rec.events, e)
		}
	}
}

// Header returns the recording's header.
func (r *Recording) Header() Header { return r.res.Header }

// Events returns the recorded events in order, without checkpoints and
// the seal. The slice is shared: do not modify it.
func (r *Recording) Events() []Event { return r.events }

// Status reports whether the recording was sealed.
func (r *Recording) Status() Status { return r.res.Status }

// Result returns what Open found (SignedThrough is 0: Open checks no
// signatures).
func (r *Recording) Result() Result { return r.res }

// Verify checks the recording at path with the recording public key pub:
// magic, every frame's header and payload checksums, the hash chain, the
// key id, and every checkpoint and seal signature. It returns an error
// for anything altered, inserted, removed or reordered, as a *FrameError
// naming the first bad frame; a nil error with Status StatusInterrupted
// for a recording that lost (only) its unfinished tail, with the
// guarantees the package documentation lists; and a nil error with
// StatusSealed for an intact, sealed recording.
func Verify(path string, pub ed25519.PublicKey) (Result, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Result{}, fmt.Errorf("verify recording: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("verify recording: %w", err)
	}
	defer f.Close()
	rd, err := NewReader(f, pub)
	if err != nil {
		return Result{}, err
	}
	for {
		if _, err := rd.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return rd.Result(), err
		}
	}
}
