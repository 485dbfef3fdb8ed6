// Package rawio gives the decoders socket I/O without the runtime's
// syscall bookkeeping: the proxy's per-statement cost is mostly system
// calls, and on an idle proxy the bookkeeping around each one costs more
// than the call itself.
package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Conn is a socket connection whose Read and Write make the read and
// write system calls without the runtime's syscall bookkeeping
// (entersyscall/exitsyscall). The sockets are non-blocking, so neither
// call can block the thread: when the socket has no data (or no room) the
// goroutine waits in the runtime's poller exactly as net.Conn's own Read
// and Write do, and deadlines and Close work the same. The bookkeeping is
// what costs: a proxy idle between round trips lets the runtime's
// monitor thread park, and every bookkept system call then wakes it (a
// futex wake and a thread switch per call), which at one client was
// about a third of the proxy's CPU per statement.
type Conn struct {
	net.Conn // for everything but Read and Write
	rc       syscall.RawConn

	// The state of the Read and the Write in progress, so that the
	// functions handed to the poller are made once instead of allocated
	// on every call. rmu and wmu keep concurrent Reads (Writes) in turn,
	// as net.Conn's own do.
	rmu, wmu   sync.Mutex
	rb, wb     []byte
	rn, wn     int
	rerr, werr syscall.Errno
	readFn     func(fd uintptr) bool
	writeFn    func(fd uintptr) bool
}

// Wrap returns c with raw-syscall I/O when it exposes its socket
// (syscall.Conn: a *net.TCPConn, or a wrapper that passes its bytes
// through unchanged), or c itself: a TLS connection, a pipe, or a *Conn
// already.
func Wrap(c net.Conn) net.Conn {
	if _, ok := c.(*Conn); ok {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	rw := &Conn{Conn: c, rc: rc}
	rw.readFn, rw.writeFn = rw.read, rw.write
	return rw
}

// read is one attempt of Read's system call; false means wait until the
// socket is readable.
func (c *Conn) read(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rb[0])), uintptr(len(c.rb)))
		switch e {
		case 0:
			c.rn = int(r)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rerr = e
		return true
	}
}

// Read reads what the socket holds, waiting in the poller when it holds
// nothing. It returns io.EOF at the peer's end of stream.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	c.rb, c.rn, c.rerr = b, 0, 0
	err := c.rc.Read(c.readFn)
	n, serr := c.rn, c.rerr
	c.rb = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, err
	case serr != 0:
		return 0, c.opError("read", serr)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// write is one attempt to write the rest of Write's bytes; false means
// wait until the socket is writable.
func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wb) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wb[c.wn])), uintptr(len(c.wb)-c.wn))
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// Write writes all of b, waiting in the poller whenever the socket's
// buffer is full.
func (c *Conn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	c.wb, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	n, serr := c.wn, c.werr
	c.wb = nil
	c.wmu.Unlock()
	switch {
	case err != nil:
		return n, err
	case serr != 0:
		return n, c.opError("write", serr)
	}
	return n, nil
}

// opError is a failed system call as net.Conn reports it.
func (c *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}

// CloseWrite shuts down the sending side of the socket (a half-close),
// as *net.TCPConn's does.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
