package decoder

import (
	"net"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/record"
)

// WireTap records a decoded session's client connection, as the client
// sent and received it (after masking), from the end of authentication
// on: the authentication exchange (a cleartext or hashed password, SCRAM
// proofs) is never recorded. A protocol that records wire bytes
// (Session.WantsWire) wraps its client connection with Tapped(c, t.Tap)
// before authentication, records what it must of the login itself
// directly (PostgreSQL: the StartupMessage), and calls Open where the
// server's verdict on the login is about to be written to the client.
//
// A WireTap belongs to one session. Open must be called before the
// protocol's relay goroutines start, from the only goroutine using the
// connection then; Tap may then be called from the goroutines that read
// and write the connection.
type WireTap struct {
	// Session is the session the bytes are recorded to.
	Session *enforcer.Session
	open    bool
}

// Tap is the client connection's Tap: nothing until Open, then every
// chunk, to the session's recording. Its error (the recording failed)
// fails the read or write, and so ends the session.
func (t *WireTap) Tap(dir string, b []byte) error {
	if !t.open {
		return nil
	}
	return t.Session.Wire(dir, b)
}

// Waiting reports whether the tap is still to be opened: the session
// records wire bytes and Open has not run. A protocol flushes what it
// wrote the client during authentication, unrecorded, before Open.
func (t *WireTap) Waiting() bool { return !t.open && t.Session.WantsWire() }

// Open starts recording. pending is what the client sent that was read
// but not relayed yet (valid for the call only): it is recorded first,
// as sent by the client. An error means the session can no longer be
// recorded: the protocol tells its client and ends the session. Open on
// an open tap, or on a session that records no wire bytes, does
// nothing.
func (t *WireTap) Open(pending []byte) error {
	if !t.Waiting() {
		return nil
	}
	if err := t.Session.Wire(record.DirClientToServer, pending); err != nil {
		return err
	}
	t.open = true
	return nil
}

// CountConn counts the bytes read from and written to a connection, as
// they cross the network (under a TLS layer: the encrypted bytes). Reads
// may come from one goroutine and writes from another; Counts is read
// once both have stopped.
type CountConn struct {
	net.Conn
	read, written int64
}

// Read reads from the connection and counts what it read.
func (c *CountConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read += int64(n)
	return n, err
}

// Write writes to the connection and counts what it wrote.
func (c *CountConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written += int64(n)
	return n, err
}

// Counts returns the bytes read (ClientToServer, for a client's
// connection) and written (ServerToClient) so far.
func (c *CountConn) Counts() Counts {
	return Counts{ClientToServer: c.read, ServerToClient: c.written}
}

// ClientCounts are a decoded session's client bytes over its life when it
// may run on the relay core for a while: its connection's counts until
// then (Before), the core's (Core), and, once it left the core, the new
// connection's (After).
type ClientCounts struct {
	Before *CountConn
	Core   Counts
	After  *CountConn
}

// Counts adds them up.
func (c *ClientCounts) Counts() Counts {
	n := c.Before.Counts()
	n.ClientToServer += c.Core.ClientToServer
	n.ServerToClient += c.Core.ServerToClient
	if c.After != nil {
		a := c.After.Counts()
		n.ClientToServer += a.ClientToServer
		n.ServerToClient += a.ServerToClient
	}
	return n
}
