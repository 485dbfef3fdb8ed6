package interceptor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// listenFDsStart is the first file descriptor a service manager passes
// (SD_LISTEN_FDS_START of sd_listen_fds(3)).
const listenFDsStart = 3

// Listen opens the proxy listeners on 127.0.0.1:port and [::1]:port, and
// on port of each container address in extra (which must be local:
// AddLocalAddr). A machine without IPv6 loopback gets only the IPv4 one;
// redirected IPv6 connects then fail with "connection refused".
//
// Listening sockets passed by a service manager (the sd_listen_fds(3)
// protocol: LISTEN_PID, LISTEN_FDS, fds from 3 on, as a systemd socket
// unit passes them) are used instead of new ones when they are bound to
// those addresses. A socket held by the service manager outlives the
// daemon: while one daemon stops and the next starts, the kernel keeps
// queueing redirected connects on it and the next daemon serves them, so
// a restart refuses nothing. Passed sockets of any other address are an
// error: they would be accepted by nothing.
func Listen(port uint16, extra []netip.Addr, log hclog.Logger) ([]net.Listener, error) {
	inherited, err := inheritedListeners()
	if err != nil {
		return nil, err
	}
	want4 := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	want6 := netip.AddrPortFrom(netip.IPv6Loopback(), port)
	wantExtra := map[netip.AddrPort]net.Listener{}
	for _, a := range extra {
		wantExtra[netip.AddrPortFrom(a, port)] = nil
	}
	var l4, l6 net.Listener
	closeAll := func(ls ...net.Listener) {
		for _, l := range ls {
			if l != nil {
				l.Close()
			}
		}
	}
	for _, l := range inherited {
		ap := addrPort(l.Addr())
		if _, ok := wantExtra[ap]; ok {
			wantExtra[ap] = l
			continue
		}
		switch ap {
		case want4:
			l4 = l
		case want6:
			l6 = l
		default:
			closeAll(inherited...)
			return nil, fmt.Errorf("listen: the service manager passed a socket bound to %s, but proxy_port is %d: make the socket unit's ListenStream= match proxy_port (and the containers block's addresses)", l.Addr(), port)
		}
	}
	if len(inherited) > 0 {
		log.Info("using listening sockets passed by the service manager", "sockets", len(inherited))
	}
	p := strconv.Itoa(int(port))
	if l4 == nil {
		if l4, err = net.Listen("tcp4", net.JoinHostPort("127.0.0.1", p)); err != nil {
			closeAll(inherited...)
			return nil, fmt.Errorf("listen on 127.0.0.1:%s: %w", p, err)
		}
	}
	out := []net.Listener{l4}
	for _, a := range extra {
		ap := netip.AddrPortFrom(a, port)
		if l := wantExtra[ap]; l != nil {
			out = append(out, l)
			continue
		}
		network := "tcp4"
		if a.Is6() {
			network = "tcp6"
		}
		l, err := net.Listen(network, ap.String())
		if err != nil {
			closeAll(append(out, l6)...)
			for _, l := range wantExtra {
				closeAll(l)
			}
			return nil, fmt.Errorf("listen on container address %s: %w", ap, err)
		}
		out = append(out, l)
	}
	if l6 == nil {
		if l6, err = net.Listen("tcp6", net.JoinHostPort("::1", p)); err != nil {
			log.Warn("no IPv6 loopback listener; IPv6 targets will be refused", "error", err)
			return out, nil
		}
	}
	return append(out, l6), nil
}

// inheritedListeners takes the TCP listening sockets of sd_listen_fds(3)
// and unsets its variables so that no child inherits them.
func inheritedListeners() ([]net.Listener, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("listen: LISTEN_FDS=%q is not a count of sockets", fds)
	}
	var out []net.Listener
	var errs []error
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
		l, err := net.FileListener(f) // dups the descriptor
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("fd %d: %w", fd, err))
			continue
		}
		if !strings.HasPrefix(l.Addr().Network(), "tcp") {
			l.Close()
			errs = append(errs, fmt.Errorf("fd %d: not a TCP socket (%s)", fd, l.Addr().Network()))
			continue
		}
		out = append(out, l)
	}
	if len(errs) > 0 {
		for _, l := range out {
			l.Close()
		}
		return nil, fmt.Errorf("listen: sockets passed by the service manager: %w", errors.Join(errs...))
	}
	return out, nil
}
