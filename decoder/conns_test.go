package decoder

import (
	"net"
	"sync"
	"testing"
)

// TestConns: Close closes the last connection set on each hop, once; a
// connection set after Close is closed at once; Close and setting race
// safely (go test -race).
func TestConns(t *testing.T) {
	pipe := func() (net.Conn, net.Conn) { return net.Pipe() }
	var cs Conns
	c1, c1peer := pipe()
	c2, c2peer := pipe() // the TLS layer over c1, say
	s1, s1peer := pipe()
	defer c1peer.Close()
	defer c2peer.Close()
	defer s1peer.Close()
	cs.Client(c1)
	cs.Client(c2)
	cs.Server(s1)
	cs.Close()
	cs.Close()
	if _, err := c2.Write([]byte("x")); err == nil {
		t.Error("the last client hop is open after Close")
	}
	if _, err := s1.Write([]byte("x")); err == nil {
		t.Error("the server hop is open after Close")
	}
	late, latePeer := pipe()
	defer latePeer.Close()
	if got := cs.Server(late); got != late {
		t.Fatal("Server returns its argument")
	}
	if _, err := late.Write([]byte("x")); err == nil {
		t.Error("a hop set after Close is open")
	}

	var race Conns
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, p := pipe()
			defer p.Close()
			race.Client(c)
		}()
	}
	race.Close()
	wg.Wait()
}
