package evloop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// xform is a Handler that passes client bytes to the server and server
// bytes to the client, each byte XORed with key, so the test can tell that
// every byte went through the Handler. A client byte equal to eject asks
// for the session back (the byte itself is passed first). It ends the
// session when either side closes.
type xform struct {
	key      byte
	eject    int // -1: never
	maxQueue int // the most bytes seen waiting to be sent on a socket
	inputs   int
	closed   [2]bool
}

func (x *xform) Input(o *Out, side int, b []byte) {
	x.inputs++
	out := make([]byte, 0, len(b))
	for k, c := range b {
		out = append(out, c^x.key)
		if side == 0 && x.eject >= 0 && int(c) == x.eject {
			o.Write(1, out)
			o.Eject()
			// The rest of b is not the Handler's to pass: it goes back
			// with the sockets, as a protocol would keep it.
			rest := b[k+1:]
			o.p.dec.rest[0] = append(o.p.dec.rest[0], rest...)
			return
		}
	}
	o.Write(1-side, out)
	if q := o.p.dec.queued(1 - side); q > x.maxQueue {
		x.maxQueue = q
	}
}

func (x *xform) Closed(o *Out, side int, err error) {
	x.closed[side] = true
	o.End(err)
}

func decoding(t *testing.T) {
	t.Helper()
	if err := uringAvailable(); err != nil {
		t.Skipf("io_uring: %v", err)
	}
	if Core() != CoreUring {
		t.Skip("SLUICE_RELAY_CORE chose another core")
	}
}

// decoded starts Decode between a client and a server with h and returns
// their far ends and Decode's result.
func decoded(t *testing.T, ctx context.Context, h Handler) (client, server net.Conn, res chan DecodeResult) {
	client, pc := tcpPair(t)
	ps, server := tcpPair(t)
	res = make(chan DecodeResult, 1)
	go func() { res <- Decode(ctx, pc, ps, h) }()
	return client, server, res
}

func waitDecode(t *testing.T, res chan DecodeResult) DecodeResult {
	t.Helper()
	select {
	case r := <-res:
		if !r.Taken {
			t.Fatal("the core did not take two TCP connections")
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Decode did not return")
	}
	return DecodeResult{}
}

func xorAll(b []byte, k byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = c ^ k
	}
	return out
}

// TestDecodeBulk: 8 MiB each way through a Handler at once, the server
// reading 1,000 bytes at a time so that the Handler's output backs up: no
// byte is lost or reordered, what waits to be sent on a socket stays
// bounded, and the session ends when the client closes.
func TestDecodeBulk(t *testing.T) {
	decoding(t)
	x := &xform{key: 0x5a, eject: -1}
	client, server, res := decoded(t, context.Background(), x)
	up := make([]byte, 8<<20)
	down := make([]byte, 8<<20)
	rng := rand.NewChaCha8([32]byte{2})
	rng.Read(up)
	rng.Read(down)
	var wg sync.WaitGroup
	var gotUp, gotDown [32]byte
	wg.Add(3)
	go func() { defer wg.Done(); server.Write(down) }()
	go func() {
		defer wg.Done()
		h := sha256.New()
		buf := make([]byte, 1000)
		for n := 0; n < len(up); {
			k, err := server.Read(buf)
			h.Write(buf[:k])
			n += k
			if err != nil {
				break
			}
		}
		copy(gotUp[:], h.Sum(nil))
	}()
	go func() {
		defer wg.Done()
		h := sha256.New()
		io.CopyN(h, client, int64(len(down)))
		copy(gotDown[:], h.Sum(nil))
	}()
	client.Write(up)
	wg.Wait()
	client.Close()
	r := waitDecode(t, res)
	if r.Err != nil || r.Ejected {
		t.Fatalf("Decode: err %v, ejected %v", r.Err, r.Ejected)
	}
	if gotUp != sha256.Sum256(xorAll(up, 0x5a)) || gotDown != sha256.Sum256(xorAll(down, 0x5a)) {
		t.Fatal("bytes lost, reordered or not passed through the Handler")
	}
	if r.ClientToServer != int64(len(up)) || r.ServerToClient != int64(len(down)) || r.In.ClientToServer != int64(len(up)) {
		t.Fatalf("counts %+v in %+v", r.Counts, r.In)
	}
	if x.maxQueue > outMax+urBufSize {
		t.Fatalf("%d bytes waited to be sent on one socket; the bound is %d", x.maxQueue, outMax+urBufSize)
	}
	if !x.closed[0] {
		t.Fatal("the client's close was not given to the Handler")
	}
	// The server end sees the session closed.
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, server); err != nil {
		t.Fatalf("server side after the end: %v", err)
	}
}

// TestDecodeEject: the Handler asks for the session back in the middle of
// the client's stream while both sides keep sending; the connections
// Decode returns carry on where the Handler stopped: what the Handler did
// not take comes back in Rest, nothing is lost, duplicated or reordered,
// and what the Handler wrote was all sent before.
func TestDecodeEject(t *testing.T) {
	decoding(t)
	x := &xform{key: 0x33, eject: 0xff}
	client, server, res := decoded(t, context.Background(), x)
	// 64 KiB before the marker, then 1 MiB after it (no 0xff in either
	// part), sent in one go.
	before := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	after := bytes.Repeat([]byte("ghijklmnopqrstuv"), 65536)
	msg := append(append(append([]byte(nil), before...), 0xff), after...)
	go client.Write(msg)
	// The server gets the transformed part up to and with the marker...
	want := xorAll(append(append([]byte(nil), before...), 0xff), 0x33)
	got := make([]byte, len(want))
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the Handler's output before the eject is wrong")
	}
	r := waitDecode(t, res)
	if !r.Ejected || r.Err != nil || r.Client == nil || r.Server == nil {
		t.Fatalf("Decode: ejected %v, err %v", r.Ejected, r.Err)
	}
	defer r.Client.Close()
	defer r.Server.Close()
	// ...and the rest comes untransformed: Rest, then the socket.
	go func() {
		r.Server.Write(r.Rest[0])
		io.Copy(r.Server, r.Client)
	}()
	rest := make([]byte, len(after))
	if _, err := io.ReadFull(server, rest); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rest, after) {
		t.Fatal("bytes after the eject lost or reordered")
	}
	// The sockets still work both ways after the hand-back.
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	r.Server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(r.Server, b); err != nil || string(b) != "pong" {
		t.Fatalf("read after eject: %q %v", b, err)
	}
}

// TestDecodeCancel: the session's context ends while both sides are idle;
// Decode returns ctx's error and the far ends see the sockets closed.
func TestDecodeCancel(t *testing.T) {
	decoding(t)
	ctx, cancel := context.WithCancel(context.Background())
	x := &xform{key: 1, eject: -1}
	client, server, res := decoded(t, ctx, x)
	client.Write([]byte("hello"))
	b := make([]byte, 5)
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(server, b); err != nil || string(b) != string(xorAll([]byte("hello"), 1)) {
		t.Fatalf("relay before cancel: %q %v", b, err)
	}
	cancel()
	r := waitDecode(t, res)
	if r.Err != context.Canceled {
		t.Fatalf("Decode err %v, want context.Canceled", r.Err)
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(b); err == nil {
		t.Fatal("client socket still open after cancel")
	}
}
