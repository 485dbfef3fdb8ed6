package postgres

// The statement relay on the io_uring core (decoder/internal/evloop's
// Decode). A plaintext session whose wire bytes are not recorded runs its
// steady state there: the core's thread gives this file what each socket
// received, whole messages go through the relay's own handlers (the same
// clientMsg and serverMsg the goroutines run), and what they write is sent
// by the core. No goroutine wakes per message, and the system calls of
// every session are batched in the core's ring.
//
// Nothing on the core's thread may block, so a session leaves the core
// (Out.Eject) before anything that could:
//
//   - a statement whose verdict holds it: decided on the core, it is
//     resumed on the goroutines with that decision (resume, pre);
//   - a result that must wait for a human at a row (a hold on
//     result.rows or result.bytes): decided on the core at that row, the
//     wait and the row go on on the goroutines (heldRow); results whose
//     rules deny or allow at a size are decided on the core;
//   - a session recording queue with less than coreRecordRoom free slots:
//     Record would wait for the writer;
//   - a message longer than coreMaxMessage: the core would have to
//     buffer it whole, where the goroutines stream it.
//
// The session then runs on goroutines to its end, exactly where the core
// stopped: the frame readers keep what they had buffered, and what the
// sockets received after the last whole message comes back with them.
// TLS sessions (either hop) and the login always run on goroutines. At
// record = "full" the wire tap records on the core what the client sent
// as each chunk arrives and what it is sent as it is written, as the
// tapped connection does on the goroutines.

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/internal/evloop"
	"github.com/sluicehq/sluice/decoder/internal/rawio"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

const (
	// coreMaxMessage is the longest message handled on the core; the
	// core buffers a message whole before handling it.
	coreMaxMessage = 256 << 10
	// coreRecordRoom is how many free slots the session's recording
	// queue must have before the core handles a message: the message's
	// own events (its decision and its end, two) and, at record =
	// "full", one per wire chunk it causes (a chunk holds up to
	// record.MaxWireChunk, 1 MiB: the bytes received, and one per
	// client-bound write, which the 64 KiB frame writers make for every
	// 64 KiB, of a message of at most coreMaxMessage), with room to
	// spare. So Record never waits on the core's thread.
	coreRecordRoom = 16
)

// useCore: run sessions on the core where it is io_uring's
// (SLUICE_RELAY_CORE=goroutine or epoll keeps them on goroutines).
var useCore = os.Getenv("SLUICE_RELAY_CORE") == ""

// errOffCore stops the core's handling of a session: it must go on with
// goroutines.
var errOffCore = errors.New("the session leaves the relay core")

// resumeMsg is a client message decided on the core and handled on the
// goroutines.
type resumeMsg struct {
	typ  byte
	body []byte
}

// coreSession is the relay's evloop.Handler.
type coreSession struct {
	r  *relay
	o  *evloop.Out
	in [2]*evloop.Feed
	// out counts the bytes written to the client (its CountConn counts
	// them on the goroutines).
	toClient int64
}

// coreWriter writes a side's messages through the core.
type coreWriter struct {
	h    *coreSession
	side int
}

func (w coreWriter) Write(b []byte) (int, error) {
	if w.side == 0 {
		if w.h.r.s.tapped {
			// As the tapped connection's Write: recorded first, and a
			// recording that fails fails the write.
			if err := w.h.r.s.tap.Tap(record.DirServerToClient, b); err != nil {
				return 0, err
			}
		}
		w.h.toClient += int64(len(b))
	}
	w.h.o.Write(w.side, b)
	return len(b), nil
}

// onCore runs the relay on the core when the session can run there. done
// is false when the relay must go on with goroutines: the core is not
// io_uring's, the session is not eligible, or it left the core.
func (r *relay) onCore() (done bool, err error) {
	s := r.s
	s.relayCore = "goroutines"
	plain := s.cconn == net.Conn(&s.client) || s.tapped && !s.tap.Waiting()
	if !useCore || evloop.Core() != evloop.CoreUring || s.rawClient == nil || s.rawUp == nil || !plain || s.upstreamTLS ||
		s.clientTLS || r.cr.r.Buffered() > 0 || r.sr.r.Buffered() > 0 || s.p.Session.RecordingRoom() < coreRecordRoom {
		return false, nil
	}
	if err := r.cw.Flush(); err != nil {
		return true, err
	}
	if err := r.sw.Flush(); err != nil {
		return true, err
	}
	h := &coreSession{r: r, in: [2]*evloop.Feed{{}, {}}}
	r.cr.r.Reset(h.in[0])
	r.sr.r.Reset(h.in[1])
	r.cw.Reset(coreWriter{h, 0})
	r.sw.Reset(coreWriter{h, 1})
	r.core = h
	res := evloop.Decode(s.ctx, s.rawClient, s.rawUp, h)
	r.core = nil
	s.coreCounts = decoder.Counts{ClientToServer: res.In.ClientToServer, ServerToClient: h.toClient}
	if res.Taken {
		s.relayCore = "io_uring"
		if res.Ejected && !r.release {
			s.relayCore = "io_uring, then goroutines: " + r.leftFor
		}
	}
	if res.Taken && !res.Ejected {
		s.close()
		if res.Err != nil && !isEOF(res.Err) && !errors.Is(res.Err, context.Canceled) {
			return true, res.Err
		}
		return true, nil
	}
	if res.Client == nil {
		return true, res.Err
	}
	// Back to goroutines, on the same sockets.
	cc := &decoder.CountConn{Conn: rawio.Wrap(res.Client)}
	s.later = cc
	if s.tapped {
		// What the client sent after the core's last Input is read
		// from the feed, past the tap: record it now.
		if err := s.tap.Tap(record.DirClientToServer, res.Rest[0]); err != nil {
			res.Client.Close()
			res.Server.Close()
			s.close()
			return true, err
		}
		s.setCconn(decoder.Tapped(cc, s.tap.Tap))
	} else {
		s.setCconn(cc)
	}
	s.rawUp = res.Server
	s.setUp(rawio.Wrap(res.Server))
	if r.release && len(res.Rest[1]) > 0 {
		s.noPool("the server sent more after the session's end")
	}
	h.in[0].Add(res.Rest[0])
	h.in[1].Add(res.Rest[1])
	h.in[0].Then(s.cconn)
	h.in[1].Then(s.up)
	r.cw.Reset(s.cconn)
	r.sw.Reset(s.up)
	return false, nil
}

// Input takes what side received and handles every whole message.
func (h *coreSession) Input(o *evloop.Out, side int, b []byte) {
	h.o = o
	h.in[side].Add(b)
	if side == 0 && h.r.s.tapped {
		// As the tapped connection's Read: every chunk, as it arrives.
		// The queue has room for it: a message is handled only with
		// coreRecordRoom free slots, and handling it and the writes
		// after it take fewer.
		if err := h.r.s.tap.Tap(record.DirClientToServer, b); err != nil {
			h.settle(err)
			return
		}
	}
	var err error
	if side == 0 {
		err = h.clientMsgs()
	} else {
		err = h.serverMsgs()
	}
	h.settle(err)
}

// Closed ends the session at either side's end, as the goroutines do.
func (h *coreSession) Closed(o *evloop.Out, side int, err error) {
	h.o = o
	h.r.cw.Flush()
	h.r.sw.Flush()
	o.End(err)
}

// settle sends what the handlers wrote and acts on how they ended.
func (h *coreSession) settle(err error) {
	r := h.r
	r.sw.Flush()
	r.cw.Flush()
	switch {
	case err == nil:
	case errors.Is(err, errOffCore):
		h.o.Eject()
	case errors.Is(err, errTerminated):
		h.o.End(nil)
	default:
		h.o.End(err)
	}
}

// errTerminated: the client sent Terminate.
var errTerminated = errors.New("terminated")

// whole reports whether fr holds a whole message, and whether the next
// message is too long to be handled on the core.
func (h *coreSession) whole(fr *frameReader, f *evloop.Feed) (ok, long bool) {
	buffered := fr.r.Buffered()
	if buffered+f.Avail() < 5 {
		return false, false
	}
	hdr, _ := fr.r.Peek(5) // fills from the feed
	buffered = fr.r.Buffered()
	n := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 {
		return true, false // next reports it
	}
	if n-4 > coreMaxMessage || n-4 > fr.max {
		// Too long for the core, or for the session: a message over
		// the limit is refused by the goroutines, which read and drop
		// the rest of it for a while so that its sender, still
		// writing, reads the refusal instead of a reset.
		return false, true
	}
	return buffered+f.Avail() >= n+1, false
}

// offCore is errOffCore when the next message (whole: ok; too long for
// the core: long) must be handled on the goroutines.
func (h *coreSession) offCore(ok, long bool) error {
	switch {
	case long:
		h.r.leftFor = "a message too long for the core"
	case ok && h.r.s.p.Session.RecordingRoom() < coreRecordRoom:
		h.r.leftFor = "the recording queue was nearly full"
	default:
		return nil
	}
	return errOffCore
}

// clientMsgs handles the client's whole messages.
func (h *coreSession) clientMsgs() error {
	r := h.r
	for {
		ok, long := h.whole(r.cr, h.in[0])
		if off := h.offCore(ok, long); off != nil {
			return off
		}
		if !ok {
			return nil
		}
		typ, n, err := r.cr.next()
		if err != nil {
			return r.endClient(err)
		}
		done, err := r.clientMsg(typ, n)
		if errors.Is(err, errOffCore) {
			return err
		}
		if err != nil {
			return r.endClient(err)
		}
		if done && r.release {
			// The server connection goes back to the pool: the
			// goroutines get the sockets back to release it.
			r.leftFor = "released"
			return errOffCore
		}
		if done {
			return errTerminated
		}
	}
}

// serverMsgs handles the server's whole messages.
func (h *coreSession) serverMsgs() error {
	r := h.r
	for {
		ok, long := h.whole(r.sr, h.in[1])
		if off := h.offCore(ok, long); off != nil {
			return off
		}
		if !ok {
			return nil
		}
		typ, n, err := r.sr.next()
		if err != nil {
			return r.serverErr(err)
		}
		if err := r.serverMsg(typ, n); err != nil {
			return err
		}
	}
}

// decided is the decision on text: the one made on the core for the
// message the goroutines resume with, else a new one.
func (r *relay) decided(text string) *decoder.Command {
	if c := r.pre; c != nil {
		r.pre = nil
		return c
	}
	return r.decide(text)
}

// heldRow is a DataRow whose result must wait for a human: decided on
// the core, waited for on the goroutines, before its body (n bytes, still
// in the frame reader) is passed or dropped.
type heldRow struct {
	it *item
	n  int
	v  enforcer.Verdict
}

// offCore reports whether the client message (typ, body b) just decided
// as c must leave the core before it goes on: its verdict holds it. The
// message is kept, with its decision, for the goroutines to resume with.
func (r *relay) offCore(c *decoder.Command, typ byte, b []byte) bool {
	if r.core == nil || c.Verdict.Action != ruleset.Hold || !r.s.p.Session.CanHold() {
		return false
	}
	r.pre = c
	r.resume = &resumeMsg{typ: typ, body: append([]byte(nil), b...)}
	r.leftFor = "a statement held for approval"
	return true
}
