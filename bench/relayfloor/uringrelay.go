package main

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Sizes of the uring relay: submission slots; and for each socket a buffer
// group of its own, uringBufs buffers of uringBufSize bytes, which is as
// much as it may have received and not yet sent on (2048 connections at
// most, 64 KiB a socket, touched only as used).
const (
	uringEntries = 256
	uringGroups  = 4096
	uringBufs    = 4
	uringBufSize = 16 << 10
)

// uringLoop relays every connection accepted on la from one locked thread
// through io_uring. The sequence:
//
//   - a multishot accept on the listener yields each client;
//   - a blocking connect to ua on this thread, as the epoll loop does;
//   - a multishot receive on each of the two sockets, into buffers the
//     kernel picks from that socket's own provided buffer ring;
//   - each received buffer is sent as it is to the other socket, one send
//     in flight per socket so the stream keeps its order; a short send is
//     sent again from where it stopped; the buffer goes back to its ring
//     once all of it is sent;
//   - a receive that ran out of buffers (ENOBUFS: the other socket is
//     slower) is armed again once one comes back. A ring per socket keeps
//     this a matter between the two: with one ring for all, one direction
//     could hold every buffer while the other, whose progress it waits
//     for, gets none;
//   - EOF or an error on either side ends the pair: what was received is
//     still sent, then both sockets are shut down and closed.
//
// Every entry queued while handling one batch of completions goes to the
// kernel in the io_uring_enter that also waits for the next one.
func uringLoop(la, ua netip.AddrPort) error {
	runtime.LockOSThread() // the ring is IORING_SETUP_SINGLE_ISSUER: this thread's alone
	lfd, err := listenSocket(la, 0, false)
	if err != nil {
		return err
	}
	r, err := newRing(uringEntries)
	if err != nil {
		return err
	}
	slab, err := newBufSlab(r, uringGroups, uringBufs, uringBufSize)
	if err != nil {
		r.Close()
		return err
	}
	defer func() {
		r.Close() // first: the kernel writes into the buffers until then
		slab.Close()
	}()
	l := &uringRelay{r: r, slab: slab, lfd: lfd, ua: ua, pairs: map[uint64]*uringPair{}}
	if err := l.accept(); err != nil {
		return err
	}
	for {
		if err := r.submit(1); err != nil {
			return err
		}
		for _, c := range r.reap() {
			if err := l.complete(c); err != nil {
				return err
			}
		}
	}
}

// uringRelay is the state of uringLoop, owned by its thread.
type uringRelay struct {
	r      *ring
	slab   *bufSlab
	lfd    int
	ua     netip.AddrPort
	pairs  map[uint64]*uringPair // by id; a pair stays until its last request completes
	nextID uint64
}

// A uringPair is a client and its upstream connection, sides 0 and 1.
// User data of its requests is id<<2 | side<<1 | kind (0 receive, 1
// send); the multishot accept's is 0, and ids start at 1. Ids are never
// reused, so a completion that comes after the pair's descriptors were
// closed (and their numbers taken again) still finds this pair.
type uringPair struct {
	id     uint64
	c      [2]uringConn
	ending bool // a side reached EOF or failed: close once what is queued is sent
	closed bool // both sockets shut down and closed; waiting for requests in flight
}

type uringConn struct {
	fd        int
	group     uint16   // the buffer group its receives land in
	bufs      *bufRing // that group's ring
	out       []chunk  // received from the other side, in its buffers, to send here; out[0] is in flight while sending
	sending   bool
	receiving bool // a multishot receive is armed
	starved   bool // its receive ended with ENOBUFS; armed again when a buffer comes back
}

// chunk is bytes [off, end) of buffer bid.
type chunk struct {
	bid      uint16
	off, end uint32
}

const (
	kindRecv = 0
	kindSend = 1
)

func (l *uringRelay) complete(c cqe) error {
	if c.userData == 0 {
		return l.accepted(c)
	}
	p := l.pairs[c.userData>>2]
	if p == nil {
		return fmt.Errorf("io_uring completion for unknown pair %d", c.userData>>2)
	}
	side := int(c.userData >> 1 & 1)
	var err error
	if c.userData&1 == kindRecv {
		err = l.received(p, side, c)
	} else {
		err = l.sent(p, side, c)
	}
	if p.closed && !p.c[0].receiving && !p.c[1].receiving && !p.c[0].sending && !p.c[1].sending {
		// No request uses its buffer groups and every buffer is back.
		delete(l.pairs, p.id)
		l.slab.give(p.c[0].group)
		l.slab.give(p.c[1].group)
	}
	return err
}

// accepted connects a new client upstream and starts receiving on both.
func (l *uringRelay) accepted(c cqe) error {
	if c.flags&cqeFMore == 0 {
		if err := l.accept(); err != nil {
			return err
		}
	}
	if c.res < 0 {
		fmt.Fprintln(os.Stderr, "relayfloor: accept:", unix.Errno(-c.res))
		return nil
	}
	cfd := int(c.res)
	sfd, err := dialUpstream(l.ua)
	if err != nil {
		unix.Close(cfd)
		fmt.Fprintln(os.Stderr, "relayfloor:", err)
		return nil
	}
	unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	p := &uringPair{id: l.nextID + 1}
	p.c[0].fd, p.c[1].fd = cfd, sfd
	for k := range p.c {
		if p.c[k].group, p.c[k].bufs, err = l.slab.take(); err != nil {
			if k == 1 {
				l.slab.give(p.c[0].group)
			}
			unix.Close(cfd)
			unix.Close(sfd)
			fmt.Fprintln(os.Stderr, "relayfloor:", err)
			return nil
		}
	}
	l.nextID++
	l.pairs[p.id] = p
	if err := l.recv(p, 0); err != nil {
		return err
	}
	return l.recv(p, 1)
}

// received queues what side i received for the other side, and rearms or
// ends the receive when the kernel stopped it.
func (l *uringRelay) received(p *uringPair, i int, c cqe) error {
	from, to := &p.c[i], &p.c[1-i]
	more := c.flags&cqeFMore != 0
	if !more {
		from.receiving = false
	}
	if c.flags&cqeFBuffer != 0 {
		bid := uint16(c.flags >> cqeBufferShift)
		if c.res > 0 && !p.ending {
			to.out = append(to.out, chunk{bid: bid, end: uint32(c.res)})
			if !to.sending {
				if err := l.send(p, 1-i); err != nil {
					return err
				}
			}
		} else {
			from.bufs.put(bid)
		}
	}
	switch {
	case more || p.ending:
	case c.res > 0: // the kernel stopped the multishot receive on its own
		return l.recv(p, i)
	case c.res == -int32(unix.ENOBUFS):
		if len(to.out) < uringBufs {
			// A buffer came back after the kernel found none.
			return l.recv(p, i)
		}
		from.starved = true
	default: // EOF, or an error
		l.end(p)
	}
	return nil
}

// sent moves side j's queue past what a send wrote, and sends the rest.
func (l *uringRelay) sent(p *uringPair, j int, c cqe) error {
	to, from := &p.c[j], &p.c[1-j]
	to.sending = false
	if c.res <= 0 || p.closed {
		l.drop(p, j)
		l.end(p)
		return nil
	}
	ch := &to.out[0]
	ch.off += uint32(c.res)
	if ch.off >= ch.end {
		from.bufs.put(ch.bid)
		to.out = to.out[:copy(to.out, to.out[1:])]
		if from.starved && !p.ending {
			from.starved = false
			if err := l.recv(p, 1-j); err != nil {
				return err
			}
		}
	}
	if len(to.out) > 0 {
		return l.send(p, j) // the next chunk, or the rest of a short send
	}
	if p.ending {
		l.end(p)
	}
	return nil
}

// end marks the pair ending and closes it once no send is in flight. Its
// sockets are shut down before they are closed: that ends the multishot
// receives still armed on them, which hold their own references to the
// sockets and would otherwise keep them open.
func (l *uringRelay) end(p *uringPair) {
	p.ending = true
	if p.closed || p.c[0].sending || p.c[1].sending {
		return
	}
	for k := range p.c {
		unix.Shutdown(p.c[k].fd, unix.SHUT_RDWR)
		unix.Close(p.c[k].fd)
		l.drop(p, k)
	}
	p.closed = true
}

// drop gives back every buffer queued to be sent on side j.
func (l *uringRelay) drop(p *uringPair, j int) {
	for _, ch := range p.c[j].out {
		p.c[1-j].bufs.put(ch.bid)
	}
	p.c[j].out = p.c[j].out[:0]
}

func (l *uringRelay) accept() error {
	s, err := l.r.next()
	if err != nil {
		return err
	}
	s.opcode = opAccept
	s.fd = int32(l.lfd)
	s.ioprio = acceptMultishot
	s.opFlags = unix.SOCK_CLOEXEC
	return nil
}

func (l *uringRelay) recv(p *uringPair, i int) error {
	s, err := l.r.next()
	if err != nil {
		return err
	}
	s.opcode = opRecv
	s.flags = sqeBufferSelect
	s.ioprio = recvMultishot
	s.fd = int32(p.c[i].fd)
	s.bufGroup = p.c[i].group
	s.userData = p.id<<2 | uint64(i)<<1 | kindRecv
	p.c[i].receiving = true
	return nil
}

// send sends side j's first chunk, from the other side's buffer.
// MSG_WAITALL makes the kernel retry a short send itself; sent still
// handles one that comes back short.
func (l *uringRelay) send(p *uringPair, j int) error {
	s, err := l.r.next()
	if err != nil {
		return err
	}
	ch := p.c[j].out[0]
	s.opcode = opSend
	s.fd = int32(p.c[j].fd)
	s.addr = p.c[1-j].bufs.addr(ch.bid, ch.off)
	s.len = ch.end - ch.off
	s.opFlags = unix.MSG_NOSIGNAL | unix.MSG_WAITALL
	s.userData = p.id<<2 | uint64(j)<<1 | kindSend
	p.c[j].sending = true
	return nil
}
