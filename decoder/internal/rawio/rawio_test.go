package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestRawConn: raw-syscall I/O moves more than a socket buffer's worth
// both ways intact, reports the peer's close as io.EOF, honours read
// deadlines and is unblocked by Close, as net.Conn is.
func TestRawConn(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := Wrap(a), Wrap(b)
	if _, ok := ra.(*Conn); !ok {
		t.Fatalf("Wrap(%T) = %T, want *Conn", a, ra)
	}
	if again := Wrap(ra); again != ra {
		t.Fatalf("Wrap(*Conn) wrapped it again: %T", again)
	}

	// 8 MiB each way at once: writes must wait for room, reads for data.
	want := bytes.Repeat([]byte("0123456789abcdef"), 512<<10)
	errc := make(chan error, 2)
	for _, c := range []net.Conn{ra, rb} {
		go func() {
			n, err := c.Write(want)
			if err == nil && n != len(want) {
				err = io.ErrShortWrite
			}
			errc <- err
		}()
	}
	for _, c := range []net.Conn{ra, rb} {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("bytes changed in transit")
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	// A read deadline ends a read that has nothing to read.
	rb.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := rb.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want deadline exceeded", err)
	}
	rb.SetReadDeadline(time.Time{})

	// Close unblocks a waiting read with net.ErrClosed.
	readErr := make(chan error, 1)
	go func() {
		_, err := rb.Read(make([]byte, 1))
		readErr <- err
	}()
	time.Sleep(20 * time.Millisecond)
	rb.Close()
	if err := <-readErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed conn: %v, want net.ErrClosed", err)
	}

	// The peer's close is io.EOF.
	if _, err := ra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}
}

// TestWrapKeepsOthers: a conn that does not expose its socket is
// returned unchanged.
func TestWrapKeepsOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := Wrap(a); c != a {
		t.Errorf("Wrap(net.Pipe) = %T, want the pipe itself", c)
	}
}

// TestNoAllocs: a read and a write allocate nothing.
func TestNoAllocs(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := Wrap(a), Wrap(b)
	msg, got := []byte("ping"), make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := ra.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rb, got[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a write and a read allocate %.1f times, want 0", allocs)
	}
}

// TestConcurrentWrites: writes from several goroutines at once each
// arrive whole, as on a net.Conn.
func TestConcurrentWrites(t *testing.T) {
	a, b := tcpPair(t)
	ra, rb := Wrap(a), Wrap(b)
	const writers, each = 4, 1000
	errc := make(chan error, writers)
	for w := range writers {
		go func() {
			msg := bytes.Repeat([]byte{byte('a' + w)}, 100)
			for range each {
				if _, err := ra.Write(msg); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	got := make([]byte, writers*each*100)
	if _, err := io.ReadFull(rb, got); err != nil {
		t.Fatal(err)
	}
	for range writers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(got); i += 100 {
		if !bytes.Equal(got[i:i+100], bytes.Repeat(got[i:i+1], 100)) {
			t.Fatalf("message at %d was interleaved with another: %q", i, got[i:i+100])
		}
	}
}
