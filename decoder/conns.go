package decoder

import (
	"net"
	"sync"
)

// Conns are the two hops of one decoded session, for closing them from
// any goroutine: the session's context ending (context.AfterFunc), or the
// session itself when it returns. A protocol sets each hop as it gets it
// (the client's socket, then its TLS layer; the server's socket, then its
// TLS layer) and keeps its own reference for its own use; Close closes
// the last of each. A hop set after Close is closed at once, so a session
// whose context ended while it was still connecting leaves nothing open.
// The zero value is ready to use.
type Conns struct {
	mu             sync.Mutex
	client, server net.Conn
	closed         bool
	once           sync.Once
}

// Client records c as the client hop and returns it.
func (cs *Conns) Client(c net.Conn) net.Conn { return cs.set(&cs.client, c) }

// Server records c as the server hop and returns it.
func (cs *Conns) Server(c net.Conn) net.Conn { return cs.set(&cs.server, c) }

func (cs *Conns) set(slot *net.Conn, c net.Conn) net.Conn {
	cs.mu.Lock()
	*slot = c
	closed := cs.closed
	cs.mu.Unlock()
	if closed {
		c.Close()
	}
	return c
}

// DetachServer takes the server hop out, so Close leaves it open (a
// connection going back to a pool). It reports false when Close already
// ran: the connection is closed then.
func (cs *Conns) DetachServer() bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return false
	}
	cs.server = nil
	return true
}

// Close closes both hops, once; later calls do nothing.
func (cs *Conns) Close() {
	cs.once.Do(func() {
		cs.mu.Lock()
		cs.closed = true
		client, server := cs.client, cs.server
		cs.mu.Unlock()
		if client != nil {
			client.Close()
		}
		if server != nil {
			server.Close()
		}
	})
}
