package k8s

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gwebsocket "github.com/gorilla/websocket"
	"golang.org/x/net/websocket"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	criforward "k8s.io/cri-streaming/pkg/streaming/portforward"
	criexec "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// The tests below run kubectl's own stream clients (client-go's
// remotecommand and portforward) against the kubelet's stream server
// (cri-streaming) or k8s.io/streaming's wsstream.Conn on an httptest
// server, record the upgraded connection's bytes both ways as the server
// saw them, and feed them to taps in random pieces.

// recConn records what a server connection reads (the client's bytes)
// and writes (the server's).
type recConn struct {
	net.Conn
	mu       sync.Mutex
	c2s, s2c bytes.Buffer
	once     sync.Once
	closed   chan struct{}
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.c2s.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.s2c.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// recListener records every connection it accepts.
type recListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recConn
}

func (l *recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recConn{Conn: c, closed: make(chan struct{})}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

// capture is one upgraded connection's bytes after the HTTP exchange:
// the 101 response's Sec-WebSocket-Protocol or X-Stream-Protocol-Version
// and what followed each way.
type capture struct {
	upgrade, protocol string
	c2s, s2c          []byte
}

// startServer starts an httptest server whose connections are recorded.
func startServer(t testing.TB, h http.Handler) (*httptest.Server, *recListener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	rl := &recListener{Listener: srv.Listener}
	srv.Listener = rl
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, rl
}

// upgraded waits until the server has closed the upgraded connection and
// returns its capture.
func upgraded(t testing.TB, rl *recListener) capture {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		rl.mu.Lock()
		conns := rl.conns
		rl.mu.Unlock()
		for _, c := range conns {
			c.mu.Lock()
			up := bytes.HasPrefix(c.s2c.Bytes(), []byte("HTTP/1.1 101"))
			c.mu.Unlock()
			if !up {
				continue
			}
			select {
			case <-c.closed:
			case <-deadline:
				t.Fatal("the server did not close the upgraded connection in 20s")
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			return split(t, c.c2s.Bytes(), c.s2c.Bytes())
		}
		select {
		case <-deadline:
			t.Fatal("no upgraded connection in 20s")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// split cuts the HTTP request and response off a connection's bytes.
func split(t testing.TB, c2s, s2c []byte) capture {
	t.Helper()
	req, c2sRest, ok1 := bytes.Cut(c2s, []byte("\r\n\r\n"))
	resp, s2cRest, ok2 := bytes.Cut(s2c, []byte("\r\n\r\n"))
	if !ok1 || !ok2 {
		t.Fatalf("no end of HTTP header in the capture:\n%q\n%q", c2s, s2c)
	}
	var c capture
	for _, line := range strings.Split(string(resp), "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		switch strings.ToLower(k) {
		case "upgrade":
			if strings.EqualFold(strings.TrimSpace(v), "websocket") {
				c.upgrade = UpgradeWebSocket
			} else {
				c.upgrade = UpgradeSPDY
			}
		case "sec-websocket-protocol", "x-stream-protocol-version":
			c.protocol = strings.TrimSpace(v)
		}
	}
	_ = req
	c.c2s, c.s2c = bytes.Clone(c2sRest), bytes.Clone(s2cRest)
	return c
}

// streams is what taps reported: each stream's bytes by "name" or
// "name:port", and the names in order of first report.
type streams struct {
	data  map[string]*bytes.Buffer
	order []string
}

func (s *streams) emit(stream string, port int, data []byte) {
	k := stream
	if port != 0 {
		k = fmt.Sprintf("%s:%d", stream, port)
	}
	if s.data == nil {
		s.data = map[string]*bytes.Buffer{}
	}
	b := s.data[k]
	if b == nil {
		b = &bytes.Buffer{}
		s.data[k] = b
		s.order = append(s.order, k)
	}
	b.Write(data)
}

func (s *streams) get(k string) string {
	if b := s.data[k]; b != nil {
		return b.String()
	}
	return ""
}

// feed writes b to w in random pieces (1 byte each when maxPiece is 1,
// whole when 0), from a copy that is scribbled over after each Write to
// catch a tap that keeps p.
func feed(w io.Writer, b []byte, maxPiece int, rng *rand.Rand) {
	for len(b) > 0 {
		n := len(b)
		if maxPiece > 0 {
			n = min(n, 1+rng.IntN(maxPiece))
		}
		p := bytes.Clone(b[:n])
		w.Write(p)
		for i := range p {
			p[i] = 0xee
		}
		b = b[n:]
	}
}

// tapBoth decodes a capture with a pair of taps, in pieces of at most
// maxPiece bytes, and returns what each direction reported.
func tapBoth(c capture, maxPiece int, seed uint64) (toServer, toClient *streams) {
	toServer, toClient = &streams{}, &streams{}
	ts, tc := NewTapPair(c.upgrade, c.protocol, toServer.emit, toClient.emit)
	rng := rand.New(rand.NewPCG(seed, 7))
	feed(ts, c.c2s, maxPiece, rng)
	feed(tc, c.s2c, maxPiece, rng)
	return toServer, toClient
}

// pieceSizes are the chunkings every capture is decoded with.
var pieceSizes = []int{0, 1, 3, 17, 512, 4096}

// echoExec is a container's command: it copies want bytes of stdin to
// stdout, then writes "done\n" to stdout and a line to stderr, waits for
// resizes terminal sizes, and exits with status exit.
type echoExec struct {
	want    int
	resizes int
	exit    int
}

const stderrLine = "warning: written to stderr\n"

func (e *echoExec) run(ctx context.Context, in io.Reader, out, errw io.Writer, resize <-chan criexec.TerminalSize) error {
	// Terminal sizes are taken as they come, as a runtime does: the
	// server's read loop stalls while one waits to be taken.
	resized := make(chan error, 1)
	go func() {
		for range e.resizes {
			select {
			case <-resize:
			case <-ctx.Done():
				resized <- ctx.Err()
				return
			case <-time.After(10 * time.Second):
				resized <- errors.New("no resize in 10s")
				return
			}
		}
		resized <- nil
	}()
	if in != nil && e.want > 0 {
		if _, err := io.CopyN(out, in, int64(e.want)); err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
	}
	if err := <-resized; err != nil {
		return err
	}
	io.WriteString(out, "done\n")
	if errw != nil {
		io.WriteString(errw, stderrLine)
	}
	if e.exit != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("exit %d", e.exit), Code: e.exit}
	}
	return nil
}

func (e *echoExec) ExecInContainer(ctx context.Context, name, uid, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan criexec.TerminalSize, timeout time.Duration) error {
	var ew io.Writer
	if errw != nil {
		ew = errw
	}
	return e.run(ctx, in, out, ew, resize)
}

// kubeletExec serves exec as the kubelet does (SPDY or WebSocket v1 to v4).
func kubeletExec(e *echoExec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		opts, err := criexec.NewOptions(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		criexec.ServeExec(w, req, e, "pod", "uid", "c", []string{"sh"}, opts, 0, 10*time.Second, criexec.SupportedStreamingProtocols)
	})
}

// v5Exec serves exec over v5.channel.k8s.io with wsstream.Conn (the
// kubelet's server stops at v4; the API server speaks v5 to clients).
func v5Exec(e *echoExec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
			"v5.channel.k8s.io": {Binary: true, Channels: []wsstream.ChannelType{
				wsstream.ReadChannel, wsstream.WriteChannel, wsstream.WriteChannel, wsstream.WriteChannel, wsstream.ReadChannel}},
		})
		_, s, err := conn.Open(w, req)
		if err != nil {
			return
		}
		defer conn.Close()
		s[1].Write(nil) // the kubelet's "connected" signal
		status := `{"metadata":{},"status":"Success"}`
		if err := e.run(req.Context(), s[0], s[1], s[2], nil); err != nil {
			status = fmt.Sprintf(`{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: %v","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"%d"}]}}`, err, e.exit)
		}
		io.WriteString(s[3], status)
	})
}

// sizes is a TerminalSizeQueue of fixed sizes.
type sizes struct {
	mu   sync.Mutex
	left []remotecommand.TerminalSize
	stop chan struct{}
}

func (q *sizes) Next() *remotecommand.TerminalSize {
	q.mu.Lock()
	if len(q.left) > 0 {
		s := q.left[0]
		q.left = q.left[1:]
		q.mu.Unlock()
		return &s
	}
	q.mu.Unlock()
	<-q.stop // no more: the client stops asking when the stream ends
	return nil
}

// execCase is one exec session: how the client connects, what it sends,
// and what the taps must report.
type execCase struct {
	name    string
	handler func(*echoExec) http.Handler
	// client runs the session against url; it returns the client's
	// error (a non-zero exit is one).
	client func(ctx context.Context, t testing.TB, url string, stdin string, tty bool, q remotecommand.TerminalSizeQueue) error
	tty    bool
	exit   int
	// upgrade and protocol are the negotiation the capture must show.
	upgrade, protocol string
}

func clientGoWS(protocols ...string) func(context.Context, testing.TB, string, string, bool, remotecommand.TerminalSizeQueue) error {
	return func(ctx context.Context, t testing.TB, u, stdin string, tty bool, q remotecommand.TerminalSizeQueue) error {
		ex, err := remotecommand.NewWebSocketExecutorForProtocols(&restclient.Config{Host: u}, "GET", u, protocols...)
		if err != nil {
			t.Fatal(err)
		}
		return stream(ctx, ex, stdin, tty, q)
	}
}

func clientGoSPDY(ctx context.Context, t testing.TB, u, stdin string, tty bool, q remotecommand.TerminalSizeQueue) error {
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := remotecommand.NewSPDYExecutor(&restclient.Config{Host: u}, "POST", pu)
	if err != nil {
		t.Fatal(err)
	}
	return stream(ctx, ex, stdin, tty, q)
}

func stream(ctx context.Context, ex remotecommand.Executor, stdin string, tty bool, q remotecommand.TerminalSizeQueue) error {
	opts := remotecommand.StreamOptions{Stdin: strings.NewReader(stdin), Stdout: io.Discard, Tty: tty, TerminalSizeQueue: q}
	if !tty {
		opts.Stderr = io.Discard
	}
	return ex.StreamWithContext(ctx, opts)
}

// xnetBase64 is a client of base64.channel.k8s.io written with
// golang.org/x/net/websocket: stdin as text messages "0" + base64, in two
// messages, then it reads until the server closes.
func xnetBase64(protocol string) func(context.Context, testing.TB, string, string, bool, remotecommand.TerminalSizeQueue) error {
	return func(ctx context.Context, t testing.TB, u, stdin string, tty bool, q remotecommand.TerminalSizeQueue) error {
		cfg, err := websocket.NewConfig(strings.Replace(u, "http://", "ws://", 1), "http://localhost/")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Protocol = []string{protocol}
		ws, err := websocket.DialConfig(cfg)
		if err != nil {
			return err
		}
		defer ws.Close()
		half := len(stdin) / 2
		for _, part := range []string{stdin[:half], stdin[half:]} {
			if err := websocket.Message.Send(ws, "0"+base64.StdEncoding.EncodeToString([]byte(part))); err != nil {
				return err
			}
		}
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return nil
			}
		}
	}
}

// bigInput is stdin large enough for 16- and 64-bit WebSocket lengths
// and several SPDY data frames.
func bigInput() string {
	var b strings.Builder
	for i := 0; b.Len() < 150<<10; i++ {
		fmt.Fprintf(&b, "line %d of what the job typed: \x00\xff\xc3\xa9\n", i)
	}
	return b.String()
}

func TestTapExec(t *testing.T) {
	small := "echo hello\n"
	cases := []execCase{
		{name: "websocket v5", handler: v5Exec, client: clientGoWS("v5.channel.k8s.io"), exit: 3,
			upgrade: UpgradeWebSocket, protocol: "v5.channel.k8s.io"},
		{name: "websocket v4 kubelet", handler: kubeletExec, client: clientGoWS("v4.channel.k8s.io"), exit: 3,
			upgrade: UpgradeWebSocket, protocol: "v4.channel.k8s.io"},
		{name: "websocket v4 tty", handler: kubeletExec, client: clientGoWS("v4.channel.k8s.io"), tty: true,
			upgrade: UpgradeWebSocket, protocol: "v4.channel.k8s.io"},
		{name: "websocket base64", handler: kubeletExec, client: xnetBase64("base64.channel.k8s.io"),
			upgrade: UpgradeWebSocket, protocol: "base64.channel.k8s.io"},
		{name: "websocket v4 base64", handler: kubeletExec, client: xnetBase64("v4.base64.channel.k8s.io"),
			upgrade: UpgradeWebSocket, protocol: "v4.base64.channel.k8s.io"},
		{name: "spdy v4", handler: kubeletExec, client: clientGoSPDY, exit: 3,
			upgrade: UpgradeSPDY, protocol: "v4.channel.k8s.io"},
		{name: "spdy v4 tty", handler: kubeletExec, client: clientGoSPDY, tty: true,
			upgrade: UpgradeSPDY, protocol: "v4.channel.k8s.io"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, stdin := range []string{small, bigInput()} {
				c := runExec(t, tc, stdin)
				checkExec(t, tc, c, stdin)
			}
		})
	}
}

// runExec runs one session and returns its capture.
func runExec(t testing.TB, tc execCase, stdin string) capture {
	t.Helper()
	e := &echoExec{want: len(stdin), exit: tc.exit}
	var q *sizes
	if tc.tty {
		e.resizes = 2
		q = &sizes{left: []remotecommand.TerminalSize{{Width: 80, Height: 24}, {Width: 132, Height: 43}}, stop: make(chan struct{})}
		defer close(q.stop)
	}
	srv, rl := startServer(t, tc.handler(e))
	u := srv.URL + "/exec?input=1&output=1"
	if tc.tty {
		u += "&tty=1"
	} else {
		u += "&error=1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sq remotecommand.TerminalSizeQueue
	if q != nil {
		sq = q
	}
	err := tc.client(ctx, t, u, stdin, tc.tty, sq)
	var exitErr utilexec.ExitError
	switch {
	case tc.exit != 0 && tc.protocol != "base64.channel.k8s.io" && tc.protocol != "v4.base64.channel.k8s.io":
		if !errors.As(err, &exitErr) || exitErr.ExitStatus() != tc.exit {
			t.Fatalf("client: got %v, want exit status %d", err, tc.exit)
		}
	case err != nil:
		t.Fatalf("client: %v", err)
	}
	c := upgraded(t, rl)
	if c.upgrade != tc.upgrade || c.protocol != tc.protocol {
		t.Fatalf("negotiated %s %q, want %s %q", c.upgrade, c.protocol, tc.upgrade, tc.protocol)
	}
	return c
}

// checkExec decodes a capture in pieces of several sizes and checks
// every stream.
func checkExec(t *testing.T, tc execCase, c capture, stdin string) {
	t.Helper()
	for _, piece := range pieceSizes {
		up, down := tapBoth(c, piece, uint64(piece))
		where := fmt.Sprintf("pieces of %d, %d bytes of stdin", piece, len(stdin))
		if up.data[StreamRaw] != nil || down.data[StreamRaw] != nil {
			t.Fatalf("%s: raw bytes reported: client %q, server %q", where, tail(up.get(StreamRaw)), tail(down.get(StreamRaw)))
		}
		if got := up.get(StreamStdin); got != stdin {
			t.Errorf("%s: stdin: got %d bytes, want %d", where, len(got), len(stdin))
		}
		if got, want := down.get(StreamStdout), stdin+"done\n"; got != want {
			t.Errorf("%s: stdout: got %d bytes ending %q, want %d", where, len(got), tail(got), len(want))
		}
		wantErr := stderrLine
		if tc.tty {
			wantErr = ""
		}
		if got := down.get(StreamStderr); got != wantErr {
			t.Errorf("%s: stderr: got %q, want %q", where, got, wantErr)
		}
		status := down.get(StreamError)
		switch {
		case strings.Contains(tc.protocol, "v4") || strings.Contains(tc.protocol, "v5"):
			wantStatus := `"status":"Success"`
			if tc.exit != 0 {
				wantStatus = fmt.Sprintf(`"message":"%d"`, tc.exit)
			}
			if !strings.Contains(status, wantStatus) {
				t.Errorf("%s: error stream %q does not hold %s", where, status, wantStatus)
			}
		case status != "":
			t.Errorf("%s: error stream %q, want none (pre-v4 reports only failures)", where, status)
		}
		if tc.tty {
			if got, want := up.get(StreamResize), `{"Width":80,"Height":24}{"Width":132,"Height":43}`; !strings.Contains(got, `{"Width":80,"Height":24}`) || !strings.Contains(got, `{"Width":132,"Height":43}`) {
				t.Errorf("%s: resize: got %q, want %s", where, got, want)
			}
		}
		if tc.protocol == "v5.channel.k8s.io" {
			// client-go sends stdin's close when stdin ends; a command
			// that ends first may take the connection down before it
			// does (seen under -race), so the close may be missing, but
			// never another stream's.
			if got := up.get(StreamClose); got != "\x00" && got != "" {
				t.Errorf("%s: close: got %q, want stdin's (0)", where, got)
			}
		}
		if c.upgrade == UpgradeWebSocket {
			// NewTap alone decodes a WebSocket direction as the pair does.
			var up1, down1 streams
			feed(NewTap(c.upgrade, c.protocol, true, up1.emit), c.c2s, piece, rand.New(rand.NewPCG(5, 6)))
			feed(NewTap(c.upgrade, c.protocol, false, down1.emit), c.s2c, piece, rand.New(rand.NewPCG(5, 6)))
			for _, k := range append(up.order, down.order...) {
				if up1.get(k) != up.get(k) || down1.get(k) != down.get(k) {
					t.Errorf("%s: NewTap's %s differs from NewTapPair's", where, k)
				}
			}
		}
		for _, s := range append(up.order, down.order...) {
			if s == StreamUnknown {
				t.Errorf("%s: unknown stream reported: client %q server %q", where, up.get(s), down.get(s))
			}
		}
	}
}

func tail(s string) string {
	if len(s) > 20 {
		return s[len(s)-20:]
	}
	return s
}

// echoForward is a pod's port: it answers what it reads with "echo: "
// and the bytes, until the stream ends.
type echoForward struct{}

func (echoForward) PortForward(ctx context.Context, name, uid string, port int32, s io.ReadWriteCloser) error {
	defer s.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if _, werr := s.Write(append([]byte(fmt.Sprintf("echo %d: ", port)), buf[:n]...)); werr != nil {
				return werr
			}
		}
		if err != nil {
			return nil
		}
	}
}

// criforwardServe serves port-forward as the kubelet does, to echoForward.
func criforwardServe(w http.ResponseWriter, req *http.Request) {
	criforward.ServePortForward(w, req, echoForward{}, "pod", "uid", &criforward.V4Options{}, 0, 10*time.Second, criforward.SupportedProtocols)
}

// TestTapPortForwardSPDY runs kubectl's port-forward (client-go over
// SPDY) against the kubelet's port-forward server, for two ports.
func TestTapPortForwardSPDY(t *testing.T) {
	srv, rl := startServer(t, http.HandlerFunc(criforwardServe))
	c, sent := runPortForward(t, srv.URL, rl)
	if c.upgrade != UpgradeSPDY || c.protocol != "portforward.k8s.io" {
		t.Fatalf("negotiated %s %q", c.upgrade, c.protocol)
	}
	checkPortForward(t, c, sent)

	// The server's direction alone never sees the SYN_STREAMs that name
	// its streams: NewTapPair is what names them.
	var alone streams
	feed(NewTap(c.upgrade, c.protocol, false, alone.emit), c.s2c, 0, nil)
	if !slices.Equal(alone.order, []string{StreamUnknown}) {
		t.Errorf("NewTap alone on the server's direction reported %v, want only %s", alone.order, StreamUnknown)
	}
}

// runPortForward forwards two local ports to 7001 and 7002 through url,
// sends each a message over a connection, and returns the capture and
// what was sent to each port.
func runPortForward(t testing.TB, u string, rl *recListener) (capture, map[int]string) {
	t.Helper()
	cfg := &restclient.Config{Host: u}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u + "/portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", pu)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.New(dialer, []string{":7001", ":7002"}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("port-forward: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("port-forward not ready in 20s")
	}
	ports, err := fw.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	sent := map[int]string{}
	for _, p := range ports {
		msg := fmt.Sprintf("GET / HTTP/1.0\r\nHost: port-%d\r\n\r\n", p.Remote)
		sent[int(p.Remote)] = msg
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.Local))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("echo %d: %s", p.Remote, msg)
		got := make([]byte, len(want))
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
			t.Fatalf("port %d: read %q, %v; want %q", p.Remote, got, err, want)
		}
		conn.Close()
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("port-forward did not stop in 20s")
	}
	return upgraded(t, rl), sent
}

func checkPortForward(t *testing.T, c capture, sent map[int]string) {
	t.Helper()
	for _, piece := range pieceSizes {
		up, down := tapBoth(c, piece, uint64(piece))
		if up.data[StreamRaw] != nil || down.data[StreamRaw] != nil || up.data[StreamUnknown] != nil || down.data[StreamUnknown] != nil {
			t.Fatalf("pieces of %d: raw or unknown streams: client %v, server %v", piece, up.order, down.order)
		}
		for port, msg := range sent {
			k := fmt.Sprintf("%s:%d", StreamData, port)
			if got := up.get(k); got != msg {
				t.Errorf("pieces of %d: %s to the server: got %q, want %q", piece, k, got, msg)
			}
			if got, want := down.get(k), fmt.Sprintf("echo %d: %s", port, msg); got != want {
				t.Errorf("pieces of %d: %s to the client: got %q, want %q", piece, k, got, want)
			}
		}
	}
}

// TestTapSPDYTunnel checks SPDY tunnelled over WebSocket ("SPDY/3.1+
// portforward.k8s.io", kubectl port-forward's WebSocket form): a real
// port-forward capture is sent as binary messages, one per write as
// client-go's TunnelingConnection does, by a gorilla/websocket client to
// an x/net/websocket server, and the tunnel's bytes are tapped.
func TestTapSPDYTunnel(t *testing.T) {
	fsrv, frl := startServer(t, http.HandlerFunc(criforwardServe))
	inner, sent := runPortForward(t, fsrv.URL, frl)

	const proto = "SPDY/3.1+portforward.k8s.io"
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := func(b []byte) [][]byte {
		var out [][]byte
		for len(b) > 0 {
			n := min(len(b), 1+rng.IntN(3000))
			out = append(out, b[:n])
			b = b[n:]
		}
		return out
	}
	s2cPieces, c2sPieces := pieces(inner.s2c), pieces(inner.c2s)
	received := make(chan []byte, 1)
	srv, rl := startServer(t, websocket.Server{
		Handshake: func(cfg *websocket.Config, req *http.Request) error {
			cfg.Protocol = []string{proto}
			return nil
		},
		Handler: func(ws *websocket.Conn) {
			ws.PayloadType = websocket.BinaryFrame
			for _, p := range s2cPieces {
				if _, err := ws.Write(p); err != nil {
					return
				}
			}
			var got bytes.Buffer
			for got.Len() < len(inner.c2s) {
				var msg []byte
				if err := websocket.Message.Receive(ws, &msg); err != nil {
					break
				}
				got.Write(msg)
			}
			received <- got.Bytes()
			ws.Close()
		},
	})
	d := gwebsocket.Dialer{Subprotocols: []string{proto}}
	conn, _, err := d.Dial(strings.Replace(srv.URL, "http://", "ws://", 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range c2sPieces {
		if err := conn.WriteMessage(gwebsocket.BinaryMessage, p); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	select {
	case got := <-received:
		if !bytes.Equal(got, inner.c2s) {
			t.Fatalf("the server received %d bytes, want %d", len(got), len(inner.c2s))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the tunnel server did not finish in 20s")
	}
	conn.Close()
	c := upgraded(t, rl)
	if c.upgrade != UpgradeWebSocket || c.protocol != proto {
		t.Fatalf("negotiated %s %q", c.upgrade, c.protocol)
	}
	checkPortForward(t, c, sent)
}

// TestTapRaw checks what a tap cannot decode is kept: an unknown
// subprotocol, a framing error in the middle, bytes after a close frame.
func TestTapRaw(t *testing.T) {
	// A masked binary frame "\x00hi" (stdin), then a frame with a
	// reserved bit set.
	key := []byte{1, 2, 3, 4}
	frame := func(b0 byte, payload []byte) []byte {
		f := []byte{b0, 0x80 | byte(len(payload))}
		f = append(f, key...)
		for i, c := range payload {
			f = append(f, c^key[i%4])
		}
		return f
	}
	good := frame(0x82, []byte("\x00hi"))
	bad := frame(0xc2, []byte("\x00no"))
	closeFrame := frame(0x88, []byte{0x03, 0xe8})
	after := frame(0x82, []byte("\x00late"))
	cases := []struct {
		name, upgrade, protocol string
		wire                    []byte
		stdin, raw              string
	}{
		{"unknown subprotocol", UpgradeWebSocket, "v9.channel.k8s.io", good, "", string(good)},
		{"unknown upgrade", "h2c", "v4.channel.k8s.io", good, "", string(good)},
		{"reserved bit", UpgradeWebSocket, "v4.channel.k8s.io", append(append(bytes.Clone(good), bad...), good...), "hi", string(bad) + string(good)},
		{"after close", UpgradeWebSocket, "v4.channel.k8s.io", append(append(bytes.Clone(good), closeFrame...), after...), "hi", string(after)},
		{"unmasked from the client", UpgradeWebSocket, "v4.channel.k8s.io", []byte{0x82, 0x03, 0x00, 'h', 'i'}, "", "\x82\x03\x00hi"},
		{"empty ping", UpgradeWebSocket, "v4.channel.k8s.io", append(frame(0x89, nil), good...), "hi", ""},
		{"spdy control frame over the cap", UpgradeSPDY, "v4.channel.k8s.io", []byte{0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 1, 2}, "", "\x80\x03\x00\x01\x00\xff\xff\xff\x01\x02"},
	}
	for _, tc := range cases {
		for _, piece := range []int{0, 1, 2, 5} {
			var s streams
			feed(NewTap(tc.upgrade, tc.protocol, true, s.emit), tc.wire, piece, rand.New(rand.NewPCG(3, 4)))
			if got := s.get(StreamStdin); got != tc.stdin {
				t.Errorf("%s, pieces of %d: stdin %q, want %q", tc.name, piece, got, tc.stdin)
			}
			if got := s.get(StreamRaw); got != tc.raw {
				t.Errorf("%s, pieces of %d: raw %q, want %q", tc.name, piece, got, tc.raw)
			}
			if tc.name == "empty ping" && s.data[StreamPing] != nil {
				t.Errorf("%s: an empty ping was reported", tc.name)
			}
		}
	}
}

// TestTapErrors checks why decoding ends, for each kind of bad input.
func TestTapErrors(t *testing.T) {
	key := []byte{9, 8, 7, 6}
	masked := func(b0 byte, payload string) []byte {
		f := append([]byte{b0, 0x80 | byte(len(payload))}, key...)
		for i := range len(payload) {
			f = append(f, payload[i]^key[i%4])
		}
		return f
	}
	for _, tc := range []struct {
		name, upgrade, protocol string
		wire                    []byte
		want                    error
	}{
		{"reserved bit", UpgradeWebSocket, "v4.channel.k8s.io", masked(0xa2, "\x00x"), errFrame},
		{"opcode 3", UpgradeWebSocket, "v4.channel.k8s.io", masked(0x83, "\x00x"), errFrame},
		{"continuation first", UpgradeWebSocket, "v4.channel.k8s.io", masked(0x80, "\x00x"), errFrame},
		{"fragmented ping", UpgradeWebSocket, "v4.channel.k8s.io", masked(0x09, "p"), errFrame},
		{"data after close", UpgradeWebSocket, "v4.channel.k8s.io", append(masked(0x88, ""), masked(0x82, "\x00x")...), errAfterEnd},
		{"base64 channel not a digit", UpgradeWebSocket, "base64.channel.k8s.io", masked(0x81, "xQQ=="), errFrame},
		{"base64 invalid", UpgradeWebSocket, "base64.channel.k8s.io", masked(0x81, "0Q!Q="), errBadBase64},
		{"base64 after padding", UpgradeWebSocket, "base64.channel.k8s.io", masked(0x81, "0QQ==QUJD"), errBadBase64},
		{"spdy control frame over the cap", UpgradeSPDY, "v4.channel.k8s.io", []byte{0x80, 3, 0, 1, 0, 0x10, 0, 1}, errTooLarge},
		{"spdy data on stream 0", UpgradeSPDY, "v4.channel.k8s.io", []byte{0, 0, 0, 0, 0, 0, 0, 1, 'x'}, errFrame},
		{"spdy bad header block", UpgradeSPDY, "v4.channel.k8s.io", []byte{0x80, 3, 0, 1, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2}, errFrame},
	} {
		w := newTap(tc.upgrade, tc.protocol, true, func(string, int, []byte) {}, &spdyStreams{})
		_, _, err := w.dec.feed(tc.wire)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
