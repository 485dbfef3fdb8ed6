package ssh

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quickAck makes a TCP connection to the host acknowledge what it
// receives at once, instead of after Linux's delayed-ACK timer (40 ms).
// OpenSSH's sshd leaves Nagle's algorithm on for sessions without a
// terminal, so it holds a small packet (a window adjustment, an SFTP
// status) while an earlier one is unacknowledged. Sluice, waiting for
// that window to send more, has nothing to carry its ACK, and the
// transfer stalls for the delayed-ACK timer, several times per file.
// Linux leaves quick-ACK mode on its own, so it is asked again before
// each read. A connection that is not TCP is returned as it is.
func quickAck(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	q := &quickAckConn{Conn: c, rc: rc}
	if !q.set() {
		return c
	}
	return q
}

type quickAckConn struct {
	net.Conn
	rc syscall.RawConn
}

func (q *quickAckConn) set() bool {
	var serr error
	err := q.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	})
	return err == nil && serr == nil
}

func (q *quickAckConn) Read(b []byte) (int, error) {
	q.set()
	return q.Conn.Read(b)
}
