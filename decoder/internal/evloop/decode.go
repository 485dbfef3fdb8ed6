package evloop

// Decoded sessions on the io_uring core. Decode hands a session's two
// sockets to the core with a Handler, a protocol decoder that runs on the
// core's thread: what each socket receives is given to the Handler as it
// arrives, and what the Handler writes is sent from the core, so the
// steady state of a decoded session costs no goroutine wake-up and no
// system call of its own (the ring batches them across sessions).
//
// A Handler must never block: the core's thread serves every session.
// What could (a hold waiting for a human, a recording queue that is full,
// a message too large to buffer whole) the Handler does not do on the
// core: it asks for its session back (Out.Eject), and the core hands the
// sockets back as net.Conns, with whatever was received and not yet given
// to the Handler, once everything the Handler wrote has been sent. The
// protocol then carries on with goroutines, exactly where it stopped.
//
// Memory: what the sockets receive goes through the core's provided
// buffers (two of 8 KiB per socket), as for opaque relays; what the
// Handler writes is queued in Go memory, two buffers per socket (one the
// kernel is sending, one filling), and the core stops giving a side's
// input to the Handler while either socket has outMax bytes or more
// queued (backpressure: the receive then runs out of buffers and stops).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Handler decodes one session on the core's thread. Its calls are never
// concurrent, and must not block.
type Handler interface {
	// Input gives the Handler what side (0 the client, 1 the server)
	// received; b is valid only during the call, and the Handler must
	// take all of it (keep what it cannot decode yet).
	Input(o *Out, side int, b []byte)
	// Closed says side will send nothing more: err is nil at its end of
	// stream, else the receive's failure. Every byte it sent was given to
	// Input first.
	Closed(o *Out, side int, err error)
}

// Out is what a Handler does with its session, on the core's thread.
type Out struct {
	c *urCore
	p *urPair
	w [2]outWriter
}

type outWriter struct {
	o    *Out
	side int
}

func (w *outWriter) Write(b []byte) (int, error) {
	w.o.Write(w.side, b)
	return len(b), nil
}

// outMax is how many bytes may wait to be sent on a socket before the
// core stops giving the Handler input.
const outMax = 256 << 10

// Write queues b (copied) to be sent on side.
func (o *Out) Write(side int, b []byte) {
	d := o.p.dec
	d.wq[side] = append(d.wq[side], b...)
}

// Writer returns an io.Writer that Writes to side.
func (o *Out) Writer(side int) io.Writer { return &o.w[side] }

// End ends the session once what was written has been sent: the core
// gives the Handler nothing more, and Decode returns err.
func (o *Out) End(err error) {
	d := o.p.dec
	if d.ending || d.ejecting {
		return
	}
	d.ending, d.endErr = true, err
}

// Eject hands the session back: once what was written has been sent,
// Decode returns the sockets as connections, with what was received after
// the Handler's last Input.
func (o *Out) Eject() {
	d := o.p.dec
	if d.ending || d.ejecting {
		return
	}
	d.ejecting = true
}

// urDecode is the decoded state of a pair.
type urDecode struct {
	h   Handler
	out Out
	// wq[j] is what the Handler wrote for side j since the last send;
	// wf[j][woff[j]:] is being sent.
	wq, wf [2][]byte
	woff   [2]int
	// closed[i]: Closed was called for side i; cerr[i] is its error.
	closed [2]bool
	cerr   [2]error
	ending bool
	endErr error
	// ejecting: hand the sockets back once nothing is in flight; rest[i]
	// holds what side i received meanwhile.
	ejecting, ejected bool
	rest              [2][]byte
	// stopped[i]: the receive on side i was cancelled by an end or an
	// eject (asked once).
	stopped [2]bool
	in      [2]int64 // bytes received from side i
}

// DecodeResult is how a decoded session ended.
type DecodeResult struct {
	// Counts are the bytes sent to the server (ClientToServer) and to the
	// client (ServerToClient) by the core; In, the bytes received from
	// the client and the server.
	Counts
	In Counts
	// Err is the Handler's End error, or the core's failure, or ctx's.
	Err error
	// Taken: the core ran the session. When it is false (the core cannot
	// run here, or could not take one more session) or Ejected is true,
	// Client and Server are the session's connections to go on with
	// (the ones given to Decode, or new ones on the same sockets), and
	// Rest[i] is what side i sent that the Handler was not given.
	Taken, Ejected bool
	Client, Server net.Conn
	Rest           [2][]byte
}

// Decode runs h over client (side 0) and server (side 1) on the io_uring
// core until h ends the session or ejects it, or ctx is done. When the
// core ran the session to its end, both connections are closed.
func Decode(ctx context.Context, client, server net.Conn, h Handler) DecodeResult {
	res := DecodeResult{Client: client, Server: server}
	if Core() != CoreUring {
		return res
	}
	cfd, err := takeFD(client)
	if err != nil {
		return res
	}
	sfd, err := takeFD(server)
	if err != nil {
		unix.Close(cfd)
		return res
	}
	client.Close()
	server.Close()
	d := &urDecode{h: h}
	p, err, taken := uringRun(ctx, cfd, sfd, d)
	res.Taken, res.Ejected = taken, d.ejected
	if taken {
		res.Counts = Counts{ClientToServer: p.n[0], ServerToClient: p.n[1]}
		res.In = Counts{ClientToServer: d.in[0], ServerToClient: d.in[1]}
		res.Rest = d.rest
	}
	if taken && !d.ejected {
		res.Err = err
		return res
	}
	// Refused, or ejected: the fds are ours again.
	var cerr, serr error
	res.Client, cerr = connFromFD(cfd)
	res.Server, serr = connFromFD(sfd)
	if cerr != nil || serr != nil {
		if res.Client != nil {
			res.Client.Close()
		}
		if res.Server != nil {
			res.Server.Close()
		}
		res.Client, res.Server = nil, nil
		res.Err = fmt.Errorf("take the session back from the relay core: %w", errors.Join(cerr, serr))
	}
	return res
}

// connFromFD makes a net.Conn of an owned socket fd, which it closes (the
// conn has a duplicate of it).
func connFromFD(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// decReceived is received for a decoded pair: side i's bytes wait in its
// buffer until deliver gives them to the Handler.
func (c *urCore) decReceived(p *urPair, i int, q urCQE) {
	d := p.dec
	more := q.flags&urCQEFMore != 0
	if !more {
		p.recving[i] = false
	}
	if q.flags&urCQEFBuffer != 0 {
		bid := uint16(q.flags >> urCQEBufferShift)
		switch {
		case q.res <= 0 || p.end || p.eof[i] || d.ending:
			p.bufs[i].put(bid)
		case d.ejecting:
			d.in[i] += int64(q.res)
			d.rest[i] = append(d.rest[i], p.bufs[i].bytes(bid, 0, uint32(q.res))...)
			p.bufs[i].put(bid)
		default:
			d.in[i] += int64(q.res)
			p.out[1-i] = append(p.out[1-i], urChunk{bid: bid, end: uint32(q.res)})
		}
	}
	if !more && !p.end && !p.eof[i] && !d.ending && !d.ejecting {
		d.cerr[i] = c.recvEnded(p, i, q.res)
	}
	c.deliver(p)
}

// queued is how many bytes wait to be sent on side j.
func (d *urDecode) queued(j int) int { return len(d.wq[j]) + len(d.wf[j]) - d.woff[j] }

// deliver gives the Handler what its sockets received, in order, while
// neither socket has outMax bytes waiting to be sent; then the end of a
// side's stream; then sends what the Handler wrote.
func (c *urCore) deliver(p *urPair) {
	d := p.dec
	for {
		progress := false
		for i := range 2 {
			for len(p.out[1-i]) > 0 && !p.end && !d.ending && !d.ejecting &&
				d.queued(0) < outMax && d.queued(1) < outMax {
				ch := p.out[1-i][0]
				p.out[1-i] = p.out[1-i][:copy(p.out[1-i], p.out[1-i][1:])]
				d.h.Input(&d.out, i, p.bufs[i].bytes(ch.bid, ch.off, ch.end))
				p.bufs[i].put(ch.bid)
				if p.starved[i] && !p.eof[i] {
					p.starved[i] = false
					c.recv(p, i)
				}
				progress = true
			}
		}
		for i := range 2 {
			if p.eof[i] && !d.closed[i] && len(p.out[1-i]) == 0 && !p.end && !d.ending && !d.ejecting {
				d.closed[i] = true
				d.h.Closed(&d.out, i, d.cerr[i])
				progress = true
			}
		}
		if !progress {
			break
		}
	}
	if d.ejecting {
		// What was received and not given to the Handler goes back with
		// the sockets, and nothing more is received.
		for i := range 2 {
			for _, ch := range p.out[1-i] {
				d.rest[i] = append(d.rest[i], p.bufs[i].bytes(ch.bid, ch.off, ch.end)...)
				p.bufs[i].put(ch.bid)
			}
			p.out[1-i] = p.out[1-i][:0]
			p.starved[i] = false
			c.stop(p, i)
		}
	}
	if d.ending {
		for i := range 2 {
			c.drop(p, 1-i)
			c.stop(p, i)
		}
	}
	if !p.end {
		c.pump(p, 0)
		c.pump(p, 1)
	}
}

// stop cancels side i's receive, once.
func (c *urCore) stop(p *urPair, i int) {
	if p.recving[i] && !p.dec.stopped[i] {
		p.dec.stopped[i] = true
		c.cancel(p, i, false)
	}
}

// pump sends what waits for side j when no send is in flight on it.
func (c *urCore) pump(p *urPair, j int) {
	d := p.dec
	if p.sending[j] {
		return
	}
	if d.woff[j] >= len(d.wf[j]) {
		if len(d.wq[j]) == 0 {
			return
		}
		d.wf[j], d.wq[j], d.woff[j] = d.wq[j], d.wf[j][:0], 0
		if cap(d.wq[j]) > 1<<20 {
			d.wq[j] = nil // a bulk result's buffer is not kept for the session's life
		}
	}
	s := c.sqe()
	if s == nil {
		return
	}
	b := d.wf[j][d.woff[j]:]
	// The buffer is Go memory, which the collector does not move; p (in
	// c.pairs until the send completes) keeps it alive.
	s.opcode = urOpSend
	s.fd = int32(p.fd[j])
	s.addr = uint64(uintptr(unsafe.Pointer(&b[0])))
	s.len = uint32(len(b))
	s.opFlags = unix.MSG_NOSIGNAL | unix.MSG_WAITALL
	s.userData = urData(urKindSend, p, j)
	p.sending[j] = true
}

// decSent is sent for a decoded pair.
func (c *urCore) decSent(p *urPair, j int, q urCQE) {
	d := p.dec
	p.sending[j] = false
	if q.res > 0 {
		p.n[1-j] += int64(q.res)
		d.woff[j] += int(q.res)
	}
	switch {
	case p.end:
	case q.res <= 0:
		// Side j takes nothing more: the session is over.
		if q.res < 0 {
			p.fail(fmt.Errorf("send: %w", unix.Errno(-q.res)))
		}
		c.finish(p, nil)
	default:
		c.deliver(p) // a queue that shrank may let input through again
	}
}

// decCheck is check for a decoded pair: an ending pair ends once what it
// wrote is sent, an ejecting one is handed back once nothing of it is in
// flight.
func (c *urCore) decCheck(p *urPair) {
	d := p.dec
	if p.end {
		c.release(p)
		return
	}
	drained := !p.sending[0] && !p.sending[1] && d.queued(0) == 0 && d.queued(1) == 0
	switch {
	case d.ending && drained:
		c.finish(p, d.endErr)
	case d.ejecting && drained && !p.recving[0] && !p.recving[1] && p.cancels == 0:
		d.ejected = true
		p.end = true
		c.release(p)
	}
}
