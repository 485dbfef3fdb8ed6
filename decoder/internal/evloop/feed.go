package evloop

import (
	"errors"
	"net"
)

// Feed is the source of a protocol's buffered reader for one side of a
// session on the core: what the core received for it (Add), then, once
// the session left the core (Then), its connection. A Handler that
// decodes only whole messages checks Avail before it reads, so its
// reader never meets ErrNoData part way through one.
type Feed struct {
	b    []byte
	off  int
	conn net.Conn
}

// ErrNoData: the core has given the Feed nothing more yet.
var ErrNoData = errors.New("no data from the relay core")

// feedKeep is the largest buffer a drained Feed keeps for reuse.
const feedKeep = 512 << 10

func (f *Feed) Read(p []byte) (int, error) {
	if f.off < len(f.b) {
		n := copy(p, f.b[f.off:])
		f.off += n
		if f.off == len(f.b) {
			f.b, f.off = f.b[:0], 0
			if cap(f.b) > feedKeep {
				f.b = nil
			}
		}
		return n, nil
	}
	if f.conn != nil {
		return f.conn.Read(p)
	}
	return 0, ErrNoData
}

// Add appends what the core received (b is copied).
func (f *Feed) Add(b []byte) { f.b = append(f.b, b...) }

// Avail is how many bytes the Feed holds.
func (f *Feed) Avail() int { return len(f.b) - f.off }

// Then makes c the source once what the Feed holds is read: the session
// left the core, and its reads go on on the socket.
func (f *Feed) Then(c net.Conn) { f.conn = c }
