// Command relayfloor is the floor a TCP proxy written in Go pays on this
// machine, for bench/suite.sh (FLOOR=1): a relay that looks at nothing,
// built four ways.
//
//	-mode goroutine  a goroutine per direction on Go's poller, reads and
//	                 writes as raw system calls: the design of Sluice's
//	                 relays (decoder/tcp, decoder/postgres)
//	-mode epoll      one thread running its own epoll loop over every
//	                 socket, as PgBouncer does
//	-mode epoll2     that loop on every core (runtime.NumCPU threads), each
//	                 with its own epoll set and its own SO_REUSEPORT
//	                 listener: an event loop per core
//	-mode uring      one thread relaying every socket through io_uring:
//	                 multishot accept, multishot receives into a provided
//	                 buffer ring per socket, sends from those buffers, and
//	                 one io_uring_enter per batch of completions that
//	                 submits and waits
//
// It listens on a loopback address only and relays to one upstream.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

func main() {
	mode := flag.String("mode", "goroutine", "goroutine, epoll, epoll2 or uring")
	listen := flag.String("listen", "", "loopback address:port to listen on")
	upstream := flag.String("upstream", "", "address:port to relay to")
	flag.Parse()
	la, err := netip.ParseAddrPort(*listen)
	if err != nil || !la.Addr().IsLoopback() || !la.Addr().Is4() {
		fail(fmt.Errorf("-listen %q: an IPv4 loopback address:port", *listen))
	}
	ua, err := netip.ParseAddrPort(*upstream)
	if err != nil || !ua.Addr().Is4() {
		fail(fmt.Errorf("-upstream %q: an IPv4 address:port", *upstream))
	}
	switch *mode {
	case "goroutine":
		err = goroutines(la, ua)
	case "epoll":
		err = epollThreads(la, ua, 1)
	case "epoll2":
		err = epollThreads(la, ua, runtime.NumCPU())
	case "uring":
		err = uringLoop(la, ua)
	default:
		err = fmt.Errorf("-mode %q: goroutine, epoll, epoll2 or uring", *mode)
	}
	fail(err)
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "relayfloor:", err)
		os.Exit(1)
	}
}

func sysRead(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

func sysWrite(fd int, b []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

// goroutines relays each connection with a goroutine per direction.
func goroutines(la, ua netip.AddrPort) error {
	l, err := net.Listen("tcp", la.String())
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			u, err := net.Dial("tcp", ua.String())
			if err != nil {
				c.Close()
				return
			}
			go pipe(u.(*net.TCPConn), c.(*net.TCPConn))
			pipe(c.(*net.TCPConn), u.(*net.TCPConn))
		}()
	}
}

// pipe copies src to dst with raw reads and writes that wait in Go's
// poller, then closes both.
func pipe(dst, src *net.TCPConn) {
	defer dst.Close()
	defer src.Close()
	rs, _ := src.SyscallConn()
	ws, _ := dst.SyscallConn()
	buf := make([]byte, 16<<10)
	for {
		var n int
		var rerr syscall.Errno
		if err := rs.Read(func(fd uintptr) bool {
			n, rerr = sysRead(int(fd), buf)
			return rerr != syscall.EAGAIN
		}); err != nil || rerr != 0 || n == 0 {
			return
		}
		out := buf[:n]
		var werr syscall.Errno
		if err := ws.Write(func(fd uintptr) bool {
			for len(out) > 0 {
				m, e := sysWrite(int(fd), out)
				if e == syscall.EAGAIN {
					return false
				}
				if e != 0 {
					werr = e
					return true
				}
				out = out[m:]
			}
			return true
		}); err != nil || werr != 0 {
			return
		}
	}
}
