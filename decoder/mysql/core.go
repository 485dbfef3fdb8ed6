package mysql

// The command phase on the io_uring core (decoder/internal/evloop's
// Decode), as PostgreSQL's statement relay runs there: a plaintext session
// runs its steady state on the core's thread, which gives this file what
// each socket received; whole packets go through the relay's own
// handlers (the same command and serverPacket the goroutines run), and
// what they write is sent by the core. No goroutine wakes per command,
// and the system calls of every session are batched in the core's ring.
//
// Nothing on the core's thread may block, so a session leaves the core
// (Out.Eject), for good and exactly where it stopped, before anything
// that could:
//
//   - a command whose verdict holds it: decided on the core, it is
//     resumed on the goroutines with that decision (pre, resume);
//   - a result that must wait for a human at a row: decided on the core,
//     the row and the wait go on on the goroutines (carry, held);
//   - a LOCAL INFILE request (the client's file is read from the client
//     while the server waits) and a COM_CHANGE_USER (a login);
//   - a session recording queue with less than coreRecordRoom free
//     slots: Record would wait for the writer;
//   - a packet longer than coreMaxPacket: the core would have to buffer
//     it whole, where the goroutines stream it.
//
// TLS sessions (either hop) and the login always run on goroutines.

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/internal/evloop"
	"github.com/sluicehq/sluice/decoder/internal/rawio"
	"github.com/sluicehq/sluice/enforcer/record"
)

const (
	// coreMaxPacket is the longest packet handled on the core, which
	// buffers a packet whole before handling it.
	coreMaxPacket = 256 << 10
	// coreRecordRoom is how many free slots the session's recording
	// queue must have before the core handles a command, or, at record =
	// "full", a server packet: a command's own events (its decision, a
	// result's decision, its end) and, at "full", one per write to the
	// client that a packet causes (the packet writer's 16 KiB buffer, for
	// a packet of at most coreMaxPacket, masked), with room to spare. So
	// Record never waits on the core's thread.
	coreRecordRoom = 32
)

// useCore: run sessions on the core where it is io_uring's
// (SLUICE_RELAY_CORE=goroutine or epoll keeps them on goroutines).
var useCore = os.Getenv("SLUICE_RELAY_CORE") == ""

// errOffCore stops the core's handling of a session: it must go on with
// goroutines.
var errOffCore = errors.New("the session leaves the relay core")

// errQuit: the session ended cleanly on the core (COM_QUIT, or the
// client's end of stream).
var errQuit = errors.New("the session ended")

// coreSession is the relay's evloop.Handler.
type coreSession struct {
	r  *relay
	o  *evloop.Out
	in [2]*evloop.Feed
	// toClient counts the bytes written to the client (its CountConn
	// counts them on the goroutines).
	toClient int64
}

// coreWriter writes a side's packets through the core.
type coreWriter struct {
	h    *coreSession
	side int
}

func (w coreWriter) Write(b []byte) (int, error) {
	s := w.h.r.s
	if w.side == 0 {
		if s.p.Session.WantsWire() {
			// As the tapped connection's Write (tapWrites): recorded
			// first, and a recording that fails fails the write.
			if err := s.tap.Tap(record.DirServerToClient, b); err != nil {
				return 0, err
			}
		}
		w.h.toClient += int64(len(b))
	}
	w.h.o.Write(w.side, b)
	return len(b), nil
}

// onCore runs the command phase on the core when the session can run
// there. done is false when it must go on with goroutines: the core is
// not io_uring's, the session is not eligible, or it left the core.
func (r *relay) onCore() (done bool, err error) {
	s := r.s
	s.relayCore = "goroutines"
	if !useCore || evloop.Core() != evloop.CoreUring || s.p.Client == nil || s.rawUp == nil || s.clientTLS || s.upstreamTLS ||
		s.tap.Waiting() || r.cr.buffered() > 0 || r.sr.buffered() > 0 || s.p.Session.RecordingRoom() < coreRecordRoom {
		return false, nil
	}
	if err := r.cw.flush(); err != nil {
		return true, err
	}
	if err := r.sw.flush(); err != nil {
		return true, err
	}
	h := &coreSession{r: r, in: [2]*evloop.Feed{{}, {}}}
	r.cr.r.Reset(h.in[0])
	r.sr.r.Reset(h.in[1])
	r.cw.w.Reset(coreWriter{h, 0})
	r.sw.w.Reset(coreWriter{h, 1})
	r.core = h
	res := evloop.Decode(s.ctx, s.p.Client, s.rawUp, h)
	r.core = nil
	s.coreCounts = decoder.Counts{ClientToServer: res.In.ClientToServer, ServerToClient: h.toClient}
	if res.Taken {
		s.relayCore = "io_uring"
		if res.Ejected {
			s.relayCore = "io_uring, then goroutines: " + r.leftFor
		}
	}
	if res.Taken && !res.Ejected {
		s.close()
		if res.Err != nil && !errors.Is(res.Err, errQuit) && !errClosed(res.Err) && !errors.Is(res.Err, context.Canceled) {
			return true, res.Err
		}
		return true, nil
	}
	if res.Client == nil {
		return true, res.Err
	}
	// Back to goroutines, on the same sockets. What the client sent is
	// recorded packet by packet as it is read (recordClient), so the
	// bytes the core had not handled need nothing more here.
	cc := &decoder.CountConn{Conn: rawio.Wrap(res.Client)}
	s.later = cc
	if s.p.Session.WantsWire() {
		s.setCconn(decoder.Tapped(cc, s.tapWrites))
	} else {
		s.setCconn(cc)
	}
	s.setUp(rawio.Wrap(res.Server))
	h.in[0].Add(res.Rest[0])
	h.in[1].Add(res.Rest[1])
	h.in[0].Then(s.cconn)
	h.in[1].Then(s.up)
	r.cw.w.Reset(s.cconn)
	r.sw.w.Reset(s.up)
	return false, nil
}

// Input takes what side received and handles every whole packet the
// relay can take: the server's while an answer is awaited, else the
// client's next command.
func (h *coreSession) Input(o *evloop.Out, side int, b []byte) {
	h.o = o
	h.in[side].Add(b)
	if side == 0 && h.r.ans != nil && h.in[0].Avail() > coreMaxPacket+4 {
		// The client sends ahead of an answer in flight: the goroutines
		// stop reading it until the answer ends, so TCP stops it; the
		// core would have to buffer all of it.
		h.r.leftFor = "the client sent more than a packet ahead of an answer"
		h.settle(errOffCore)
		return
	}
	h.settle(h.handle())
}

// handle handles whole packets until none is ready.
func (h *coreSession) handle() error {
	r := h.r
	wire := r.s.p.Session.WantsWire()
	for {
		if r.ans != nil {
			ok, err := h.whole(r.sr, h.in[1], wire)
			if !ok || err != nil {
				return err
			}
			p, seq, err := r.sr.next()
			if err != nil {
				return r.endAnswer(r.serverErr(err))
			}
			if err := r.serverPacket(p, seq); err != nil {
				return err
			}
			continue
		}
		ok, err := h.whole(r.cr, h.in[0], true)
		if !ok || err != nil {
			return err
		}
		done, err := r.clientPacket()
		if err != nil {
			return err
		}
		if done {
			return errQuit
		}
	}
}

// whole reports whether pr holds a whole packet to handle on the core,
// or errOffCore when the next one must be handled on the goroutines: it
// is too long for the core (or split, which only a packet of 16 MiB is),
// or the recording queue is nearly full (checked when room is set).
func (h *coreSession) whole(pr *packetReader, f *evloop.Feed, room bool) (bool, error) {
	have := pr.buffered() + f.Avail()
	if have < 4 {
		return false, nil
	}
	hdr, _ := pr.r.Peek(4) // fills from the feed
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	if n > coreMaxPacket {
		// Too long for the core (a packet over the session's bound is
		// refused by the goroutines as well).
		h.r.leftFor = "a packet too long for the core"
		return false, errOffCore
	}
	if have < 4+n {
		return false, nil
	}
	if room && h.r.s.p.Session.RecordingRoom() < coreRecordRoom {
		h.r.leftFor = "the recording queue was nearly full"
		return false, errOffCore
	}
	return true, nil
}

// Closed ends the session at either side's end, as the goroutines do:
// an answer cut short is reported as the server's failure.
func (h *coreSession) Closed(o *evloop.Out, side int, err error) {
	h.o = o
	r := h.r
	if side == 1 && r.ans != nil {
		serr := err
		if serr == nil {
			serr = io.EOF
		}
		r.endAnswer(r.serverErr(serr))
	}
	r.cw.flush()
	r.sw.flush()
	o.End(err)
}

// settle sends what the handlers wrote and acts on how they ended.
func (h *coreSession) settle(err error) {
	r := h.r
	r.sw.flush()
	r.cw.flush()
	switch {
	case err == nil:
	case errors.Is(err, errOffCore):
		h.o.Eject()
	case errors.Is(err, errQuit):
		h.o.End(nil)
	default:
		h.o.End(err)
	}
}

// leave keeps the server packet p (its sequence id seq) for the
// goroutines, which handle it first, and returns errOffCore: the session
// leaves the core, for why.
func (r *relay) leave(p []byte, seq byte, why string) error {
	r.carry, r.carrySeq = append([]byte(nil), p...), seq
	r.leftFor = why
	return errOffCore
}

// leaveCommand keeps the client's command b, decided on the core as c
// (nil: not yet decided), for the goroutines, which handle it first, and
// returns errOffCore.
func (r *relay) leaveCommand(b []byte, c *decoder.Command, why string) error {
	r.resume, r.pre = append([]byte(nil), b...), c
	r.leftFor = why
	return errOffCore
}
