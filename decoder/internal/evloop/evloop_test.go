package evloop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type result struct {
	c   Counts
	err error
	ok  bool
}

// relayed starts a relay between a client and a server on the core the
// subtest is named after (see cores) and returns their far ends and the relay's result.
func relayed(t *testing.T, ctx context.Context) (client, server net.Conn, res chan result) {
	client, pc := tcpPair(t)
	ps, server := tcpPair(t)
	res = make(chan result, 1)
	core := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
	go func() {
		c, err, ok := relayOn(ctx, core, pc, ps)
		res <- result{c, err, ok}
	}()
	return client, server, res
}

// cores runs f on each core this machine has, as subtests.
func cores(t *testing.T, f func(t *testing.T)) {
	for _, core := range []string{CoreEpoll, CoreUring} {
		t.Run(core, func(t *testing.T) {
			if core == CoreUring {
				if err := uringAvailable(); err != nil {
					t.Skipf("io_uring: %v", err)
				}
			}
			f(t)
		})
	}
}

func wait(t *testing.T, res chan result) result {
	t.Helper()
	select {
	case r := <-res:
		if !r.ok {
			t.Fatal("Relay did not take two TCP connections")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not end")
	}
	return result{}
}

// TestBulkBothWays: 8 MiB each way at once, read slowly on one side so
// that the loop must hold bytes back (backpressure) without losing or
// reordering any; the counts match.
func TestBulkBothWays(t *testing.T) {
	cores(t, func(t *testing.T) {
		client, server, res := relayed(t, context.Background())
		up := make([]byte, 8<<20)
		down := make([]byte, 8<<20)
		rng := rand.NewChaCha8([32]byte{1})
		rng.Read(up)
		rng.Read(down)

		var wg sync.WaitGroup
		var gotUp, gotDown [32]byte
		wg.Add(4)
		go func() { defer wg.Done(); client.Write(up); client.(*net.TCPConn).CloseWrite() }()
		go func() { defer wg.Done(); server.Write(down); server.(*net.TCPConn).CloseWrite() }()
		// The server reads 1,000 bytes at a time, slower than the
		// client writes, so the relay's writes to it find no room as
		// the buffers fill and the loop holds bytes back.
		go func() {
			defer wg.Done()
			h := sha256.New()
			buf := make([]byte, 1000)
			for {
				n, err := server.Read(buf)
				h.Write(buf[:n])
				if err != nil {
					break
				}
			}
			copy(gotUp[:], h.Sum(nil))
		}()
		go func() {
			defer wg.Done()
			h := sha256.New()
			io.Copy(h, client)
			copy(gotDown[:], h.Sum(nil))
		}()
		wg.Wait()
		if gotUp != sha256.Sum256(up) || gotDown != sha256.Sum256(down) {
			t.Fatal("bytes relayed differ from those sent")
		}
		r := wait(t, res)
		if r.err != nil || r.c.ClientToServer != int64(len(up)) || r.c.ServerToClient != int64(len(down)) {
			t.Fatalf("relay ended with %+v, %v; want %d and %d bytes and no error", r.c, r.err, len(up), len(down))
		}
	})
}

// TestHalfClose: the client sends a request and half-closes; the server
// reads it to EOF and then answers, and the client gets the answer.
func TestHalfClose(t *testing.T) {
	cores(t, func(t *testing.T) {
		client, server, res := relayed(t, context.Background())
		req := []byte("request, then a half-close")
		client.Write(req)
		client.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(server)
		if err != nil || !bytes.Equal(got, req) {
			t.Fatalf("server read %q, %v", got, err)
		}
		server.Write([]byte("answer after the half-close"))
		server.Close()
		back, err := io.ReadAll(client)
		if err != nil || string(back) != "answer after the half-close" {
			t.Fatalf("client read %q, %v", back, err)
		}
		r := wait(t, res)
		if r.err != nil || r.c.ClientToServer != int64(len(req)) || r.c.ServerToClient != int64(len(back)) {
			t.Fatalf("relay ended with %+v, %v", r.c, r.err)
		}
	})
}

// TestCancel: cancelling ends a relay whose peers are idle, with the
// context's error, and both peers see the connection end.
func TestCancel(t *testing.T) {
	cores(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		client, server, res := relayed(t, ctx)
		client.Write([]byte("x"))
		b := make([]byte, 1)
		if _, err := io.ReadFull(server, b); err != nil {
			t.Fatalf("server read: %v", err)
		}
		cancel()
		if r := wait(t, res); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("relay after cancel returned %v, want context.Canceled", r.err)
		}
		for _, c := range []net.Conn{client, server} {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(b); err == nil {
				t.Fatal("a peer could still read after the relay was cancelled")
			}
		}
	})
}

// TestReset: a server that resets ends the relay without an error (a
// reset is an end of stream), and the client sees its connection end.
func TestReset(t *testing.T) {
	cores(t, func(t *testing.T) {
		client, server, res := relayed(t, context.Background())
		server.(*net.TCPConn).SetLinger(0)
		server.Close()
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Read(make([]byte, 1)); err == nil {
			t.Fatal("client read data after the server reset")
		}
		client.Close()
		if r := wait(t, res); r.err != nil {
			t.Fatalf("relay after a reset returned %v, want nil", r.err)
		}
	})
}

// TestManyPairs: many small exchanges on many relays at once stay each on
// its own connection.
func TestManyPairs(t *testing.T) {
	cores(t, func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 64 {
			client, server, res := relayed(t, context.Background())
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := []byte{byte(i), byte(i >> 8)}
				got := make([]byte, 2)
				for range 200 {
					client.Write(msg)
					if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, msg) {
						t.Errorf("pair %d: server got %v, %v", i, got, err)
						return
					}
					server.Write(msg)
					if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
						t.Errorf("pair %d: client got %v, %v", i, got, err)
						return
					}
				}
				client.Close()
				server.Close()
				if r := wait(t, res); r.err != nil {
					t.Errorf("pair %d: %v", i, r.err)
				}
			}()
		}
		wg.Wait()
	})
}

// TestNotSockets: a connection without a socket is left to the caller.
func TestNotSockets(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, ok := Relay(context.Background(), a, b); ok {
		t.Fatal("Relay took a net.Pipe")
	}
	// Still usable: nothing was done to them.
	go a.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := b.Read(buf); err != nil {
		t.Fatalf("pipe after Relay declined it: %v", err)
	}
}
