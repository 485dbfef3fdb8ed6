package evloop

// The io_uring core: one locked OS thread relays every pair handed to it
// through one io_uring, bench/relayfloor's uring relay made fit for the
// daemon. The sequence for a pair:
//
//   - a multishot receive on each socket, into buffers the kernel picks
//     from that socket's own provided-buffer ring (a buffer group); a ring
//     per socket keeps a slow direction from taking the buffers the other
//     direction needs to make progress;
//   - each received buffer is sent as it is to the other socket, one send
//     in flight per socket so the stream keeps its order; a short send is
//     sent again from where it stopped; the buffer goes back to its ring
//     once all of it is sent;
//   - backpressure is the ring running dry: a receive that finds no buffer
//     ends (ENOBUFS) and is armed again when one comes back, so a socket
//     holds at most urBufs buffers of what it received and not yet sent;
//   - EOF (or an error) from side i ends its receive; once what it sent is
//     all written on, side 1-i is half-closed (shutdown SHUT_WR) and may
//     still answer. A send that fails ends the direction into its
//     socket, and the socket whose bytes it carried is no longer read
//     (its receive is cancelled);
//   - the pair ends once both sides are half-closed, or on cancellation:
//     its sockets are shut down, every request still in flight on them is
//     cancelled (IORING_OP_ASYNC_CANCEL by descriptor), and only when the
//     last of its completions has come are its descriptors closed, its
//     buffer groups and slot freed, and its uringRelay returned.
//
// The thread waits for completions in a raw io_uring_enter that also
// submits everything queued while it handled the last batch (see
// urRing.enter for why raw and how the runtime still stops it). Other
// goroutines hand it work through a mutex-protected queue and wake it
// through an eventfd that the ring polls with a multishot poll: one
// request armed for the core's life, a completion for every write, and no
// buffer for the kernel to fill. With IORING_SETUP_DEFER_TASKRUN the
// eventfd's wakeup, like every other, becomes a completion only when the
// thread enters to wait.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Sizes of the core. A socket receives into urBufs buffers of urBufSize
// bytes (its own buffer group), so a session holds at most 2 x 2 x 8 KiB =
// 32 KiB of received bytes, plus a page per socket for its buffer ring;
// memory is touched only as used and reused session to session. A ring
// takes at most urSessions sessions (two buffer groups each, of the 65536
// a ring may have); uringRelay returns urErrFull beyond.
const (
	urBufs      = 2
	urBufSize   = 8 << 10
	urSessions  = 16384
	urSQEntries = 512
	urCQEntries = 8192
)

// urErrFull is returned by uringRelay when the core already relays
// urSessions sessions.
var urErrFull = fmt.Errorf("start uring relay: all %d sessions in use", urSessions)

// User data of a request: the kind in bits 0-1, the side in bit 2, the
// pair's slot in bits 3-31 and its generation in bits 32-63. The wakeup
// poll's is 0.
const (
	urKindWake = iota
	urKindRecv
	urKindSend
	urKindCancel
)

func urData(kind uint64, p *urPair, side int) uint64 {
	return uint64(p.gen)<<32 | uint64(p.slot)<<3 | uint64(side)<<2 | kind
}

// urStale counts completions that named no live pair. The core frees a
// pair's slot only after its last completion, so this stays 0; the tests
// check it.
var urStale atomic.Int64

// urCore is the core's state. All of it but the queue is owned by the
// core's thread.
type urCore struct {
	r    *urRing
	slab *urSlab
	wake int // eventfd; never closed, as posters may write it at any time

	mu    sync.Mutex
	queue []urWork
	dead  error

	spare []urWork
	pairs []*urPair // by slot
	free  []int32
	gen   uint32
	woken bool  // the eventfd fired in this batch
	fatal error // the ring failed while handling this batch
}

// urWork is a request for the core: start p, or, with err set, end it.
type urWork struct {
	p   *urPair
	err error
}

// urPair is one relayed session: side 0 the client, side 1 the server.
// Bytes received from side i are sent on side 1-i.
type urPair struct {
	fd      [2]int
	refused bool // never started: the fds are still uringRelay's caller's
	slot    int32
	gen     uint32
	bufs    [2]*urBufRing // side i receives into group 2*slot+i
	// out[j] is what was received from side 1-j, still in its buffers, to
	// send on side j; out[j][0] is in flight while sending[j].
	out     [2][]urChunk
	recving [2]bool // a multishot receive is armed
	sending [2]bool
	starved [2]bool // its receive ended with ENOBUFS: armed again when a buffer comes back
	// eof[i]: side i has sent all it will (EOF, or its direction failed).
	eof [2]bool
	// shut[i]: side i was told the other is done (shutdown SHUT_WR).
	shut    [2]bool
	cancels int      // cancel requests in flight
	n       [2]int64 // bytes written on from side i
	err     error
	end     bool
	done    chan struct{}
	// dec is a decoded pair's state (decode.go); nil for a relayed one.
	// A decoded pair's out[j] holds what side 1-j received, not yet
	// given to the Handler.
	dec *urDecode
}

// urChunk is bytes [off, end) of buffer bid.
type urChunk struct {
	bid      uint16
	off, end uint32
}

var urStart struct {
	once sync.Once
	core *urCore
	err  error
}

// uringAvailable reports whether the io_uring core can run here (setup
// works, multishot receive and buffer rings are supported); it starts the
// core's thread on first success. The first call decides; later calls
// return its answer, or the error that stopped the core since.
func uringAvailable() error {
	_, err := urGet()
	return err
}

func urGet() (*urCore, error) {
	urStart.once.Do(func() {
		c := &urCore{}
		ready := make(chan error)
		go c.run(ready)
		if err := <-ready; err != nil {
			urStart.err = err
			return
		}
		urStart.core = c
	})
	if urStart.err != nil {
		return nil, urStart.err
	}
	c := urStart.core
	c.mu.Lock()
	defer c.mu.Unlock()
	return c, c.dead
}

// uringRelay relays two owned, non-blocking socket fds (side 0 the client,
// side 1 the server) until both directions end or ctx is done, then closes
// both fds; same semantics and return values as the epoll path in
// evloop.go. taken is false when the core could not take the pair (it is
// unavailable or stopped, all urSessions are in use, or the kernel
// refused the pair's buffer rings, as it does past RLIMIT_MEMLOCK for a
// process without CAP_IPC_LOCK): the fds are then still the caller's,
// untouched, and err says why.
func uringRelay(ctx context.Context, cfd, sfd int) (c Counts, err error, taken bool) {
	p, err, taken := uringRun(ctx, cfd, sfd, nil)
	if !taken {
		return Counts{}, err, false
	}
	return Counts{ClientToServer: p.n[0], ServerToClient: p.n[1]}, err, true
}

// uringRun runs a pair on the core, relayed (d nil) or decoded, until it
// ends; taken as uringRelay's.
func uringRun(ctx context.Context, cfd, sfd int, d *urDecode) (p *urPair, err error, taken bool) {
	core, err := urGet()
	if err != nil {
		return nil, err, false
	}
	p = &urPair{fd: [2]int{cfd, sfd}, done: make(chan struct{}), dec: d}
	if d != nil {
		d.out.c, d.out.p = core, p
		d.out.w = [2]outWriter{{o: &d.out, side: 0}, {o: &d.out, side: 1}}
	}
	if err := core.post(urWork{p: p}); err != nil {
		return nil, err, false
	}
	stop := context.AfterFunc(ctx, func() {
		core.post(urWork{p: p, err: ctx.Err()})
	})
	<-p.done
	stop()
	if p.refused {
		return p, p.err, false
	}
	return p, p.err, true
}

// post queues w for the core and wakes it when the queue was empty.
func (c *urCore) post(w urWork) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil {
		return c.dead
	}
	c.queue = append(c.queue, w)
	if len(c.queue) == 1 {
		one := uint64(1)
		unix.Write(c.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
	return nil
}

// run is the core's goroutine. It sets the core up on its own locked
// thread, reports the outcome on ready, and then serves the ring until the
// ring fails. The thread is never unlocked: it ends with the goroutine.
func (c *urCore) run(ready chan<- error) {
	runtime.LockOSThread() // the ring is IORING_SETUP_SINGLE_ISSUER: this thread's alone
	if err := c.setup(); err != nil {
		ready <- err
		return
	}
	// The thread keeps its P while it waits (raw io_uring_enter); one
	// more keeps the rest of the daemon's.
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	ready <- nil
	for {
		switch e := c.r.enter(1); e {
		case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			c.die(fmt.Errorf("enter io_uring: %w", e))
			return
		}
		for _, q := range c.r.reap() {
			c.complete(q)
		}
		if c.woken {
			c.woken = false
			c.runQueue()
		}
		if c.fatal != nil {
			c.die(c.fatal)
			return
		}
	}
}

// setup makes the ring, the eventfd and the buffer slab, checks that
// multishot receive into a buffer ring works, and arms the wakeup poll.
func (c *urCore) setup() error {
	r, err := urNewRing(urSQEntries, urCQEntries)
	if err != nil {
		return err
	}
	c.r = r
	c.slab = urNewSlab(r, 2*urSessions)
	if c.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		r.close()
		return fmt.Errorf("create eventfd: %w", err)
	}
	if err := c.probe(); err != nil {
		r.close()
		unix.Close(c.wake)
		return err
	}
	c.armWake()
	if c.fatal != nil {
		r.close()
		unix.Close(c.wake)
		return c.fatal
	}
	return nil
}

// probe receives one byte and an EOF from a socket pair with a multishot
// receive into buffer group 0, as the relay will; kernels before 6.0 fail
// it (buffer rings came in 5.19, multishot receive in 6.0).
func (c *urCore) probe() error {
	b, err := c.slab.group(0)
	if err != nil {
		return err
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("probe io_uring: %w", err)
	}
	defer unix.Close(sp[0]) // after its receive has ended: probe returns only then
	if _, err := unix.Write(sp[1], []byte{1}); err != nil {
		unix.Close(sp[1])
		return fmt.Errorf("probe io_uring: %w", err)
	}
	unix.Close(sp[1])
	s, err := c.r.next()
	if err != nil {
		return err
	}
	s.opcode = urOpRecv
	s.flags = urSQEBufferSelect
	s.ioprio = urRecvMultishot
	s.fd = int32(sp[0])
	s.userData = urKindRecv
	var got []urCQE
	for len(got) == 0 || got[len(got)-1].flags&urCQEFMore != 0 {
		switch e := c.r.enter(1); e {
		case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			return fmt.Errorf("probe io_uring: enter: %w", e)
		}
		got = append(got, c.r.reap()...)
	}
	for _, q := range got {
		if q.flags&urCQEFBuffer != 0 {
			b.put(uint16(q.flags >> urCQEBufferShift))
		}
	}
	if q := got[0]; q.res < 0 {
		return fmt.Errorf("probe io_uring: multishot receive: %w", unix.Errno(-q.res))
	} else if q.res != 1 || q.flags&urCQEFBuffer == 0 || q.flags&urCQEFMore == 0 {
		return errors.New("probe io_uring: the kernel does not keep a multishot receive armed (6.0)")
	}
	return nil
}

// armWake polls the eventfd, multishot.
func (c *urCore) armWake() {
	s := c.sqe()
	if s == nil {
		return
	}
	s.opcode = urOpPollAdd
	s.fd = int32(c.wake)
	s.len = urPollAddMulti
	s.opFlags = unix.POLLIN
	if cpu.IsBigEndian {
		s.opFlags = unix.POLLIN << 16 // the kernel swaps the halves of poll32_events there
	}
	s.userData = urKindWake
}

// sqe returns a submission entry to fill in, or nil when the ring failed
// (c.fatal is then set, and the core stops after this batch).
func (c *urCore) sqe() *urSQE {
	if c.fatal != nil {
		return nil
	}
	s, err := c.r.next()
	if err != nil {
		c.fatal = err
		return nil
	}
	return s
}

// runQueue serves what other goroutines posted.
func (c *urCore) runQueue() {
	c.mu.Lock()
	q := c.queue
	c.queue = c.spare[:0]
	c.mu.Unlock()
	for _, w := range q {
		if w.err == nil {
			c.start(w.p)
		} else {
			c.finish(w.p, w.err)
		}
	}
	clear(q)
	c.spare = q
}

// die ends every pair of a core whose ring failed, and refuses new ones.
// Closing the ring first cancels what is in flight and drops the
// references its requests hold to the sockets.
func (c *urCore) die(err error) {
	err = fmt.Errorf("uring relay core stopped: %w", err)
	c.r.close()
	c.mu.Lock()
	c.dead = err
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	end := func(p *urPair) {
		if p.end && p.slot < 0 {
			return
		}
		unix.Close(p.fd[0])
		unix.Close(p.fd[1])
		p.err = err
		p.end, p.slot = true, -1
		close(p.done)
	}
	for _, p := range c.pairs {
		if p != nil {
			end(p)
		}
	}
	for _, w := range q {
		if w.err == nil {
			end(w.p)
		}
	}
	c.pairs = nil
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0)-1, 1))
}

// start gives p a slot and its buffer groups and arms its receives.
func (c *urCore) start(p *urPair) {
	var slot int32
	switch {
	case len(c.free) > 0:
		slot = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case len(c.pairs) < urSessions:
		slot = int32(len(c.pairs))
		c.pairs = append(c.pairs, nil)
	default:
		c.refuse(p, urErrFull)
		return
	}
	for i := range 2 {
		b, err := c.slab.group(2*int(slot) + i)
		if err != nil {
			c.free = append(c.free, slot)
			c.refuse(p, fmt.Errorf("start uring relay: %w", err))
			return
		}
		p.bufs[i] = b
	}
	c.gen++
	p.slot, p.gen = slot, c.gen
	c.pairs[slot] = p
	c.recv(p, 0)
	c.recv(p, 1)
}

// refuse ends a pair that was never started; its fds go back to
// uringRelay's caller untouched.
func (c *urCore) refuse(p *urPair, err error) {
	p.refused = true
	p.err = err
	p.end, p.slot = true, -1
	close(p.done)
}

// complete serves one completion.
func (c *urCore) complete(q urCQE) {
	kind := q.userData & 3
	if kind == urKindWake {
		c.wakeup(q)
		return
	}
	slot, side, gen := int(q.userData>>3&(1<<29-1)), int(q.userData>>2&1), uint32(q.userData>>32)
	if slot >= len(c.pairs) || c.pairs[slot] == nil || c.pairs[slot].gen != gen {
		urStale.Add(1)
		return
	}
	p := c.pairs[slot]
	switch {
	case kind == urKindRecv && p.dec != nil:
		c.decReceived(p, side, q)
	case kind == urKindSend && p.dec != nil:
		c.decSent(p, side, q)
	case kind == urKindRecv:
		c.received(p, side, q)
	case kind == urKindSend:
		c.sent(p, side, q)
	case kind == urKindCancel:
		p.cancels--
	}
	c.check(p)
}

// wakeup notes that other goroutines posted work, and re-arms the poll if
// the kernel ended it.
func (c *urCore) wakeup(q urCQE) {
	var b [8]byte
	unix.Read(c.wake, b[:])
	c.woken = true
	if q.res < 0 {
		c.fatal = fmt.Errorf("poll eventfd: %w", unix.Errno(-q.res))
		return
	}
	if q.flags&urCQEFMore == 0 {
		c.armWake()
	}
}

// received queues what side i received for the other side, and re-arms or
// ends the receive when the kernel stopped it.
func (c *urCore) received(p *urPair, i int, q urCQE) {
	more := q.flags&urCQEFMore != 0
	if !more {
		p.recving[i] = false
	}
	if q.flags&urCQEFBuffer != 0 {
		bid := uint16(q.flags >> urCQEBufferShift)
		if q.res > 0 && !p.end && !p.eof[i] {
			p.out[1-i] = append(p.out[1-i], urChunk{bid: bid, end: uint32(q.res)})
			if !p.sending[1-i] {
				c.send(p, 1-i)
			}
		} else {
			p.bufs[i].put(bid) // not wanted any more: the pair or the direction is over
		}
	}
	if more || p.end || p.eof[i] {
		return
	}
	if err := c.recvEnded(p, i, q.res); err != nil {
		p.fail(err)
	}
}

// recvEnded re-arms side i's receive, which the kernel ended with res, or
// marks it starved (no buffer until one comes back) or over (eof; err is
// the receive's failure, nil at the end of stream).
func (c *urCore) recvEnded(p *urPair, i int, res int32) (err error) {
	switch {
	case res > 0: // the kernel stopped the multishot receive on its own
		c.recv(p, i)
	case res == -int32(unix.ENOBUFS):
		if len(p.out[1-i]) < urBufs {
			c.recv(p, i) // a buffer came back after the kernel found none
		} else {
			p.starved[i] = true
		}
	case res == 0:
		p.eof[i] = true
	default:
		p.eof[i] = true
		err = fmt.Errorf("receive: %w", unix.Errno(-res))
	}
	return err
}

// sent moves side j's queue past what a send wrote and sends the rest; a
// send that failed ends the direction into side j.
func (c *urCore) sent(p *urPair, j int, q urCQE) {
	p.sending[j] = false
	if q.res > 0 {
		p.n[1-j] += int64(q.res)
		ch := &p.out[j][0]
		ch.off += uint32(q.res)
		if ch.off >= ch.end {
			p.bufs[1-j].put(ch.bid)
			p.out[j] = p.out[j][:copy(p.out[j], p.out[j][1:])]
			if p.starved[1-j] && !p.end && !p.eof[1-j] {
				p.starved[1-j] = false
				c.recv(p, 1-j)
			}
		}
	}
	switch {
	case p.end:
		c.drop(p, j)
	case q.res <= 0:
		// Side j takes nothing more: the direction into it is over, and
		// its peer is no longer read.
		c.drop(p, j)
		if q.res < 0 {
			p.fail(fmt.Errorf("send: %w", unix.Errno(-q.res)))
		}
		if !p.eof[1-j] {
			p.eof[1-j] = true
			p.starved[1-j] = false
			if p.recving[1-j] {
				c.cancel(p, 1-j, false)
			}
		}
	case len(p.out[j]) > 0:
		c.send(p, j) // the next chunk, or the rest of a short send
	}
}

// fail notes a direction's failure; a reset or broken pipe is an end.
func (p *urPair) fail(err error) {
	if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		return
	}
	if p.err == nil {
		p.err = err
	}
}

// check half-closes a side whose peer is done and has nothing waiting for
// it, ends the pair once both directions are over, and releases an ended
// pair once nothing of it is in flight.
func (c *urCore) check(p *urPair) {
	if p.dec != nil {
		c.decCheck(p)
		return
	}
	if !p.end {
		for i := range 2 {
			j := 1 - i
			if p.eof[i] && len(p.out[j]) == 0 && !p.shut[j] {
				p.shut[j] = true
				unix.Shutdown(p.fd[j], unix.SHUT_WR)
			}
		}
		if !p.shut[0] || !p.shut[1] {
			return
		}
		c.finish(p, nil)
		return
	}
	c.release(p)
}

// finish ends a pair, with err when no earlier failure was noted (and with
// err over it when err is not nil): the requests still in flight on its
// sockets are cancelled, and release frees it once the last has completed.
func (c *urCore) finish(p *urPair, err error) {
	if p.end {
		return
	}
	p.end = true
	if err != nil {
		p.err = err
	}
	for i := range 2 {
		if p.sending[i] && p.dec == nil {
			// The kernel still reads the chunk in flight; the others go
			// back now.
			for _, ch := range p.out[i][1:] {
				p.bufs[1-i].put(ch.bid)
			}
			p.out[i] = p.out[i][:1]
		} else {
			c.drop(p, i)
		}
	}
	for i := range 2 {
		if p.recving[i] || p.sending[i] {
			// Shut down, the socket ends what is armed on it even where
			// a cancel would come too late (a request already running).
			unix.Shutdown(p.fd[i], unix.SHUT_RDWR)
			c.cancel(p, i, true)
		}
	}
	c.release(p)
}

// release closes an ended pair's sockets and frees its slot and buffer
// groups once no request of it is in flight, and returns its uringRelay.
func (c *urCore) release(p *urPair) {
	if p.recving[0] || p.recving[1] || p.sending[0] || p.sending[1] || p.cancels > 0 || p.slot < 0 {
		return
	}
	c.drop(p, 0)
	c.drop(p, 1)
	if p.dec == nil || !p.dec.ejected {
		unix.Close(p.fd[0])
		unix.Close(p.fd[1])
	}
	c.pairs[p.slot] = nil
	c.free = append(c.free, p.slot)
	p.slot = -1
	close(p.done)
}

// drop gives back every buffer queued to be sent on side j; none may be in
// flight.
func (c *urCore) drop(p *urPair, j int) {
	for _, ch := range p.out[j] {
		p.bufs[1-j].put(ch.bid)
	}
	p.out[j] = p.out[j][:0]
}

// recv arms a multishot receive on side i.
func (c *urCore) recv(p *urPair, i int) {
	s := c.sqe()
	if s == nil {
		return
	}
	s.opcode = urOpRecv
	s.flags = urSQEBufferSelect
	s.ioprio = urRecvMultishot
	s.fd = int32(p.fd[i])
	s.bufGroup = uint16(2*int(p.slot) + i)
	s.userData = urData(urKindRecv, p, i)
	p.recving[i] = true
}

// send sends side j's first chunk, from the other side's buffer.
// MSG_WAITALL has the kernel finish a short send itself; sent still
// handles one that comes back short.
func (c *urCore) send(p *urPair, j int) {
	s := c.sqe()
	if s == nil {
		return
	}
	ch := p.out[j][0]
	s.opcode = urOpSend
	s.fd = int32(p.fd[j])
	s.addr = p.bufs[1-j].addr(ch.bid, ch.off)
	s.len = ch.end - ch.off
	s.opFlags = unix.MSG_NOSIGNAL | unix.MSG_WAITALL
	s.userData = urData(urKindSend, p, j)
	p.sending[j] = true
}

// cancel cancels side i's receive, or with all every request on side i's
// socket.
func (c *urCore) cancel(p *urPair, i int, all bool) {
	s := c.sqe()
	if s == nil {
		return
	}
	s.opcode = urOpAsyncCancel
	if all {
		s.fd = int32(p.fd[i])
		s.opFlags = urCancelFD | urCancelAll
	} else {
		s.fd = -1
		s.addr = urData(urKindRecv, p, i)
	}
	s.userData = urData(urKindCancel, p, i)
	p.cancels++
}
