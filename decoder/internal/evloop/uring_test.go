package evloop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests call uringRelay directly, on real loopback TCP connections.
// They need io_uring with multishot receive (Linux 6.0) and skip where the
// core cannot start (io_uring disabled by sysctl or seccomp, as in many
// containers).

func urNeed(t *testing.T) {
	t.Helper()
	if err := uringAvailable(); err != nil {
		t.Skipf("io_uring relay core unavailable here: %v", err)
	}
}

type urResult struct {
	c   Counts
	err error
	fd  [2]int
}

// urRelayed starts uringRelay between a client and a server and returns
// their far ends and the relay's result.
func urRelayed(t *testing.T, ctx context.Context) (client, server net.Conn, res chan urResult) {
	t.Helper()
	client, pc := tcpPair(t)
	ps, server := tcpPair(t)
	var fd [2]int
	for i, c := range []net.Conn{pc, ps} {
		var err error
		if fd[i], err = takeFD(c); err != nil {
			t.Fatal(err)
		}
		c.Close() // the relay owns the duplicate
	}
	res = make(chan urResult, 1)
	go func() {
		c, err, taken := uringRelay(ctx, fd[0], fd[1])
		if !taken {
			unix.Close(fd[0])
			unix.Close(fd[1])
			err = fmt.Errorf("the core did not take the pair: %w", err)
		}
		res <- urResult{c, err, fd}
	}()
	return client, server, res
}

func urWait(t *testing.T, res chan urResult) urResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("relay did not end")
	}
	return urResult{}
}

// urNoStale fails the test if a completion ever named a pair that was no
// longer there (a request left in flight past its pair's end).
func urNoStale(t *testing.T) {
	t.Helper()
	if n := urStale.Load(); n != 0 {
		t.Fatalf("%d completions came for pairs already freed", n)
	}
}

// urNoLeaks fails the test unless the goroutines it started have ended
// by the deadline; call it first thing after urNeed (the core's own
// goroutine is started then) and run the result at the end.
func urNoLeaks(t *testing.T) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		give := time.After(10 * time.Second)
		for runtime.NumGoroutine() > before {
			select {
			case <-tick.C:
			case <-give:
				t.Fatalf("%d goroutines left running (%d before the test)", runtime.NumGoroutine(), before)
			}
		}
	}
}

// urExchange sends size random bytes each way at once, reading slowly on
// the server's side when slow, and checks that both arrive intact; both
// ends then half-close.
func urExchange(t *testing.T, client, server net.Conn, size int, slow bool) {
	t.Helper()
	up := make([]byte, size)
	down := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(size), 1})
	rng.Read(up)
	rng.Read(down)
	var wg sync.WaitGroup
	var gotUp, gotDown [32]byte
	wg.Add(4)
	go func() { defer wg.Done(); client.Write(up); client.(*net.TCPConn).CloseWrite() }()
	go func() { defer wg.Done(); server.Write(down); server.(*net.TCPConn).CloseWrite() }()
	go func() {
		defer wg.Done()
		h := sha256.New()
		// Slow: 1,000 bytes a read, so the core's sends find no room as
		// the buffers fill and it holds bytes back; fast: 64 KiB.
		buf := make([]byte, 64<<10)
		if slow {
			buf = buf[:1000]
		}
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
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("exchange did not finish")
	}
	if gotUp != sha256.Sum256(up) || gotDown != sha256.Sum256(down) {
		t.Fatal("bytes relayed differ from those sent")
	}
}

// TestURBulkBothWays: 8 MiB each way at once, read slowly on one side so
// that the core must hold bytes back (backpressure) without losing or
// reordering any; the counts match.
func TestURBulkBothWays(t *testing.T) {
	urNeed(t)
	client, server, res := urRelayed(t, context.Background())
	const size = 8 << 20
	urExchange(t, client, server, size, true)
	r := urWait(t, res)
	if r.err != nil || r.c.ClientToServer != size || r.c.ServerToClient != size {
		t.Fatalf("relay ended with %+v, %v; want %d bytes each way and no error", r.c, r.err, size)
	}
	urNoStale(t)
}

// TestURHalfClose: the client sends a request and half-closes; the server
// reads it to EOF and then answers, and the client gets the answer.
func TestURHalfClose(t *testing.T) {
	urNeed(t)
	client, server, res := urRelayed(t, context.Background())
	for _, c := range []net.Conn{client, server} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
	}
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
	r := urWait(t, res)
	if r.err != nil || r.c.ClientToServer != int64(len(req)) || r.c.ServerToClient != int64(len(back)) {
		t.Fatalf("relay ended with %+v, %v", r.c, r.err)
	}
}

// TestURCancel: cancelling ends a relay whose peers are idle, with the
// context's error; both descriptors are closed when uringRelay returns,
// and both peers see the connection end.
func TestURCancel(t *testing.T) {
	urNeed(t)
	ctx, cancel := context.WithCancel(context.Background())
	client, server, res := urRelayed(t, ctx)
	client.Write([]byte("x"))
	b := make([]byte, 1)
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(server, b); err != nil {
		t.Fatalf("server read: %v", err)
	}
	cancel()
	r := urWait(t, res)
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("relay after cancel returned %v, want context.Canceled", r.err)
	}
	for _, fd := range r.fd {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("descriptor %d still open after uringRelay returned", fd)
		}
	}
	for _, c := range []net.Conn{client, server} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(b); err == nil {
			t.Fatal("a peer could still read after the relay was cancelled")
		}
	}
	urNoStale(t)
}

// TestURCancelInFlight: a relay cancelled while a send is blocked (the
// server reads nothing, so every buffer and socket buffer on the way is
// full) and receives are armed ends promptly; no completion comes later
// for its slot, which the next relays reuse with their bytes intact.
func TestURCancelInFlight(t *testing.T) {
	urNeed(t)
	defer urNoLeaks(t)()
	for round := range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		client, server, res := urRelayed(t, ctx)
		// Fill the way to the server: writes stop completing once the
		// server's receive buffer, the relay's send, its buffers and the
		// client's own send buffer are all full.
		chunk := make([]byte, 64<<10)
		give := time.Now().Add(20 * time.Second)
		for {
			if time.Now().After(give) {
				t.Fatal("writes to a server that reads nothing never blocked")
			}
			client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := client.Write(chunk); err != nil {
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("client write: %v", err)
				}
				break
			}
		}
		cancel()
		r := urWait(t, res)
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("round %d: relay returned %v, want context.Canceled", round, r.err)
		}
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, server); err != nil && !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("round %d: server did not see the end: %v", round, err)
		}
		// The freed slot (the core reuses the last freed first) carries a
		// new relay.
		client, server, res = urRelayed(t, context.Background())
		urExchange(t, client, server, 256<<10, false)
		if r := urWait(t, res); r.err != nil {
			t.Fatalf("round %d: relay after the cancelled one: %v", round, r.err)
		}
	}
	urNoStale(t)
}

// TestURReset: a server that resets ends the relay without an error (a
// reset is an end of stream), and the client sees its connection end.
func TestURReset(t *testing.T) {
	urNeed(t)
	client, server, res := urRelayed(t, context.Background())
	server.(*net.TCPConn).SetLinger(0)
	server.Close()
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read data after the server reset")
	}
	client.Close()
	if r := urWait(t, res); r.err != nil {
		t.Fatalf("relay after a reset returned %v, want nil", r.err)
	}
}

// urPingPong exchanges a short message rounds times each way and closes
// both ends.
func urPingPong(id, rounds int, client, server net.Conn) error {
	msg := []byte{byte(id), byte(id >> 8)}
	got := make([]byte, 2)
	for _, c := range []net.Conn{client, server} {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	for range rounds {
		client.Write(msg)
		if _, err := io.ReadFull(server, got); err != nil || !bytes.Equal(got, msg) {
			return fmt.Errorf("server got %v, %v", got, err)
		}
		server.Write(msg)
		if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, msg) {
			return fmt.Errorf("client got %v, %v", got, err)
		}
	}
	client.Close()
	server.Close()
	return nil
}

// TestURManyPairs: many small exchanges on 64 relays at once stay each on
// its own connection.
func TestURManyPairs(t *testing.T) {
	urNeed(t)
	defer urNoLeaks(t)()
	var wg sync.WaitGroup
	for i := range 64 {
		client, server, res := urRelayed(t, context.Background())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := urPingPong(i, 200, client, server); err != nil {
				t.Errorf("pair %d: %v", i, err)
				return
			}
			select {
			case r := <-res:
				if r.err != nil || r.c.ClientToServer != 400 || r.c.ServerToClient != 400 {
					t.Errorf("pair %d: relay ended with %+v, %v", i, r.c, r.err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("pair %d: relay did not end", i)
			}
		}()
	}
	wg.Wait()
	urNoStale(t)
}

// TestURStopTheWorld: relays keep working while another goroutine
// collects garbage in a loop and sets GOMAXPROCS, each a stop-the-world
// that must stop the core's goroutine too, both while it waits in
// io_uring_enter and while it works. A stop-the-world that never
// completes would freeze the whole process, timers and all, so the test
// runs in a child process (this test binary again) that the parent kills
// at a deadline.
func TestURStopTheWorld(t *testing.T) {
	if os.Getenv("SLUICE_UR_STW_CHILD") == "1" {
		urStopTheWorld(t)
		return
	}
	urNeed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestURStopTheWorld$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "SLUICE_UR_STW_CHILD=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the child process hung (a stop-the-world that never completed?); killed at the deadline. Its output:\n%s", out)
	}
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestURStopTheWorld")) {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	t.Logf("child process:\n%s", out)
}

func urStopTheWorld(t *testing.T) {
	urNeed(t)
	intr := urInterrupted.Load()
	stw := func(gcs int) {
		for i := range gcs {
			runtime.GC()
			if i%25 == 0 {
				runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
			}
		}
	}

	type relay struct {
		client, server net.Conn
		res            chan urResult
	}
	relays := make([]relay, 8)
	for i := range relays {
		relays[i].client, relays[i].server, relays[i].res = urRelayed(t, context.Background())
	}
	// Idle: the core waits in io_uring_enter the whole time.
	stw(50)

	// Busy: ping-pong on every relay and a bulk exchange, with the
	// stop-the-worlds going on.
	done := make(chan struct{})
	go func() { stw(200); close(done) }()
	var wg sync.WaitGroup
	for i, r := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := urPingPong(i, 500, r.client, r.server); err != nil {
				t.Errorf("pair %d: %v", i, err)
			}
		}()
	}
	client, server, res := urRelayed(t, context.Background())
	urExchange(t, client, server, 4<<20, false)
	wg.Wait()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the collections did not finish")
	}
	for i, r := range append(relays, relay{res: res}) {
		if got := urWait(t, r.res); got.err != nil {
			t.Errorf("relay %d: %v", i, got.err)
		}
	}
	n := urInterrupted.Load() - intr
	t.Logf("io_uring_enter interrupted by a signal %d times", n)
	if n == 0 {
		t.Error("no wait was ever interrupted: the preemption path went untested")
	}
	urNoStale(t)
}

// TestURMemlockFallback: past RLIMIT_MEMLOCK (each session pins two pages
// of buffer ring in a process without CAP_IPC_LOCK) the ring refuses a
// session, and Relay gives it to the epoll core instead: every one of
// 100 sessions held open at once relays, and some went to epoll. It runs
// in a child process (this test binary again) with a 512 KiB limit,
// without CAP_IPC_LOCK: through setpriv when run as root, which only
// drops privileges.
func TestURMemlockFallback(t *testing.T) {
	if os.Getenv("SLUICE_UR_MEMLOCK_CHILD") == "1" {
		urMemlockFallback(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{os.Args[0], "-test.run=^TestURMemlockFallback$", "-test.count=1", "-test.v"}
	if os.Geteuid() == 0 {
		sp, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("setpriv (util-linux) is needed to drop CAP_IPC_LOCK")
		}
		args = append([]string{sp, "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "SLUICE_UR_MEMLOCK_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestURMemlockFallback")) {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	t.Logf("child process:\n%s", out)
}

func urMemlockFallback(t *testing.T) {
	lim := unix.Rlimit{Cur: 512 << 10, Max: 512 << 10}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		t.Fatalf("lower RLIMIT_MEMLOCK: %v", err)
	}
	if Core() != CoreUring {
		t.Skipf("the io_uring core does not start under a 512 KiB RLIMIT_MEMLOCK here: %v", uringAvailable())
	}
	const n = 100
	type end struct{ client, server net.Conn }
	var ends []end
	for i := range n {
		client, pc := tcpPair(t)
		ps, server := tcpPair(t)
		ends = append(ends, end{client, server})
		go Relay(context.Background(), pc, ps)
		msg := []byte{byte(i)}
		client.Write(msg)
		got := make([]byte, 1)
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(server, got); err != nil || got[0] != msg[0] {
			t.Fatalf("session %d of %d held open: server read %v, %v", i+1, n, got, err)
		}
	}
	if uringDeclined.Load() == 0 {
		t.Fatalf("all %d sessions fitted on the ring under a 512 KiB RLIMIT_MEMLOCK: the test proves nothing", n)
	}
	t.Logf("%d of %d sessions held open at once went to the epoll core", uringDeclined.Load(), n)
	for _, e := range ends {
		e.client.Close()
		e.server.Close()
	}
}
