package decoder

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// pair returns the two ends of a real loopback TCP connection.
func pair(t *testing.T) (a, b net.Conn) {
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

// TestRelayHalfClose: the client sends a request and shuts down its write
// side; the server reads to EOF, then answers; the client gets the whole
// answer and EOF. Byte counts match what each side sent.
func TestRelayHalfClose(t *testing.T) {
	client, proxyClient := pair(t)
	proxyServer, server := pair(t)

	done := make(chan Counts, 1)
	go func() {
		c, err := Relay(context.Background(), proxyClient, proxyServer)
		if err != nil {
			t.Errorf("relay: %v", err)
		}
		done <- c
	}()

	req := []byte("request that ends with a half-close")
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()

	got, err := io.ReadAll(server)
	if err != nil || string(got) != string(req) {
		t.Fatalf("server read %q, %v; want %q then EOF", got, err, req)
	}
	resp := make([]byte, 100000)
	for i := range resp {
		resp[i] = byte(i)
	}
	if _, err := server.Write(resp); err != nil {
		t.Fatalf("server answer after client half-close: %v", err)
	}
	server.Close()

	back, err := io.ReadAll(client)
	if err != nil || len(back) != len(resp) {
		t.Fatalf("client read %d bytes, %v; want %d then EOF", len(back), err, len(resp))
	}
	select {
	case c := <-done:
		if c.ClientToServer != int64(len(req)) || c.ServerToClient != int64(len(resp)) {
			t.Errorf("counts = %+v, want %d and %d", c, len(req), len(resp))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end after both sides closed")
	}
}

// TestRelayCancel: cancelling the context ends a relay whose peers are idle.
func TestRelayCancel(t *testing.T) {
	_, proxyClient := pair(t)
	proxyServer, _ := pair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Relay(ctx, proxyClient, proxyServer)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Errorf("relay after cancel returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end after cancel")
	}
}
