package k8s

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/moby/spdystream/spdy"
)

// The streams of an upgraded connection: kubectl exec, attach and
// port-forward switch their HTTP/1.1 connection to the API server to
// WebSocket (RFC 6455) carrying one of the channel.k8s.io subprotocols,
// or to SPDY/3.1. After the 101 response the proxy relays the bytes both
// ways unchanged and gives a copy of each direction to a tap, which
// decodes the framing passively and reports what each stream carried.
//
// WebSocket frames are parsed here (a small state machine over the bytes
// as they come). The WebSocket libraries in the module graph do not fit a
// passive tap: gorilla/websocket's Conn and golang.org/x/net/websocket's
// frame reader both read from a connection they own (a blocking Read,
// one side's role fixed, control frames answered on the same
// connection), so using them would need a goroutine and a pipe per
// direction, which a tap that must never block the relay cannot afford.
// SPDY frames are delimited here too, but each control frame is parsed
// by moby/spdystream's Framer, which keeps the direction's zlib header
// context.

// Upgrades: how an upgraded connection frames its streams (NewTap's
// upgrade).
const (
	UpgradeWebSocket = "websocket"
	UpgradeSPDY      = "spdy"
)

// Stream names a tap reports.
const (
	StreamStdin  = "stdin"
	StreamStdout = "stdout"
	StreamStderr = "stderr"
	// StreamError is the status channel: the server's v1 Status JSON
	// (exit code, or why the command failed); for port-forward, a
	// port's error stream.
	StreamError = "error"
	// StreamResize is the terminal size the client sent, as JSON
	// ({"Width":80,"Height":24}).
	StreamResize = "resize"
	// StreamClose is v5.channel.k8s.io's close signal: data is the
	// number of the stream the sender closes (one byte).
	StreamClose = "close"
	// StreamData is a port-forward stream's bytes.
	StreamData = "data"
	// StreamPing and StreamPong are the payloads of non-empty
	// WebSocket pings and pongs (empty ones are not reported).
	StreamPing = "ping"
	StreamPong = "pong"
	// StreamUnknown is data on a stream the tap cannot name: a
	// channel number or a SPDY streamType outside the protocol, or a
	// SPDY stream whose SYN_STREAM the tap did not see.
	StreamUnknown = "unknown"
	// StreamRaw is what the tap could not decode, as it was on the
	// wire: everything from the first byte it could not decode on.
	StreamRaw = "raw"
)

// Limits on what a tap holds.
const (
	// maxControl is the largest SPDY control frame payload buffered
	// whole (a SYN_STREAM's compressed header block); a larger one
	// ends the decoding.
	maxControl = 1 << 20
	// maxHeaderField and maxHeaderCount bound a SPDY header block once
	// decompressed: at most 64 fields of 8 KiB names and values.
	maxHeaderField = 8 << 10
	maxHeaderCount = 64
	// maxStreams is the most SPDY streams named at once; a stream
	// opened beyond it is reported as StreamUnknown.
	maxStreams = 1024
	// chunk is the most bytes unmasked or decoded at a time.
	chunk = 32 << 10
)

// An EmitFunc receives one piece of one stream's data, in order. data is
// valid only during the call. port is a port-forward stream's port, 0
// otherwise.
type EmitFunc func(stream string, port int, data []byte)

// NewTap returns a passive decoder of one direction of an upgraded exec,
// attach or port-forward connection. upgrade is UpgradeWebSocket or
// UpgradeSPDY, subprotocol the negotiated protocol (Sec-WebSocket-Protocol
// of the 101 response, or X-Stream-Protocol-Version for SPDY), toServer
// says the direction (client to server: WebSocket frames are masked).
//
// emit is called, in order and from Write only, for each piece of stream
// data (valid only during the call): stream is StreamStdin, StreamStdout,
// StreamStderr, StreamError (the status channel), StreamResize (each
// message whole), StreamClose (channel 255 of the binary protocols: v5's
// close signal, which client-go's WebSocket client sends whatever the
// version), or for port-forward StreamData or StreamError with port set;
// StreamPing and StreamPong for non-empty pings and pongs, StreamUnknown
// for a channel or streamType outside the protocol. For SPDY the
// streams are named by the streamType (and port) headers of their
// SYN_STREAM, which the client sends: a tap of the server's direction
// made by NewTap alone never sees them and reports its data as
// StreamUnknown, so use NewTapPair for SPDY.
//
// Supported: WebSocket with "" or channel.k8s.io, v2, v3, v4 and v5
// (binary channels), base64.channel.k8s.io and v4.base64.channel.k8s.io
// (base64 payloads, decoded), and "SPDY/3.1+" followed by a SPDY
// subprotocol (SPDY tunnelled in binary messages, as kubectl
// port-forward does over WebSocket); SPDY with channel.k8s.io, v2 to v4,
// and portforward.k8s.io. Empty pings and pongs are not reported, and a
// close frame ends the streams: data frames after it end the decoding.
//
// Write never returns an error and never blocks. Bytes the tap cannot
// decode (a framing error, an unknown upgrade or subprotocol, a control
// frame over 1 MiB, a data frame after a close frame) end the decoding: from
// the first of them on, the direction is reported as StreamRaw, once per
// Write. Write does not retain p. Memory is bounded: data frames are
// passed to emit in pieces as they arrive, never buffered whole; a tap
// holds at most one SPDY control frame (1 MiB) and small buffers.
//
// A tap is not safe for concurrent Writes; the two taps of one
// connection may be written concurrently.
func NewTap(upgrade, subprotocol string, toServer bool, emit func(stream string, port int, data []byte)) io.Writer {
	return newTap(upgrade, subprotocol, toServer, emit, &spdyStreams{})
}

// NewTapPair returns the two taps of one upgraded connection, as NewTap
// would, sharing what the client's direction says of each SPDY stream so
// that the server's direction names its streams too. toServerEmit gets
// the client's streams (stdin, resize, port-forward data), toClientEmit
// the server's.
//
// Write the client's bytes to toServer before relaying them upstream:
// the server can then not answer on a stream before its tap knows the
// stream's name. Data of a stream not yet named is reported as
// StreamUnknown.
func NewTapPair(upgrade, subprotocol string, toServerEmit, toClientEmit func(stream string, port int, data []byte)) (toServer, toClient io.Writer) {
	names := &spdyStreams{}
	return newTap(upgrade, subprotocol, true, toServerEmit, names), newTap(upgrade, subprotocol, false, toClientEmit, names)
}

func newTap(upgrade, subprotocol string, toServer bool, emit EmitFunc, names *spdyStreams) *tap {
	t := &tap{emit: emit}
	switch upgrade {
	case UpgradeWebSocket:
		if inner, ok := strings.CutPrefix(subprotocol, "SPDY/3.1+"); ok {
			if spdyProtocols[inner] {
				s := newSPDYDecoder(emit, names)
				t.dec = &wsDecoder{toServer: toServer, emit: emit, msg: &tunnelSink{s: s}}
			}
		} else if p, ok := wsProtocols[subprotocol]; ok {
			t.dec = &wsDecoder{toServer: toServer, emit: emit, msg: &channelSink{holder: holder{emit: emit}, base64: p.base64}}
		}
	case UpgradeSPDY:
		if spdyProtocols[subprotocol] {
			t.dec = newSPDYDecoder(emit, names)
		}
	}
	return t
}

// wsProtocol is how a WebSocket subprotocol carries its channels.
// Channel 255 is the close signal in every binary protocol: v5 defines
// it, and client-go's WebSocket client sends it whatever the version.
type wsProtocol struct {
	base64 bool // channel as an ASCII digit, payload base64
}

var wsProtocols = map[string]wsProtocol{
	"":                         {},
	"channel.k8s.io":           {},
	"v2.channel.k8s.io":        {},
	"v3.channel.k8s.io":        {},
	"v4.channel.k8s.io":        {},
	"v5.channel.k8s.io":        {},
	"base64.channel.k8s.io":    {base64: true},
	"v4.base64.channel.k8s.io": {base64: true},
}

// spdyProtocols are the SPDY subprotocols a tap decodes.
var spdyProtocols = map[string]bool{
	"channel.k8s.io": true, "v2.channel.k8s.io": true, "v3.channel.k8s.io": true, "v4.channel.k8s.io": true,
	"v5.channel.k8s.io": true, "portforward.k8s.io": true,
}

// framing is one framing's state machine. feed decodes p; on an error,
// the undecodable bytes are pre followed by p[at:].
type framing interface {
	feed(p []byte) (pre []byte, at int, err error)
}

// tap is what NewTap returns.
type tap struct {
	emit   EmitFunc
	dec    framing // nil: nothing is decoded
	failed bool
}

// Write implements io.Writer; see NewTap.
func (t *tap) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if t.failed || t.dec == nil {
		t.failed = true
		t.emit(StreamRaw, 0, p)
		return len(p), nil
	}
	pre, at, err := t.dec.feed(p)
	if err != nil {
		t.failed = true
		raw := p[at:]
		if len(pre) > 0 {
			raw = append(slices.Clip(pre), raw...)
		}
		if len(raw) > 0 {
			t.emit(StreamRaw, 0, raw)
		}
	}
	return len(p), nil
}

// Errors that end a tap's decoding. They are not returned to the caller
// (the bytes are reported as StreamRaw); they say why, and TestTapErrors
// checks which.
var (
	errFrame     = errors.New("malformed frame")
	errAfterEnd  = errors.New("bytes after the end of the stream")
	errTooLarge  = errors.New("control frame over the size cap")
	errBadBase64 = errors.New("invalid base64 payload")
)

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// messageSink takes the payload of WebSocket data messages.
type messageSink interface {
	start()
	data(b []byte) error
	end() error
}

// wsDecoder decodes WebSocket frames (RFC 6455 section 5) as they come.
type wsDecoder struct {
	toServer bool
	emit     EmitFunc
	msg      messageSink

	hdr  [14]byte // the frame header being read
	nhdr int

	inFrame bool
	opcode  byte
	fin     bool
	masked  bool
	key     [4]byte
	left    uint64 // payload bytes still to come
	pos     uint64 // payload bytes seen, for the mask
	ctl     []byte // a control frame's payload (at most 125 bytes)
	inMsg   bool   // a data message awaits its continuation
	closed  bool   // a close frame was seen
	scratch []byte
}

// hdrLen is the length of the header whose first two bytes are read.
func (d *wsDecoder) hdrLen() int {
	n := 2
	switch d.hdr[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if d.hdr[1]&0x80 != 0 {
		n += 4
	}
	return n
}

func (d *wsDecoder) feed(p []byte) ([]byte, int, error) {
	i := 0
	for i < len(p) {
		if !d.inFrame {
			need := 2
			if d.nhdr >= 2 {
				need = d.hdrLen()
			}
			for d.nhdr < need && i < len(p) {
				d.hdr[d.nhdr] = p[i]
				d.nhdr++
				i++
				if d.nhdr == 2 {
					need = d.hdrLen()
				}
			}
			if d.nhdr < need {
				return nil, 0, nil
			}
			if err := d.startFrame(); err != nil {
				return d.hdr[:d.nhdr], i, err
			}
			d.nhdr = 0
			if d.left == 0 {
				if err := d.endFrame(); err != nil {
					return nil, i, err
				}
			}
			continue
		}
		n := len(p) - i
		if uint64(n) > d.left {
			n = int(d.left)
		}
		if err := d.payload(p[i : i+n]); err != nil {
			return nil, i, err
		}
		i += n
		if d.left == 0 {
			if err := d.endFrame(); err != nil {
				return nil, i, err
			}
		}
	}
	return nil, 0, nil
}

// startFrame checks the header in d.hdr and starts its frame.
func (d *wsDecoder) startFrame() error {
	b0, b1 := d.hdr[0], d.hdr[1]
	if b0&0x70 != 0 {
		return fmt.Errorf("websocket frame: reserved bits set (no extension is negotiated): %w", errFrame)
	}
	d.fin, d.opcode, d.masked = b0&0x80 != 0, b0&0x0f, b1&0x80 != 0
	if d.masked != d.toServer {
		return fmt.Errorf("websocket frame: masked is %v, the direction wants %v: %w", d.masked, d.toServer, errFrame)
	}
	at := 2
	switch n := b1 & 0x7f; n {
	case 126:
		d.left = uint64(binary.BigEndian.Uint16(d.hdr[2:]))
		at += 2
	case 127:
		d.left = binary.BigEndian.Uint64(d.hdr[2:])
		at += 8
		if d.left>>63 != 0 {
			return fmt.Errorf("websocket frame: 64-bit length with its high bit set: %w", errFrame)
		}
	default:
		d.left = uint64(n)
	}
	if d.masked {
		copy(d.key[:], d.hdr[at:at+4])
	}
	d.pos = 0
	if d.closed && d.opcode < opClose {
		// After a close frame only control frames may follow (servers
		// send a second close as they shut the connection).
		return fmt.Errorf("websocket frame: data after a close frame: %w", errAfterEnd)
	}
	switch d.opcode {
	case opText, opBinary:
		if d.inMsg {
			return fmt.Errorf("websocket frame: a new message before the last one's final frame: %w", errFrame)
		}
		d.inMsg = true
		d.msg.start()
	case opContinuation:
		if !d.inMsg {
			return fmt.Errorf("websocket frame: continuation without a message: %w", errFrame)
		}
	case opClose, opPing, opPong:
		if !d.fin || d.left > 125 {
			return fmt.Errorf("websocket frame: control frame fragmented or over 125 bytes: %w", errFrame)
		}
		d.ctl = d.ctl[:0]
	default:
		return fmt.Errorf("websocket frame: opcode %#x: %w", d.opcode, errFrame)
	}
	d.inFrame = true
	return nil
}

// payload takes the next bytes of the current frame's payload.
func (d *wsDecoder) payload(b []byte) error {
	d.left -= uint64(len(b))
	for len(b) > 0 {
		piece := b
		if d.masked {
			n := min(len(b), chunk)
			if cap(d.scratch) < n {
				d.scratch = make([]byte, chunk)
			}
			piece = d.scratch[:n]
			for j := range piece {
				piece[j] = b[j] ^ d.key[(d.pos+uint64(j))&3]
			}
		}
		b = b[len(piece):]
		d.pos += uint64(len(piece))
		if d.opcode >= opClose {
			d.ctl = append(d.ctl, piece...)
			continue
		}
		if err := d.msg.data(piece); err != nil {
			return err
		}
	}
	return nil
}

// endFrame ends the current frame, whose payload has all come.
func (d *wsDecoder) endFrame() error {
	d.inFrame = false
	switch d.opcode {
	case opClose:
		d.closed = true
	case opPing:
		if len(d.ctl) > 0 {
			d.emit(StreamPing, 0, d.ctl)
		}
	case opPong:
		if len(d.ctl) > 0 {
			d.emit(StreamPong, 0, d.ctl)
		}
	default:
		if d.fin {
			d.inMsg = false
			return d.msg.end()
		}
	}
	return nil
}

// holder passes one message's data on to emit, holding a message of a
// stream whose pieces mean something only whole (resize's JSON, close's
// stream number) to emit it at once, up to maxWhole bytes.
type holder struct {
	emit   EmitFunc
	stream string
	port   int
	hold   bool
	held   []byte
}

// maxWhole is the most bytes of a resize or close message held to be
// emitted whole; a longer one is emitted in pieces.
const maxWhole = 4 << 10

func (h *holder) begin(stream string, port int) {
	h.stream, h.port = stream, port
	h.hold = stream == StreamResize || stream == StreamClose
	h.held = h.held[:0]
}

func (h *holder) put(b []byte) {
	if h.hold {
		if len(h.held)+len(b) <= maxWhole {
			h.held = append(h.held, b...)
			return
		}
		h.end()
		h.hold = false
	}
	if len(b) > 0 {
		h.emit(h.stream, h.port, b)
	}
}

// end emits what is held.
func (h *holder) end() {
	if len(h.held) > 0 {
		h.emit(h.stream, h.port, h.held)
		h.held = h.held[:0]
	}
}

// channelSink decodes channel.k8s.io messages: a channel number (a byte,
// or an ASCII digit in the base64 protocols), then the channel's data.
type channelSink struct {
	holder
	base64 bool

	first  bool // the message's channel is still to come
	stream string
	carry  [4]byte // base64 characters not yet decoded
	ncarry int
	padded bool // the message's base64 has ended with padding
	out    []byte
}

func (s *channelSink) start() { s.first, s.ncarry, s.padded = true, 0, false }

func (s *channelSink) data(b []byte) error {
	if s.first {
		s.first = false
		c := b[0]
		b = b[1:]
		if s.base64 {
			if c < '0' || c > '9' {
				return fmt.Errorf("base64 channel %q is not a digit: %w", c, errFrame)
			}
			c -= '0'
		}
		s.begin(s.channel(c), 0)
	}
	if !s.base64 {
		s.put(b)
		return nil
	}
	for len(b) > 0 {
		// Decode whole groups of four characters, at most chunk bytes
		// of output at a time.
		if s.ncarry > 0 {
			n := copy(s.carry[s.ncarry:], b)
			s.ncarry += n
			b = b[n:]
			if s.ncarry < 4 {
				return nil
			}
			if err := s.decode(s.carry[:4]); err != nil {
				return err
			}
			s.ncarry = 0
			continue
		}
		n := min(len(b), chunk/3*4) &^ 3
		if n == 0 {
			s.ncarry = copy(s.carry[:], b)
			return nil
		}
		if err := s.decode(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// decode decodes and emits whole groups of base64 characters. Padding
// ends the message's base64 however its pieces were cut.
func (s *channelSink) decode(b []byte) error {
	if s.padded {
		return fmt.Errorf("channel %s: data after padding: %w", s.stream, errBadBase64)
	}
	if bytes.ContainsAny(b, "\r\n") {
		// encoding/base64 skips line breaks, which would make groups
		// of four depend on where the pieces were cut; Kubernetes
		// never sends them.
		return fmt.Errorf("channel %s: line break in base64: %w", s.stream, errBadBase64)
	}
	s.padded = b[len(b)-1] == '='
	if cap(s.out) < base64.StdEncoding.DecodedLen(len(b)) {
		s.out = make([]byte, max(base64.StdEncoding.DecodedLen(len(b)), 3*64))
	}
	n, err := base64.StdEncoding.Decode(s.out[:cap(s.out)], b)
	if err != nil {
		return fmt.Errorf("channel %s: %w", s.stream, errBadBase64)
	}
	s.put(s.out[:n])
	return nil
}

func (s *channelSink) end() error {
	if s.ncarry > 0 {
		// Unpadded base64 at the end of the message.
		if s.padded || bytes.ContainsAny(s.carry[:s.ncarry], "\r\n") {
			return fmt.Errorf("channel %s: data after padding: %w", s.stream, errBadBase64)
		}
		if cap(s.out) < 3 {
			s.out = make([]byte, 3*64)
		}
		n, err := base64.RawStdEncoding.Decode(s.out[:cap(s.out)], s.carry[:s.ncarry])
		if err != nil {
			return fmt.Errorf("channel %s: %w", s.stream, errBadBase64)
		}
		s.ncarry = 0
		s.put(s.out[:n])
	}
	s.holder.end()
	return nil
}

// channel names a channel number (remotecommand's StreamStdIn ...).
func (s *channelSink) channel(c byte) string {
	switch c {
	case 0:
		return StreamStdin
	case 1:
		return StreamStdout
	case 2:
		return StreamStderr
	case 3:
		return StreamError
	case 4:
		return StreamResize
	case 255:
		if !s.base64 {
			return StreamClose
		}
	}
	return StreamUnknown
}

// tunnelSink feeds the payload of binary messages, SPDY tunnelled over
// WebSocket, to a SPDY decoder.
type tunnelSink struct{ s *spdyDecoder }

func (t *tunnelSink) start()     {}
func (t *tunnelSink) end() error { return nil }
func (t *tunnelSink) data(b []byte) error {
	_, _, err := t.s.feed(b)
	return err
}

// spdyStream is what a SYN_STREAM said of a stream.
type spdyStream struct {
	name string
	port int
}

// spdyStreams names the SPDY streams of one connection, shared by its
// two taps. It keeps the last maxStreams streams opened: a stream is not
// forgotten when it ends (FIN, RST_STREAM), since the other direction
// may still be passing on what was sent before the end, but the oldest
// goes when a port-forward has opened more.
type spdyStreams struct {
	mu    sync.Mutex
	m     map[spdy.StreamId]spdyStream
	order []spdy.StreamId // the streams in m, oldest first
}

func (n *spdyStreams) open(id spdy.StreamId, s spdyStream) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[spdy.StreamId]spdyStream{}
	}
	if _, ok := n.m[id]; !ok {
		if len(n.order) >= maxStreams {
			delete(n.m, n.order[0])
			n.order = append(n.order[:0], n.order[1:]...)
		}
		n.order = append(n.order, id)
	}
	n.m[id] = s
}

func (n *spdyStreams) get(id spdy.StreamId) (string, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.m[id]; ok {
		return s.name, s.port
	}
	return StreamUnknown, 0
}

// spdyNames are the streamType values a stream is named by.
var spdyNames = map[string]bool{
	StreamStdin: true, StreamStdout: true, StreamStderr: true, StreamError: true, StreamResize: true, StreamData: true,
}

// spdyDecoder decodes SPDY/3.1 frames as they come: data frames are
// passed on in pieces, control frames are buffered whole and parsed by
// a spdy.Framer, which keeps the direction's header decompression.
type spdyDecoder struct {
	holder
	names  *spdyStreams
	framer *spdy.Framer
	in     feeder

	hdr  [8]byte
	nhdr int

	ctl     []byte // the control frame being read, header included
	ctlLeft int

	data     bool // in a data frame
	left     int
	failedAt error
}

func newSPDYDecoder(emit EmitFunc, names *spdyStreams) *spdyDecoder {
	d := &spdyDecoder{holder: holder{emit: emit}, names: names}
	// NewFramerWithOptions fails only if zlib's compressor cannot be
	// made for the fixed dictionary and level.
	d.framer, _ = spdy.NewFramerWithOptions(io.Discard, &d.in,
		spdy.WithMaxControlFramePayloadSize(maxControl),
		spdy.WithMaxHeaderFieldSize(maxHeaderField),
		spdy.WithMaxHeaderCount(maxHeaderCount))
	return d
}

// feeder is the Framer's reader: the control frame being parsed.
type feeder struct{ b []byte }

func (f *feeder) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func (d *spdyDecoder) feed(p []byte) ([]byte, int, error) {
	if d.failedAt != nil {
		return nil, 0, d.failedAt
	}
	i := 0
	for i < len(p) {
		switch {
		case d.ctlLeft > 0:
			n := min(d.ctlLeft, len(p)-i)
			d.ctl = append(d.ctl, p[i:i+n]...)
			d.ctlLeft -= n
			i += n
			if d.ctlLeft == 0 {
				if err := d.control(); err != nil {
					d.failedAt = err
					return d.ctl, i, err
				}
			}
		case d.data:
			n := min(d.left, len(p)-i)
			d.put(p[i : i+n])
			d.left -= n
			i += n
			if d.left == 0 {
				d.endData()
			}
		default:
			n := copy(d.hdr[d.nhdr:], p[i:])
			d.nhdr += n
			i += n
			if d.nhdr < len(d.hdr) {
				return nil, 0, nil
			}
			d.nhdr = 0
			length := int(binary.BigEndian.Uint32(d.hdr[4:]) & 0xffffff)
			if d.hdr[0]&0x80 != 0 {
				if length > maxControl {
					d.failedAt = errTooLarge
					return d.hdr[:], i, errTooLarge
				}
				if cap(d.ctl) < len(d.hdr)+length {
					d.ctl = make([]byte, 0, len(d.hdr)+length)
				}
				d.ctl = append(d.ctl[:0], d.hdr[:]...)
				d.ctlLeft = length
				if length == 0 {
					if err := d.control(); err != nil {
						d.failedAt = err
						return d.ctl, i, err
					}
				}
				continue
			}
			id := spdy.StreamId(binary.BigEndian.Uint32(d.hdr[:4]) & 0x7fffffff)
			if id == 0 {
				d.failedAt = fmt.Errorf("spdy data frame on stream 0: %w", errFrame)
				return d.hdr[:], i, d.failedAt
			}
			d.left = length
			d.begin(d.names.get(id))
			d.data = true
			if length == 0 {
				d.endData()
			}
		}
	}
	return nil, 0, nil
}

func (d *spdyDecoder) endData() {
	d.data = false
	d.end()
}

// control parses the buffered control frame.
func (d *spdyDecoder) control() (err error) {
	d.in.b = d.ctl
	defer func() {
		// The Framer is not ours: a panic on hostile input ends the
		// decoding like any malformed frame.
		if r := recover(); r != nil {
			err = fmt.Errorf("spdy control frame: %v: %w", r, errFrame)
		}
	}()
	f, err := d.framer.ReadFrame()
	if err != nil {
		return fmt.Errorf("spdy control frame: %v: %w", err, errFrame)
	}
	if cap(d.ctl) > 64<<10 {
		d.ctl = nil // a large frame's buffer is not kept
	}
	// Of the control frames only a SYN_STREAM says anything of the
	// streams; SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS
	// and WINDOW_UPDATE are parsed (keeping the header context) and let
	// go.
	if f, ok := f.(*spdy.SynStreamFrame); ok {
		s := spdyStream{name: StreamUnknown}
		if t := f.Headers.Get("streamType"); spdyNames[t] {
			s.name = t
		}
		if p, err := strconv.Atoi(f.Headers.Get("port")); err == nil && p > 0 && p < 65536 {
			s.port = p
		}
		d.names.open(f.StreamId, s)
	}
	return nil
}
