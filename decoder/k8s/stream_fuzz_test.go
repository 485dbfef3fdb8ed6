package k8s

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	"github.com/moby/spdystream/spdy"
)

// The fuzz targets check three properties of a tap:
//
//   - it never panics, whatever the bytes;
//   - what it holds stays under a fixed bound (heldBound);
//   - decoding does not depend on where the pieces are cut: a stream
//     written whole and in the fuzzer's pieces gives the same streams,
//     and a valid stream (made by a real encoder from the fuzzer's
//     script: gorilla/websocket's client or server, moby/spdystream's
//     Framer) gives back exactly what was sent on each stream.
//
// They are seeded from the captures the TestTap tests record.

// heldBound is the most a tap may hold: one SPDY control frame and the
// small buffers (unmasking, base64, a whole resize message).
const heldBound = maxControl + 256<<10

// held is what a tap holds now, in bytes of buffer capacity.
func held(w io.Writer) int {
	t := w.(*tap)
	switch d := t.dec.(type) {
	case *wsDecoder:
		n := cap(d.ctl) + cap(d.scratch)
		switch m := d.msg.(type) {
		case *channelSink:
			n += cap(m.held) + cap(m.out)
		case *tunnelSink:
			n += cap(m.s.ctl) + cap(m.s.held)
		}
		return n
	case *spdyDecoder:
		return cap(d.ctl) + cap(d.held)
	}
	return 0
}

// pieces cuts b as cuts says (each byte a piece of 1 to 256 bytes, over
// and over), or not at all when cuts is empty.
func pieces(b, cuts []byte) [][]byte {
	if len(cuts) == 0 {
		return [][]byte{b}
	}
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := min(len(b), int(cuts[i%len(cuts)])+1)
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// tapOnce decodes wire with a fresh tap, in pieces, checking the bound
// after each Write, and returns the streams.
func tapOnce(t *testing.T, mk func(emit EmitFunc) io.Writer, wire, cuts []byte) *streams {
	t.Helper()
	s := &streams{}
	w := mk(s.emit)
	for _, p := range pieces(wire, cuts) {
		p = bytes.Clone(p)
		w.Write(p)
		for i := range p {
			p[i] = 0xee // a tap that kept p would report these
		}
		if n := held(w); n > heldBound {
			t.Fatalf("the tap holds %d bytes, over %d", n, heldBound)
		}
	}
	return s
}

// sameStreams fails unless a and b hold the same streams with the same
// bytes.
func sameStreams(t *testing.T, what string, a, b *streams) {
	t.Helper()
	ka, kb := slices.Sorted(maps.Keys(a.data)), slices.Sorted(maps.Keys(b.data))
	if !slices.Equal(ka, kb) {
		t.Fatalf("%s: streams %v, want %v", what, kb, ka)
	}
	for _, k := range ka {
		if !bytes.Equal(a.data[k].Bytes(), b.data[k].Bytes()) {
			t.Fatalf("%s: stream %s differs: %d bytes, want %d", what, k, b.data[k].Len(), a.data[k].Len())
		}
	}
}

// checkCuts decodes wire whole and in pieces and compares: whether the
// decoding ends (raw) does not depend on the cuts, and when it does not
// end the streams are the same.
func checkCuts(t *testing.T, mk func(emit EmitFunc) io.Writer, wire, cuts []byte) {
	t.Helper()
	whole := tapOnce(t, mk, wire, nil)
	cut := tapOnce(t, mk, wire, cuts)
	if (whole.data[StreamRaw] != nil) != (cut.data[StreamRaw] != nil) {
		t.Fatalf("raw whole: %v, raw in pieces: %v", whole.data[StreamRaw] != nil, cut.data[StreamRaw] != nil)
	}
	if whole.data[StreamRaw] == nil {
		sameStreams(t, "in pieces", whole, cut)
	}
	var total int
	for k, b := range cut.data {
		if k == StreamRaw && b.Len() > len(wire) {
			t.Fatalf("raw is %d bytes of %d", b.Len(), len(wire))
		}
		total += b.Len()
	}
	_ = total
}

// wsFuzzProtocols are the WebSocket subprotocols the fuzzer picks from.
var wsFuzzProtocols = []string{
	"v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io",
	"v4.base64.channel.k8s.io", "SPDY/3.1+portforward.k8s.io",
}

func FuzzWebSocketTap(f *testing.F) {
	for i, tc := range []execCase{
		{handler: v5Exec, client: clientGoWS("v5.channel.k8s.io"), exit: 3, upgrade: UpgradeWebSocket, protocol: "v5.channel.k8s.io"},
		{handler: kubeletExec, client: clientGoWS("v4.channel.k8s.io"), exit: 3, upgrade: UpgradeWebSocket, protocol: "v4.channel.k8s.io"},
		{handler: kubeletExec, client: xnetBase64("base64.channel.k8s.io"), upgrade: UpgradeWebSocket, protocol: "base64.channel.k8s.io"},
	} {
		c := runExec(f, tc, "echo hello\nexit\n")
		sel := byte(slices.Index(wsFuzzProtocols, tc.protocol))
		f.Add(c.c2s, []byte{byte(i), 3, 200}, sel, true)
		f.Add(c.s2c, []byte{1}, sel, false)
	}
	f.Add([]byte("\x02\x05hello\x00\x03abc\x03\x04ping\x04\x09fragments"), []byte{0, 7}, byte(0), true)
	f.Fuzz(func(t *testing.T, wire, cuts []byte, sel byte, toServer bool) {
		protocol := wsFuzzProtocols[int(sel)%len(wsFuzzProtocols)]
		mk := func(emit EmitFunc) io.Writer { return NewTap(UpgradeWebSocket, protocol, toServer, emit) }
		checkCuts(t, mk, wire, cuts)
		if protocol == "SPDY/3.1+portforward.k8s.io" {
			return
		}

		// wire as a script of messages, sent by gorilla/websocket.
		frames, want := wsScript(t, wire, protocol, toServer, 16+int(sel)*7)
		got := tapOnce(t, mk, frames, cuts)
		sameStreams(t, "encoded by gorilla/websocket", want, got)
	})
}

// memConn is a net.Conn in memory: what is written is kept; as a
// client's connection it answers the WebSocket handshake.
type memConn struct {
	out, in  bytes.Buffer
	client   bool
	answered bool
}

func (c *memConn) Read(p []byte) (int, error) {
	if c.in.Len() == 0 {
		return 0, io.EOF
	}
	return c.in.Read(p)
}

func (c *memConn) Write(p []byte) (int, error) {
	c.out.Write(p)
	if c.client && !c.answered {
		if req, _, ok := bytes.Cut(c.out.Bytes(), []byte("\r\n\r\n")); ok {
			r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(req, "\r\n\r\n"...))))
			if err != nil {
				return 0, err
			}
			h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			fmt.Fprintf(&c.in, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
				base64.StdEncoding.EncodeToString(h[:]))
			c.answered = true
			c.out.Reset()
		}
	}
	return len(p), nil
}

func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

// hijacker is the ResponseWriter gorilla's Upgrader hijacks.
type hijacker struct {
	httptest.ResponseRecorder
	c *memConn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.c, bufio.NewReadWriter(bufio.NewReader(h.c), bufio.NewWriter(h.c)), nil
}

// wsConn returns a gorilla/websocket connection writing to a memConn:
// the client's (masked frames) when toServer, else the server's.
func wsConn(t *testing.T, toServer bool, writeBuf int) (*gwebsocket.Conn, *memConn) {
	mc := &memConn{client: toServer}
	if toServer {
		d := gwebsocket.Dialer{
			NetDial:         func(string, string) (net.Conn, error) { return mc, nil },
			WriteBufferSize: writeBuf,
		}
		conn, _, err := d.Dial("ws://pod.invalid/exec", nil)
		if err != nil {
			t.Fatal(err)
		}
		return conn, mc
	}
	req := httptest.NewRequest("GET", "/exec", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	up := gwebsocket.Upgrader{WriteBufferSize: writeBuf}
	conn, err := up.Upgrade(&hijacker{c: mc}, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	mc.out.Reset() // the 101 response
	return conn, mc
}

// wsScript sends script as messages with gorilla/websocket and returns
// the frames and what a tap must report. The script is read as ops: a
// byte choosing what to send, a length, that many bytes (fewer at the
// end): a message on stdin, stdout or stderr; a ping; or a message
// written in two parts with a ping between them (fragmented when longer
// than the write buffer). A v5 close signal and a close frame end it.
func wsScript(t *testing.T, script []byte, protocol string, toServer bool, writeBuf int) ([]byte, *streams) {
	t.Helper()
	conn, mc := wsConn(t, toServer, writeBuf)
	want := &streams{}
	b64 := wsProtocols[protocol].base64
	send := func(ch byte, parts ...[]byte) {
		typ := gwebsocket.BinaryMessage
		if b64 {
			typ = gwebsocket.TextMessage
		}
		w, err := conn.NextWriter(typ)
		if err != nil {
			t.Fatal(err)
		}
		if b64 {
			w.Write([]byte{'0' + ch})
		} else {
			w.Write([]byte{ch})
		}
		for i, p := range parts {
			if i > 0 {
				// A ping between two fragments of the message.
				conn.WriteControl(gwebsocket.PingMessage, []byte("mid"), time.Time{})
				want.emit(StreamPing, 0, []byte("mid"))
			}
			if b64 {
				// Each part encoded on its own would put padding in the
				// middle: encode the parts as one.
				continue
			}
			w.Write(p)
		}
		if b64 {
			w.Write([]byte(base64.StdEncoding.EncodeToString(bytes.Join(parts, nil))))
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		want.emit((&channelSink{}).channel(ch), 0, bytes.Join(parts, nil))
	}
	for len(script) >= 2 {
		op, n := script[0], int(script[1])
		script = script[2:]
		n = min(n, len(script))
		p := script[:n]
		script = script[n:]
		switch op % 5 {
		case 0, 1, 2:
			send(op%5, p)
		case 3:
			p = p[:min(len(p), 125)]
			conn.WriteControl(gwebsocket.PingMessage, p, time.Time{})
			want.emit(StreamPing, 0, p)
		case 4:
			send(op/5%3, p[:n/2], p[n/2:])
		}
	}
	if !b64 {
		conn.WriteMessage(gwebsocket.BinaryMessage, []byte{255, 0})
		want.emit(StreamClose, 0, []byte{0})
	}
	conn.WriteControl(gwebsocket.CloseMessage, gwebsocket.FormatCloseMessage(gwebsocket.CloseNormalClosure, ""), time.Time{})
	// Drop empty streams: a tap reports no empty piece.
	for k, b := range want.data {
		if b.Len() == 0 {
			delete(want.data, k)
		}
	}
	return bytes.Clone(mc.out.Bytes()), want
}

// spdyFuzzProtocols are the SPDY subprotocols the fuzzer picks from.
var spdyFuzzProtocols = []string{"v4.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io"}

func FuzzSPDYTap(f *testing.F) {
	for i, tc := range []execCase{
		{handler: kubeletExec, client: clientGoSPDY, exit: 3, upgrade: UpgradeSPDY, protocol: "v4.channel.k8s.io"},
		{handler: kubeletExec, client: clientGoSPDY, tty: true, upgrade: UpgradeSPDY, protocol: "v4.channel.k8s.io"},
	} {
		c := runExec(f, tc, "echo hello\nexit\n")
		f.Add(c.c2s, []byte{byte(i), 9, 100}, byte(0))
		f.Add(c.s2c, []byte{2}, byte(0))
	}
	srv, rl := startServer(f, http.HandlerFunc(criforwardServe))
	c, _ := runPortForward(f, srv.URL, rl)
	f.Add(c.c2s, []byte{5}, byte(1))
	f.Add(c.s2c, []byte{}, byte(1))
	f.Add([]byte("\x00\x05hello\x01\x03abc\x03\x04ping"), []byte{0, 7}, byte(0))
	f.Fuzz(func(t *testing.T, wire, cuts []byte, sel byte) {
		protocol := spdyFuzzProtocols[int(sel)%len(spdyFuzzProtocols)]
		mk := func(emit EmitFunc) io.Writer { return NewTap(UpgradeSPDY, protocol, true, emit) }
		checkCuts(t, mk, wire, cuts)

		frames, want := spdyScript(t, wire)
		got := tapOnce(t, mk, frames, cuts)
		sameStreams(t, "encoded by spdystream's Framer", want, got)
	})
}

// spdyScript writes script as SPDY frames with spdystream's Framer and
// returns them and what a tap must report. It opens streams stdin,
// stdout, stderr, resize and a port-forward data stream on port 8080
// (SYN_STREAM, compressed headers), then reads the script as ops: a byte
// choosing the stream (or a PING, a WINDOW_UPDATE, a SETTINGS), a
// length, that many bytes.
func spdyScript(t *testing.T, script []byte) ([]byte, *streams) {
	t.Helper()
	var buf bytes.Buffer
	fr, err := spdy.NewFramer(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	type st struct {
		name string
		port int
	}
	opened := []st{{StreamStdin, 0}, {StreamStdout, 0}, {StreamStderr, 0}, {StreamResize, 0}, {StreamData, 8080}}
	for i, s := range opened {
		h := http.Header{}
		h.Set("streamType", s.name)
		if s.port != 0 {
			h.Set("port", fmt.Sprint(s.port))
			h.Set("requestID", "0")
		}
		if err := fr.WriteFrame(&spdy.SynStreamFrame{StreamId: spdy.StreamId(2*i + 1), Headers: h}); err != nil {
			t.Fatal(err)
		}
	}
	want := &streams{}
	for len(script) >= 2 {
		op, n := script[0], int(script[1])
		script = script[2:]
		n = min(n, len(script))
		p := script[:n]
		script = script[n:]
		var frame spdy.Frame
		switch k := int(op) % 8; {
		case k < len(opened):
			frame = &spdy.DataFrame{StreamId: spdy.StreamId(2*k + 1), Data: p}
			want.emit(opened[k].name, opened[k].port, p)
		case k == 5:
			frame = &spdy.PingFrame{Id: uint32(n) + 1}
		case k == 6:
			frame = &spdy.WindowUpdateFrame{StreamId: 1, DeltaWindowSize: uint32(n) + 1}
		default:
			frame = &spdy.SettingsFrame{FlagIdValues: []spdy.SettingsFlagIdValue{{Id: spdy.SettingsInitialWindowSize, Value: uint32(n)}}}
		}
		if err := fr.WriteFrame(frame); err != nil {
			t.Fatal(err)
		}
	}
	fr.WriteFrame(&spdy.GoAwayFrame{})
	for k, b := range want.data {
		if b.Len() == 0 {
			delete(want.data, k)
		}
	}
	return bytes.Clone(buf.Bytes()), want
}
