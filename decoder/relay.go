package decoder

// Relay is the opaque relay: it copies bytes both ways without looking at
// them (tcp targets, and protocols this build does not decode). Each
// direction ends on its own: when one side finishes sending, the other side
// is told with a half-close and may still answer.

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/sluicehq/sluice/decoder/internal/evloop"
	"github.com/sluicehq/sluice/decoder/internal/rawio"
)

// Counts are the bytes relayed in each direction.
type Counts struct {
	ClientToServer int64
	ServerToClient int64
}

// closeWriter is implemented by *net.TCPConn and *net.UnixConn.
type closeWriter interface{ CloseWrite() error }

// Relay copies client to server and server to client until both directions
// have ended or ctx is cancelled, then closes both connections. An EOF from
// one side becomes a half-close (shutdown SHUT_WR) on the other. The error
// is the first failure other than a normal end of stream.
//
// Sockets are relayed on decoder/internal/evloop's core (one thread's
// io_uring ring, or epoll sets where io_uring is missing; no goroutine per
// direction); anything else (a tapped or TLS connection) with a goroutine
// per direction, as is every relay when the environment sets
// SLUICE_RELAY_CORE=goroutine (for comparing them).
func Relay(ctx context.Context, client, server net.Conn) (Counts, error) {
	if useLoop {
		if c, err, ok := evloop.Relay(ctx, client, server); ok {
			return Counts(c), err
		}
	}
	var c Counts
	client, server = rawio.Wrap(client), rawio.Wrap(server)
	stop := context.AfterFunc(ctx, func() {
		// Cancellation becomes an immediate deadline on both sides.
		past := time.Unix(1, 0)
		client.SetDeadline(past)
		server.SetDeadline(past)
	})
	defer stop()

	errc := make(chan error, 2)
	go func() {
		n, err := pipe(server, client)
		c.ClientToServer = n
		errc <- err
	}()
	n, err := pipe(client, server)
	c.ServerToClient = n
	err2 := <-errc
	client.Close()
	server.Close()
	if ctx.Err() != nil {
		return c, ctx.Err()
	}
	return c, errors.Join(err, err2)
}

// useLoop: relay sockets on the event loops.
var useLoop = os.Getenv("SLUICE_RELAY_CORE") != "goroutine"

// bufs holds the relay's copy buffers. 16 KiB keeps a thousand idle
// sessions near 32 MiB while a bulk transfer still moves a socket
// buffer's worth in a few calls.
var bufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// pipe copies src to dst and then half-closes dst. The copy goes through
// a buffer with one read and one write per chunk, not splice: for the
// small messages of a database or SSH session splice's pipe costs two
// extra system calls per chunk, and measured (bench/suite.sh, opaque) a
// third more CPU per transaction than this loop.
func pipe(dst, src net.Conn) (int64, error) {
	b := bufs.Get().(*[]byte)
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *b)
	bufs.Put(b)
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	if err != nil && !isClosed(err) {
		return n, err
	}
	return n, nil
}

// isClosed reports errors that only mean the other direction already tore
// the connection down.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, io.EOF) || isReset(err)
}

// Tap is told every chunk the client sent ("c2s") or received ("s2c"). An
// error from it ends the relay.
type Tap func(dir string, b []byte) error

// tapConn reports the client's traffic to a Tap.
type tapConn struct {
	net.Conn
	tap Tap
}

func (c tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		if terr := c.tap("c2s", b[:n]); terr != nil && err == nil {
			err = terr
		}
	}
	return n, err
}

func (c tapConn) Write(b []byte) (int, error) {
	if err := c.tap("s2c", b); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c tapConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Tapped returns c with its traffic reported to tap: what is read from it
// as "c2s", what is written to it as "s2c". A tap error fails the read or
// write, so a session whose traffic cannot be recorded ends.
func Tapped(c net.Conn, tap Tap) net.Conn { return tapConn{Conn: c, tap: tap} }

// RelayTapped is Relay with the client's traffic reported to tap.
func RelayTapped(ctx context.Context, client, server net.Conn, tap Tap) (Counts, error) {
	return Relay(ctx, Tapped(rawio.Wrap(client), tap), server)
}
