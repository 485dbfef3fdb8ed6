package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenSocket returns a listening TCP socket on la, opened with the
// extra socket flags given (SOCK_NONBLOCK or 0). With reusePort it sets
// SO_REUSEPORT, so that several such sockets share the address and the
// kernel spreads new connections over them by a hash of their addresses.
func listenSocket(la netip.AddrPort, flags int, reusePort bool) (int, error) {
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|flags, 0)
	if err != nil {
		return -1, fmt.Errorf("open listener: %w", err)
	}
	syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if reusePort {
		if err := syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			syscall.Close(lfd)
			return -1, fmt.Errorf("set SO_REUSEPORT: %w", err)
		}
	}
	if err := syscall.Bind(lfd, &syscall.SockaddrInet4{Port: int(la.Port()), Addr: la.Addr().As4()}); err != nil {
		syscall.Close(lfd)
		return -1, fmt.Errorf("bind %s: %w", la, err)
	}
	if err := syscall.Listen(lfd, 1024); err != nil {
		syscall.Close(lfd)
		return -1, fmt.Errorf("listen %s: %w", la, err)
	}
	return lfd, nil
}

// epollThreads runs n epoll loops, each on its own locked thread with its
// own epoll set and, when n > 1, its own SO_REUSEPORT listener on la. It
// returns when the first loop fails.
func epollThreads(la, ua netip.AddrPort, n int) error {
	errc := make(chan error, n)
	for range n {
		lfd, err := listenSocket(la, syscall.SOCK_NONBLOCK, n > 1)
		if err != nil {
			return err
		}
		go func() { errc <- epollLoop(lfd, ua) }()
	}
	return <-errc
}

// epollLoop relays every connection accepted on lfd from one locked
// thread. Sockets are non-blocking and level-triggered; a write that finds
// the peer's buffer full waits for it in poll (the benchmark's messages are
// small).
func epollLoop(lfd int, ua netip.AddrPort) error {
	runtime.LockOSThread()
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
	sfd, err := dialUpstream(ua)
	if err == nil {
		err = syscall.SetNonblock(sfd, true)
	}
	if err != nil {
		syscall.Close(cfd)
		syscall.Close(sfd)
		return err
	}
	syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	peer[cfd], peer[sfd] = sfd, cfd
	if err := watch(cfd); err != nil {
		return err
	}
	return watch(sfd)
}

// dialUpstream connects a blocking socket to ua, with TCP_NODELAY set.
func dialUpstream(ua netip.AddrPort) (int, error) {
	sfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err == nil {
		err = syscall.Connect(sfd, &syscall.SockaddrInet4{Port: int(ua.Port()), Addr: ua.Addr().As4()})
	}
	if err != nil {
		if sfd >= 0 {
			syscall.Close(sfd)
		}
		return -1, fmt.Errorf("connect upstream: %w", err)
	}
	syscall.SetsockoptInt(sfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	return sfd, nil
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
