// Package record writes, reads and verifies session recordings: one
// append-only file per intercepted session holding framed, checksummed and
// hash-chained events, signed with the daemon's recording key at
// checkpoints and when the session is sealed.
//
// A Writer takes events on a bounded queue and writes them from one
// background goroutine, so nothing on the query path waits on disk; a full
// queue blocks Append (backpressure) and no event is ever dropped. Open and
// NewReader read a recording back, recovering every complete frame after a
// crash; Verify checks it against the recording public key.
//
// # File format (version 1)
//
// All integers are big-endian. A recording file is
//
//	magic   "SLUICEREC1\n" (11 bytes)
//	frame 0 the header: payload = JSON Header
//	frame 1 ... n events: payload = 32-byte previous chain hash || JSON Event
//
// and every frame is
//
//	uint32 length     payload length in bytes, 1 ... MaxFrame
//	uint32 crc        CRC-32C (Castagnoli) of the payload
//	uint32 headcrc    CRC-32C of the 8 bytes above
//	payload
//
// The header check (headcrc) lets a reader tell a frame whose length field
// was altered from a frame the writer never finished: a tail shorter than
// the length a valid frame header declares is a torn write, while a frame
// header that fails its own check is damage.
//
// The hash chain: h0 = SHA-256(payload of frame 0) and hi = SHA-256(payload
// of frame i); each event payload begins with h(i-1). Removing, inserting
// or reordering frames breaks the chain at the first frame whose recorded
// previous hash no longer matches. The event's JSON carries its frame index
// as "seq", equal to i.
//
// The writer appends two kinds of integrity frames, whose events have only
// seq, time, type and sig set:
//
//   - "checkpoint", before every fsync (every Options.FsyncEvery, and on
//     Writer.Sync) when anything was written since the last one, so what
//     is durable is also signed;
//   - "seal", the last frame, written by Close.
//
// Their sig is the ed25519 signature, by the key whose SHA-256 is the
// header's key_id, over
//
//	"sluice-recording-v1\x00" || type || "\x00" || session id || "\x00" ||
//	uint64 seq || int64 time (Unix nanoseconds) || previous chain hash
//
// The type is signed so a checkpoint can never be passed off as a seal.
//
// # What Verify proves
//
// A sealed recording that verifies is exactly what the daemon wrote: every
// byte of every frame is covered by a CRC, the chain and the seal's
// signature, and nothing may follow the seal. Any altered byte is reported
// as a *FrameError naming the frame (index and byte offset).
//
// An unsealed recording (the daemon was killed, the machine lost power, or
// the file was cut) is reported as StatusInterrupted when every complete
// frame checks and the rest of the file is an unfinished frame (fewer bytes
// than a frame header, or a frame header that passes its check followed by
// fewer payload bytes than it declares) or only zeros.
// For such a recording Verify proves less, and says how much in
// Result.SignedThrough:
//
//   - frames up to and including the last valid checkpoint are authentic
//     and complete up to that point;
//   - frames after it are consistent (CRCs and chain) but unsigned: anyone
//     able to write the file could have replaced or appended them;
//   - removing trailing frames is undetectable without a seal: a file cut
//     at any frame boundary, including just before a checkpoint or the
//     seal, reads as a valid interrupted recording. Only knowledge kept
//     elsewhere (for example a session index recording that the session
//     was sealed, or how many frames it had) can detect that.
//
// # Limits
//
// A frame payload is at most MaxFrame bytes. Append splits a TypeWire
// event's Data into events of at most MaxWireChunk bytes, and cuts Text
// longer than MaxText (setting TextBytes to the original length). An event
// that still encodes to more than MaxFrame, which only huge Fields could
// cause, fails the writer with ErrFrameTooLarge.
package record

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ruleset"
)

// Event types. Which fields each type carries is documented on Event.
const (
	TypeSessionStart = "session_start"
	TypeStatement    = "statement"
	TypeResult       = "result"
	TypeError        = "error"
	TypeWire         = "wire"
	TypeSessionEnd   = "session_end"
	TypeNote         = "note"

	// TypeCheckpoint and TypeSeal are written by the Writer only; Append
	// refuses them.
	TypeCheckpoint = "checkpoint"
	TypeSeal       = "seal"
)

// Wire directions for TypeWire events.
const (
	DirClientToServer = "c2s" // bytes the client sent
	DirServerToClient = "s2c" // bytes the client received
)

// Size limits; see the package documentation.
const (
	// MaxFrame is the largest frame payload a writer writes and a reader
	// accepts.
	MaxFrame = 16 << 20
	// MaxWireChunk is the most Data one recorded TypeWire event holds;
	// Append splits larger ones.
	MaxWireChunk = 1 << 20
	// MaxText is the most Text one recorded event holds; Append cuts
	// longer text at a UTF-8 boundary and sets TextBytes.
	MaxText = 1 << 20
)

// Event is one protocol-neutral thing that happened in a session. It is a
// single flat struct so the writer can pool and encode it without
// reflection; fields that do not apply are left zero and omitted from the
// encoding.
//
// Fields by type (level is the lowest Level that keeps the field):
//
//	session_start  Fields (target, orig_dst, client, pid, uid, comm, exe,
//	               cgroup, identity level, claims ...), Verdict, Rule,
//	               Reason for the connection                   metadata
//	statement      Kind, Verdict, Rule, Reason                  metadata
//	               Text (the statement)                         commands
//	result         Rows, Bytes, DurationUS, ErrCode             metadata
//	error          ErrCode, Reason                              metadata
//	               Text (the server's message)                  commands
//	wire           Dir, Data (bytes as the client sent or
//	               received them, after masking)                full
//	session_end    Reason, Rows, Bytes, DurationUS, Fields      metadata
//	note           Reason, Fields                               metadata
//	               Text                                         commands
//	checkpoint,    Sig (written by the Writer)                  -
//	seal
//
// Text is for content that may hold data (statement text, server error
// messages, which can quote values): it is stripped below commands.
// Reason is for sentences Sluice or the ruleset wrote. Fields must not
// hold statement data; they are kept at every level.
type Event struct {
	// Seq is the event's frame index in the recording, set by the writer.
	Seq uint64 `json:"seq"`
	// Time is when the event happened; Append sets it to now when zero.
	// The writer stores it in UTC.
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	Text string    `json:"text,omitempty"`
	// TextBytes is Text's original length when Append cut it to MaxText.
	TextBytes int64  `json:"text_bytes,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Verdict   string `json:"verdict,omitempty"`
	Rule      string `json:"rule,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Rows      int64  `json:"rows,omitempty"`
	Bytes     int64  `json:"bytes,omitempty"`
	// DurationUS is a duration in microseconds.
	DurationUS int64  `json:"duration_us,omitempty"`
	ErrCode    string `json:"err_code,omitempty"`
	// Dir is DirClientToServer or DirServerToClient.
	Dir  string `json:"dir,omitempty"`
	Data []byte `json:"data,omitempty"`
	// Fields are named facts, encoded with sorted keys. Append keeps the
	// map: do not modify it after passing it to Append.
	Fields map[string]string `json:"fields,omitempty"`
	// Sig is the signature of a checkpoint or seal event.
	Sig []byte `json:"sig,omitempty"`

	// Set on the writer's internal Flush and Sync markers only.
	ctl control
	ack chan struct{}
}

type control uint8

const (
	ctlNone control = iota
	ctlFlush
	ctlSync
)

// Level is how much of a session is recorded, ordered from least to most,
// with the same meaning and order as ruleset.RecordLevel.
type Level uint8

const (
	// None records nothing: no Writer should be created.
	None Level = iota
	// Metadata records who connected where and when, every verdict, and
	// results' counts and timing.
	Metadata
	// Commands adds statement text and server error messages (Text).
	Commands
	// Full adds the wire bytes as the client sent and received them
	// (TypeWire, after masking).
	Full
)

var levelNames = [...]string{"none", "metadata", "commands", "full"}

// String returns the level's keyword.
func (l Level) String() string {
	if int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("Level(%d)", l)
}

// ParseLevel parses a level keyword: none, metadata, commands or full.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if n == s {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("parse record level: unknown level %q (want none, metadata, commands or full)", s)
}

// LevelOf converts a ruleset record level.
func LevelOf(l ruleset.RecordLevel) Level {
	switch l {
	case ruleset.RecordMetadata:
		return Metadata
	case ruleset.RecordCommands:
		return Commands
	case ruleset.RecordFull:
		return Full
	default:
		return None
	}
}

// Filter returns e reduced to what level l records, and false when l
// records nothing of it: everything at None, TypeWire below Full. Below
// Commands it clears Text and TextBytes; below Full it clears Data.
func (l Level) Filter(e Event) (Event, bool) {
	switch {
	case l == None:
		return Event{}, false
	case l < Full && e.Type == TypeWire:
		return Event{}, false
	}
	if l < Full {
		e.Data = nil
	}
	if l < Commands {
		e.Text, e.TextBytes = "", 0
	}
	return e, true
}

// Status is how a recording ended.
type Status uint8

const (
	// StatusInterrupted means the recording has no seal: the writer was
	// killed or the file was cut. Every complete frame was read.
	StatusInterrupted Status = iota
	// StatusSealed means the recording ends with its seal frame.
	StatusSealed
)

// String returns "interrupted" or "sealed".
func (s Status) String() string {
	if s == StatusSealed {
		return "sealed"
	}
	return "interrupted"
}

var (
	// ErrClosed is returned by Append, Flush and Sync after Close.
	ErrClosed = errors.New("recording is closed")
	// ErrFrameTooLarge means an event encoded to more than MaxFrame bytes.
	ErrFrameTooLarge = errors.New("event exceeds the maximum frame size")
)

// Integrity failures, wrapped in a *FrameError; test with errors.Is.
var (
	// ErrBadMagic means the file does not start with the recording magic.
	ErrBadMagic = errors.New("not a sluice recording (bad magic)")
	// ErrHeaderCRC means a frame header fails its own check: its length or
	// checksum field was altered.
	ErrHeaderCRC = errors.New("frame header checksum mismatch")
	// ErrCRC means a frame's payload does not match its checksum.
	ErrCRC = errors.New("frame checksum mismatch")
	// ErrChain means a frame's previous hash does not match the frame
	// before it: a frame was removed, inserted, reordered or rewritten.
	ErrChain = errors.New("hash chain mismatch")
	// ErrSignature means a checkpoint or seal signature does not verify.
	ErrSignature = errors.New("signature does not verify")
	// ErrWrongKey means the recording names a different signing key.
	ErrWrongKey = errors.New("recording was signed by a different key")
	// ErrMalformed means a frame passed its checksum but its content is
	// not what the writer writes.
	ErrMalformed = errors.New("malformed frame")
	// ErrTruncated means the file ends inside the magic or header frame.
	ErrTruncated = errors.New("truncated")
	// ErrTrailing means bytes follow the seal or follow the last complete
	// frame without being a torn frame.
	ErrTrailing = errors.New("trailing data")
)

// FrameError is an integrity failure at one frame. Frame 0 is the header;
// Offset is the byte offset of the frame's start (0 for the magic).
type FrameError struct {
	Frame  uint64
	Offset int64
	// Err is one of the integrity sentinels (ErrCRC, ErrChain ...).
	Err error
	// Detail says more, or is "".
	Detail string
}

func (e *FrameError) Error() string {
	s := fmt.Sprintf("frame %d at offset %d: %v", e.Frame, e.Offset, e.Err)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *FrameError) Unwrap() error { return e.Err }
