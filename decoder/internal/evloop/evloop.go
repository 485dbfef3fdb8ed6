// Package evloop is the relay core that does not spend a goroutine per
// direction. Relay hands two sockets to one of two cores:
//
//   - uring (uring.go), where the kernel has io_uring with multishot
//     receive and buffer rings: one locked thread runs one ring for every
//     relayed session, each socket receiving into its own small buffer
//     ring, and every batch of completions ends in one io_uring_enter that
//     submits what the batch produced and waits for the next. At pgbench
//     -S -c 8 this relay makes about one system call per transaction.
//   - epoll (this file) elsewhere: event loops, each running its own
//     edge-triggered epoll set over many sessions' sockets, that read from
//     one side and write to the other with no goroutine handoff and no read
//     retried after a short one. A loop waits for its set through Go's own
//     poller (the epoll descriptor is itself pollable), so it takes no
//     thread of its own.
//
// Why not Go's poller: a goroutine that reads a socket must try the read
// before it may wait (the poller forgets readiness when a wait begins), so
// every message costs a read that finds nothing (EAGAIN) and a park and a
// wake of the goroutine. bench/relayfloor measures these designs with
// nothing else running (FLOOR=1 bench/suite.sh); this package is those
// floors made fit for the daemon: half-closes, backpressure, cancellation,
// a bounded buffer per blocked direction, and the Go runtime's
// stop-the-world honoured by a thread that sleeps in the kernel.
//
// No maintained Go library fits here: gnet and evio own the listener and
// the connection's whole life, while a Sluice flow is accepted, matched,
// dialled and decided by the daemon first and only then relayed; and no
// io_uring binding is served by this project's module proxy.
package evloop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Counts are the bytes relayed each way.
type Counts struct {
	ClientToServer int64
	ServerToClient int64
}

// Relay relays client and server on an event loop until both directions
// have ended or ctx is done, then closes both connections, as
// decoder.Relay does: an EOF from one side becomes a half-close
// (shutdown SHUT_WR) of the other, which may still answer. ok is false
// when the connections are not sockets this package can take (nothing was
// done to them then; the caller relays them its own way).
//
// The error is the first failure other than a normal end of stream (EOF,
// a reset, a broken pipe), or ctx's error.
func Relay(ctx context.Context, client, server net.Conn) (c Counts, err error, ok bool) {
	return relayOn(ctx, Core(), client, server)
}

// relayOn is Relay on the given core.
func relayOn(ctx context.Context, core string, client, server net.Conn) (c Counts, err error, ok bool) {
	var l *loop
	useUring := core == CoreUring
	if !useUring {
		if l = pick(); l == nil {
			return c, nil, false
		}
	}
	cfd, cerr := takeFD(client)
	if cerr != nil {
		return c, nil, false
	}
	sfd, serr := takeFD(server)
	if serr != nil {
		unix.Close(cfd)
		return c, nil, false
	}
	// The loop owns the duplicates now; the originals leave Go's poller.
	client.Close()
	server.Close()
	if useUring {
		c, err, taken := uringRelay(ctx, cfd, sfd)
		if taken {
			return c, err, true
		}
		// The ring could not take this pair (see uringRelay): the
		// epoll core relays it instead.
		uringDeclined.Add(1)
		if l = pick(); l == nil {
			unix.Close(cfd)
			unix.Close(sfd)
			return c, fmt.Errorf("relay: %w; and no epoll loop: %w", err, loopsErr), true
		}
	}

	p := &pair{fd: [2]int{cfd, sfd}, done: make(chan struct{})}
	if err := l.post(func() { l.add(p) }); err != nil {
		unix.Close(cfd)
		unix.Close(sfd)
		return c, err, true
	}
	stop := context.AfterFunc(ctx, func() {
		l.post(func() { l.finish(p, ctx.Err()) })
	})
	<-p.done
	stop()
	return Counts{ClientToServer: p.n[0], ServerToClient: p.n[1]}, p.err, true
}

// uringDeclined counts the relays the io_uring core could not take, which
// the epoll core relayed instead.
var uringDeclined atomic.Int64

// The relay cores Relay can run on.
const (
	CoreEpoll = "epoll" // epoll sets waited for through Go's poller
	CoreUring = "uring" // one thread's io_uring ring
)

var (
	coreOnce sync.Once
	core     string
)

// Core returns the core Relay uses: io_uring where it works here (the
// kernel has it enabled, with multishot receive and buffer rings: Linux
// 6.0 or later), else epoll; SLUICE_RELAY_CORE=epoll chooses epoll.
func Core() string {
	coreOnce.Do(func() {
		core = CoreEpoll
		if os.Getenv("SLUICE_RELAY_CORE") != CoreEpoll && uringAvailable() == nil {
			core = CoreUring
		}
	})
	return core
}

// takeFD returns a duplicate of c's socket descriptor (close-on-exec,
// sharing its non-blocking file status), or an error when c exposes none.
func takeFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if fl, err := unix.FcntlInt(uintptr(nfd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		unix.Close(nfd)
		return -1, errors.New("socket is not non-blocking")
	}
	return nfd, nil
}

// pair is one relayed connection: side 0 the client, side 1 the server.
// Bytes read from side i are written to side 1-i.
type pair struct {
	fd   [2]int
	slot int32
	// pend[i] holds bytes for side i that it had no room for; while it is
	// not empty, side 1-i is not read (backpressure).
	pend [2][]byte
	// eof[i]: side i has sent all it will (EOF, or its direction failed).
	eof [2]bool
	// shut[i]: side i was told the other is done (shutdown SHUT_WR).
	shut [2]bool
	// ev[i] is side i's registered interest; 0 when not registered.
	ev   [2]uint32
	n    [2]int64 // bytes written on from side i
	err  error
	end  bool
	done chan struct{}
}

// A loop runs one epoll set. Its state is touched only by its goroutine;
// other goroutines post functions for it to run.
type loop struct {
	ep, wake int
	epf      *os.File

	mu    sync.Mutex
	queue []func()
	dead  error

	pairs []*pair // by slot
	free  []int32
	again []side
	buf   []byte
	evs   []unix.EpollEvent
}

var (
	loopsOnce sync.Once
	loops     []*loop
	loopsErr  error
	next      struct {
		sync.Mutex
		i int
	}
)

// pick returns the loop for a new relay, in turn, or nil when the loops
// could not be started.
func pick() *loop {
	loopsOnce.Do(func() {
		n := max(runtime.GOMAXPROCS(0), 1)
		for range n {
			l, err := newLoop()
			if err != nil {
				loopsErr = err
				return
			}
			loops = append(loops, l)
		}
	})
	if len(loops) == 0 {
		return nil
	}
	next.Lock()
	l := loops[next.i%len(loops)]
	next.i++
	next.Unlock()
	return l
}

// Available reports whether the loops could be started (epoll and eventfd
// work here).
func Available() error {
	pick()
	if len(loops) == 0 {
		return loopsErr
	}
	return nil
}

func newLoop() (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	// Non-blocking, the epoll descriptor goes into Go's poller, which
	// wakes the loop's goroutine when the set has a ready event.
	if err := unix.SetNonblock(ep, true); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	l := &loop{ep: ep, wake: wake, epf: os.NewFile(uintptr(ep), "epoll"), buf: make([]byte, 64<<10), evs: make([]unix.EpollEvent, 128)}
	rc, err := l.epf.SyscallConn()
	if err != nil {
		l.epf.Close()
		unix.Close(wake)
		return nil, err
	}
	go l.run(rc)
	return l, nil
}

// post has the loop run f soon.
func (l *loop) post(f func()) error {
	l.mu.Lock()
	if l.dead != nil {
		l.mu.Unlock()
		return l.dead
	}
	l.queue = append(l.queue, f)
	first := len(l.queue) == 1
	l.mu.Unlock()
	if first {
		one := uint64(1)
		unix.Write(l.wake, (*[8]byte)(unsafe.Pointer(&one))[:])
	}
	return nil
}

func (l *loop) run(rc syscall.RawConn) {
	err := rc.Read(func(uintptr) bool {
		for {
			n, err := unix.EpollWait(l.ep, l.evs, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				l.fail(fmt.Errorf("epoll_wait: %w", err))
				return true
			}
			l.events(n)
			if n < len(l.evs) {
				// Every ready event is taken, and the registrations
				// are edge-triggered: whatever becomes ready from now
				// on wakes the set's waiters, Go's poller among them.
				return false
			}
		}
	})
	if err != nil {
		l.fail(fmt.Errorf("relay event loop: %w", err))
	}
}

// events serves the first n of l.evs.
func (l *loop) events(n int) {
	for _, ev := range l.evs[:n] {
		if ev.Fd < 0 {
			l.runQueue()
			continue
		}
		slot, side := ev.Fd>>1, int(ev.Fd&1)
		if int(slot) >= len(l.pairs) || l.pairs[slot] == nil {
			continue // ended earlier in this batch
		}
		l.handle(l.pairs[slot], side, ev.Events)
	}
	l.rereads()
}

// fail ends every relay of a loop that cannot go on, and refuses new ones.
func (l *loop) fail(err error) {
	l.mu.Lock()
	l.dead = err
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, f := range q {
		f()
	}
	for _, p := range l.pairs {
		if p != nil {
			l.finish(p, err)
		}
	}
}

func (l *loop) runQueue() {
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, f := range q {
		f()
	}
}

// add registers a new pair.
func (l *loop) add(p *pair) {
	if len(l.free) > 0 {
		p.slot = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		l.pairs[p.slot] = p
	} else {
		p.slot = int32(len(l.pairs))
		l.pairs = append(l.pairs, p)
	}
	l.interest(p)
}

// interest sets each side's registered events from the pair's state: a
// side is read while it has not ended and the other side has no bytes
// waiting for room; it is watched for room while bytes wait for it.
func (l *loop) interest(p *pair) {
	if p.end {
		return
	}
	for i := range 2 {
		var want uint32
		if !p.eof[i] && len(p.pend[1-i]) == 0 {
			want |= unix.EPOLLIN | unix.EPOLLRDHUP
		}
		if len(p.pend[i]) > 0 {
			want |= unix.EPOLLOUT
		}
		if want != 0 {
			want |= unix.EPOLLET
		}
		if want == p.ev[i] {
			continue
		}
		op := unix.EPOLL_CTL_MOD
		switch {
		case p.ev[i] == 0:
			op = unix.EPOLL_CTL_ADD
		case want == 0:
			op = unix.EPOLL_CTL_DEL
		}
		if err := unix.EpollCtl(l.ep, op, p.fd[i], &unix.EpollEvent{Events: want, Fd: p.slot<<1 | int32(i)}); err != nil {
			l.finish(p, fmt.Errorf("epoll_ctl: %w", err))
			return
		}
		p.ev[i] = want
	}
}

// handle serves one event of side i.
func (l *loop) handle(p *pair, i int, events uint32) {
	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && len(p.pend[i]) > 0 {
		l.flush(p, i)
	}
	if !p.end && events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !p.eof[i] && len(p.pend[1-i]) == 0 {
		l.read(p, i, events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
	}
	if !p.end {
		l.check(p)
	}
}

// read takes what side i sent, once, and writes it to the other side.
// hup: the event said the side has closed too, which a read that returns
// data leaves to be read (no later edge will tell of it).
func (l *loop) read(p *pair, i int, hup bool) {
	ev := uint32(unix.EPOLLIN)
	if hup {
		ev |= unix.EPOLLRDHUP
	}
	n, err := unix.Read(p.fd[i], l.buf)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return
	case err != nil:
		p.eof[i] = true
		p.fail(err)
		return
	case n == 0:
		p.eof[i] = true
		return
	}
	l.write(p, 1-i, l.buf[:n])
	if n == len(l.buf) || hup {
		// Edge-triggered: only a short read shows the socket drained,
		// and not of the end of stream already announced.
		l.again = append(l.again, side{p, i, ev})
	}
}

// side is one side of a pair.
type side struct {
	p  *pair
	i  int
	ev uint32
}

// rereads reads again the sides whose last read filled the buffer, until
// every one has been drained or held back.
func (l *loop) rereads() {
	for len(l.again) > 0 {
		again := l.again
		l.again = l.again[len(l.again):]
		for _, s := range again {
			if !s.p.end {
				l.handle(s.p, s.i, s.ev)
			}
		}
		clear(again)
	}
	l.again = l.again[:0]
}

// write writes b to side j, keeping what it has no room for.
func (l *loop) write(p *pair, j int, b []byte) {
	for len(b) > 0 {
		m, err := unix.Write(p.fd[j], b)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			p.pend[j] = append(p.pend[j][:0], b...)
			return
		}
		if err != nil {
			// Side j takes nothing more: the direction into it is over.
			p.eof[1-j] = true
			p.pend[j] = nil
			p.fail(err)
			return
		}
		p.n[1-j] += int64(m)
		b = b[m:]
	}
}

// flush writes side i's waiting bytes.
func (l *loop) flush(p *pair, i int) {
	b := p.pend[i]
	p.pend[i] = nil
	l.write(p, i, b)
}

// fail notes a direction's failure; a reset or broken pipe is an end.
func (p *pair) fail(err error) {
	if err == unix.ECONNRESET || err == unix.EPIPE {
		return
	}
	if p.err == nil {
		p.err = err
	}
}

// check half-closes a side whose peer is done and has nothing waiting
// for it, ends the pair once both directions are over, and otherwise
// updates the registered interest.
func (l *loop) check(p *pair) {
	for i := range 2 {
		j := 1 - i
		if p.eof[i] && len(p.pend[j]) == 0 && !p.shut[j] {
			p.shut[j] = true
			unix.Shutdown(p.fd[j], unix.SHUT_WR)
		}
	}
	if p.shut[0] && p.shut[1] {
		l.finish(p, nil)
		return
	}
	l.interest(p)
}

// finish ends a pair: its sockets leave the set and are closed, and its
// Relay returns with err when no earlier failure was noted.
func (l *loop) finish(p *pair, err error) {
	if p.end {
		return
	}
	p.end = true
	if err != nil {
		p.err = err
	}
	for i := range 2 {
		if p.ev[i] != 0 {
			unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, p.fd[i], nil)
		}
		unix.Close(p.fd[i])
	}
	if int(p.slot) < len(l.pairs) && l.pairs[p.slot] == p {
		l.pairs[p.slot] = nil
		l.free = append(l.free, p.slot)
	}
	p.pend = [2][]byte{}
	close(p.done)
}
