// Command relayfloor is the floor a TCP proxy written in Go pays on this
// machine, for bench/suite.sh (FLOOR=1): a relay that looks at nothing,
// built two ways.
//
//	-mode goroutine  a goroutine per direction on Go's poller, reads and
//	                 writes as raw system calls: the design of Sluice's
//	                 relays (decoder/tcp, decoder/postgres)
//	-mode epoll      one thread running its own epoll loop over every
//	                 socket, as PgBouncer does
//
// It listens on a loopback address only and relays to one upstream.
package main

import (
	"errors"
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
	mode := flag.String("mode", "goroutine", "goroutine or epoll")
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
		err = epollLoop(la, ua)
	default:
		err = fmt.Errorf("-mode %q: goroutine or epoll", *mode)
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

// epollLoop relays every connection from one locked thread. Sockets are
// non-blocking and level-triggered; a write that finds the peer's buffer
// full waits for it in poll (the benchmark's messages are small).
func epollLoop(la, ua netip.AddrPort) error {
	runtime.LockOSThread()
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Port: int(la.Port()), Addr: la.Addr().As4()}); err != nil {
		return err
	}
	if err := syscall.Listen(lfd, 1024); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	watch := func(fd int) error {
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
	}
	if err := watch(lfd); err != nil {
		return err
	}
	peer := map[int]int{}
	closePair := func(fd int) {
		p := peer[fd]
		delete(peer, fd)
		delete(peer, p)
		syscall.Close(fd)
		syscall.Close(p)
	}
	buf := make([]byte, 64<<10)
	evs := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(ep, evs, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range evs[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				if err := accept(lfd, ua, peer, watch); err != nil {
					fmt.Fprintln(os.Stderr, "relayfloor:", err)
				}
				continue
			}
			if _, ok := peer[fd]; !ok {
				continue // closed earlier in this batch
			}
			m, e := sysRead(fd, buf)
			if e == syscall.EAGAIN {
				continue
			}
			if e != 0 || m == 0 || writeAll(peer[fd], buf[:m]) != nil {
				closePair(fd)
			}
		}
	}
}

func accept(lfd int, ua netip.AddrPort, peer map[int]int, watch func(int) error) error {
	cfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
	if err != nil {
		return nil // EAGAIN: another event took it
	}
	sfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		err = syscall.Connect(sfd, &syscall.SockaddrInet4{Port: int(ua.Port()), Addr: ua.Addr().As4()})
	}
	if err == nil {
		err = syscall.SetNonblock(sfd, true)
	}
	if err != nil {
		syscall.Close(cfd)
		syscall.Close(sfd)
		return fmt.Errorf("connect upstream: %w", err)
	}
	for _, fd := range []int{cfd, sfd} {
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	}
	peer[cfd], peer[sfd] = sfd, cfd
	if err := watch(cfd); err != nil {
		return err
	}
	return watch(sfd)
}

// writeAll writes b to fd, polling for room when its buffer is full.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		m, e := sysWrite(fd, b)
		switch e {
		case 0:
			b = b[m:]
		case syscall.EAGAIN:
			pfd := []unixPollFd{{fd: int32(fd), events: 0x4 /* POLLOUT */}}
			syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&pfd[0])), 1, ^uintptr(0))
		case syscall.EINTR:
		default:
			return e
		}
	}
	return nil
}

type unixPollFd struct {
	fd      int32
	events  int16
	revents int16
}
