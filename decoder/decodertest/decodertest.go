// Package decodertest runs a decoder's flow handler in process, between a
// client the test scripts byte by byte and a real server on loopback, so a
// test can assert what each side received: what the client was sent, and
// every byte that reached the server.
//
// The parts, each real:
//
//   - the client hop is a loopback TCP connection: the test holds one end
//     (Harness.Client), the handler serves the other;
//   - the handler's dial goes to the real server through a Tap, a loopback
//     forwarder that keeps every byte before passing it on, so whatever
//     the server could have received is in the Tap (Tap.Received);
//   - the flow's enforcer.Session is built from ruleset source
//     (Options.Rules), matched against the flow's facts like the daemon
//     matches it;
//   - the session is recorded by a real record.Writer in a temporary
//     directory (Recorder), which the test can make fail at any point
//     (Recorder.Fail) to drive the fail-closed paths of a recording that
//     can no longer be written.
//
// The package knows no wire format: a test sends bytes and reads bytes.
// postgres.go adds a frontend for PostgreSQL's messages (PG), written
// with pgproto3; other protocols add theirs beside it. It never imports a
// protocol: a test passes the handler (decoder.Lookup(name).New, or its
// own wrapper around a protocol's Serve).
//
// Every wait is bounded by Options.Timeout, and running out of it fails
// the test; nothing sleeps. Everything Start makes is torn down with
// t.Cleanup, and a handler that does not return once its client and
// context are gone fails the test (a leaked session).
package decodertest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// DefaultTimeout bounds every wait of a harness whose Options leave
// Timeout zero.
const DefaultTimeout = 10 * time.Second

// Options say what Start runs. Handler, Rules, Target and Upstream are
// required.
type Options struct {
	// Handler serves the flow: a protocol's registered handler
	// (decoder.Lookup(name) then New(env)), or a test's own wrapper
	// around a protocol's Serve when it needs parameters the registered
	// one fixes.
	Handler decoder.Handler
	// Rules is the ruleset's source, one HCL file. Errors in it fail the
	// test.
	Rules string
	// Target names the ruleset target the flow is for. The flow is
	// matched to it by name, so its address block need not hold
	// Upstream.
	Target string
	// Upstream is the real server's address on loopback (host:port): the
	// flow's original destination, which the handler's dial reaches
	// through the Tap.
	Upstream string
	// Identity and Process are the flow's facts as the ruleset sees them;
	// the zero Identity is level none.
	Identity ruleset.Identity
	Process  ruleset.Process
	// Record is the session's record level. Above record.None the
	// session is recorded by a Recorder (Harness.Recorder); at None it
	// is not recorded at all.
	Record record.Level
	// Holder, when set, is the session's Holder: hold verdicts wait for
	// it. Nil leaves holds without an approver (they are refused).
	Holder func(ctx context.Context, h enforcer.HoldRequest) enforcer.HoldOutcome
	// Log receives the handler's and the session's log lines; nil
	// discards them (SLUICE_TEST_LOG=1 prints them).
	Log hclog.Logger
	// Timeout bounds every wait; DefaultTimeout when zero.
	Timeout time.Duration
}

// Harness is one flow being served. Its methods are called from the
// test's goroutine; they fail the test (t.Fatal) on any error or timeout.
type Harness struct {
	t  testing.TB
	to time.Duration

	// Client is the test's end of the client hop: what the test writes
	// the handler reads, what the handler writes the test reads.
	Client net.Conn
	// Tap holds every byte the handler sent towards the server.
	Tap *Tap
	// Recorder records the session; nil when Options.Record is None.
	Recorder *Recorder
	// Session is the flow's session, as the handler got it.
	Session *enforcer.Session
	// Flow is the flow the handler serves.
	Flow *decoder.Flow
	// Ruleset is the parsed Options.Rules.
	Ruleset *ruleset.Ruleset

	cancel context.CancelFunc
	done   chan struct{}
	result decoder.Result
}

// Start parses the rules, starts the Tap towards o.Upstream, builds the
// session (and its Recorder) and runs o.Handler on a fresh loopback
// connection in a goroutine of its own. It returns at once: the test
// speaks first, as a client does.
func Start(t testing.TB, o Options) *Harness {
	t.Helper()
	if o.Handler == nil || o.Rules == "" || o.Target == "" || o.Upstream == "" {
		t.Fatal("decodertest: Options need Handler, Rules, Target and Upstream")
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = hclog.NewNullLogger()
		if os.Getenv("SLUICE_TEST_LOG") != "" {
			o.Log = hclog.New(&hclog.LoggerOptions{Name: "decodertest", Level: hclog.Debug})
		}
	}
	rs, diags := ruleset.Parse(map[string][]byte{"decodertest.hcl": []byte(o.Rules)})
	if diags.HasErrors() {
		t.Fatalf("decodertest: rules: %s", diags.Error())
	}
	target := rs.Target(o.Target)
	if target == nil {
		t.Fatalf("decodertest: the rules have no target %q", o.Target)
	}
	dest, err := netip.ParseAddrPort(o.Upstream)
	if err != nil {
		t.Fatalf("decodertest: upstream %q is not ip:port: %v", o.Upstream, err)
	}
	facts := ruleset.Flow{Identity: o.Identity, Process: o.Process,
		Target: ruleset.Endpoint{Name: target.Name, Protocol: target.Protocol, Addr: dest}}
	match := rs.Match(facts)

	h := &Harness{t: t, to: o.Timeout, Ruleset: rs, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.Tap = startTap(t, o.Upstream)

	var w *record.Writer
	if o.Record > record.None {
		h.Recorder = NewRecorder(t)
		w = h.Recorder.Writer()
	}
	sess := enforcer.NewSession(ctx, match, w, o.Record, o.Log)
	sess.Holder = o.Holder
	h.Session = sess

	client, served := loopbackPair(t)
	h.Client = client
	h.Flow = &decoder.Flow{
		ID: 1, Client: netip.MustParseAddrPort(served.RemoteAddr().String()), Dest: dest,
		Target: target, Start: time.Now(), Match: match, Facts: facts,
		Identity: decoder.Identity{Identity: o.Identity}, Session: sess,
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", h.Tap.Addr())
	}
	go func() {
		defer close(h.done)
		h.result = o.Handler(ctx, h.Flow, served, dial)
	}()

	t.Cleanup(func() {
		// The client goes and the handler must return by itself; only
		// then is the context cancelled (a test of cancellation calls
		// Cancel itself), and the recording closed.
		client.Close()
		select {
		case <-h.done:
		case <-time.After(h.to):
			t.Errorf("decodertest: the handler did not return within %v of its client closing", h.to)
			cancel()
			select {
			case <-h.done:
			case <-time.After(h.to):
				t.Errorf("decodertest: the handler did not return within %v of its context ending either", h.to)
			}
		}
		cancel()
		h.Tap.close()
		if h.Recorder != nil {
			h.Recorder.close()
		}
	})
	return h
}

// Send writes b to the handler, failing the test if the write does not
// complete within the timeout.
func (h *Harness) Send(b []byte) {
	h.t.Helper()
	if err := h.TrySend(b); err != nil {
		h.t.Fatalf("decodertest: send %d bytes: %v", len(b), err)
	}
}

// TrySend writes b to the handler and returns the error, for tests of a
// handler that may end the session before taking all of b.
func (h *Harness) TrySend(b []byte) error {
	h.Client.SetWriteDeadline(time.Now().Add(h.to))
	_, err := h.Client.Write(b)
	h.Client.SetWriteDeadline(time.Time{})
	return err
}

// ReadFull reads exactly n bytes the handler sent the client, failing the
// test on EOF or when they do not arrive within the timeout.
func (h *Harness) ReadFull(n int) []byte {
	h.t.Helper()
	b := make([]byte, n)
	h.Client.SetReadDeadline(time.Now().Add(h.to))
	defer h.Client.SetReadDeadline(time.Time{})
	if _, err := io.ReadFull(h.Client, b); err != nil {
		h.t.Fatalf("decodertest: read %d bytes from the handler: %v", n, err)
	}
	return b
}

// ReadToEOF reads everything the handler sends until it closes the client
// hop, failing the test if it is still open after the timeout. It is how
// a test waits for a session that must end.
func (h *Harness) ReadToEOF() []byte {
	h.t.Helper()
	h.Client.SetReadDeadline(time.Now().Add(h.to))
	defer h.Client.SetReadDeadline(time.Time{})
	b, err := io.ReadAll(h.Client)
	if err != nil && !isReset(err) {
		h.t.Fatalf("decodertest: the handler did not close the client within %v: %v (read %d bytes)", h.to, err, len(b))
	}
	return b
}

// CloseWrite half-closes the client hop: the handler reads EOF, as when a
// client goes away after its last message.
func (h *Harness) CloseWrite() {
	h.Client.(*net.TCPConn).CloseWrite()
}

// Wait waits for the handler to return, and returns its Result. The
// handler returns when the session ends; Wait fails the test if it has
// not within the timeout. After Wait the Tap has every byte the handler
// sent towards the server.
func (h *Harness) Wait() decoder.Result {
	h.t.Helper()
	select {
	case <-h.done:
	case <-time.After(h.to):
		h.t.Fatalf("decodertest: the handler did not return within %v", h.to)
	}
	h.Tap.drain(h.t, h.to)
	return h.result
}

// Cancel cancels the context the handler runs under, as a daemon
// shutting down does.
func (h *Harness) Cancel() { h.cancel() }

// End closes the client hop and waits for the handler, as Wait does: the
// end of a session the test is done with.
func (h *Harness) End() decoder.Result {
	h.t.Helper()
	h.Client.Close()
	return h.Wait()
}

// Tap is a loopback forwarder between a handler and the real server. It
// keeps every byte the handler sends, per connection, before passing it
// on: what the server received is a prefix of what the Tap holds, so
// checking that the Tap never held something proves the server never saw
// it. The server's answers pass through unrecorded.
type Tap struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	links []*link
}

// link is one forwarded connection: what the handler sent on it, both
// of its ends, and done, closed once both directions have ended.
type link struct {
	buf       bytes.Buffer // under Tap.mu
	c, up     net.Conn
	done      chan struct{}
	remaining sync.WaitGroup
}

func startTap(t testing.TB, upstream string) *Tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("decodertest: tap listen: %v", err)
	}
	tp := &Tap{ln: ln, upstream: upstream}
	go tp.accept()
	return tp
}

// Addr is where the handler's dial connects: the Tap's own listener.
func (tp *Tap) Addr() string { return tp.ln.Addr().String() }

func (tp *Tap) accept() {
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", tp.upstream, DefaultTimeout)
		if err != nil {
			// The handler sees its upstream connection closed at once:
			// a server that cannot be reached.
			c.Close()
			continue
		}
		l := &link{c: c, up: up, done: make(chan struct{})}
		l.remaining.Add(2)
		tp.mu.Lock()
		tp.links = append(tp.links, l)
		tp.mu.Unlock()
		go func() { l.remaining.Wait(); close(l.done) }()
		go func() {
			// Handler to server: kept, then forwarded.
			defer l.remaining.Done()
			b := make([]byte, 32<<10)
			for {
				n, err := c.Read(b)
				if n > 0 {
					tp.mu.Lock()
					l.buf.Write(b[:n])
					tp.mu.Unlock()
					if _, werr := up.Write(b[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			up.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			// Server to handler, as is.
			defer l.remaining.Done()
			io.Copy(c, up)
			c.(*net.TCPConn).CloseWrite()
		}()
	}
}

// Received returns every byte the handler sent towards the server, all
// connections in the order they were dialed.
func (tp *Tap) Received() []byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var out []byte
	for _, l := range tp.links {
		out = append(out, l.buf.Bytes()...)
	}
	return out
}

// Conns returns what the handler sent on each connection it dialed, in
// dial order (a protocol's side connections, such as PostgreSQL's cancel
// requests, are connections of their own).
func (tp *Tap) Conns() [][]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	out := make([][]byte, len(tp.links))
	for i, l := range tp.links {
		out[i] = append([]byte(nil), l.buf.Bytes()...)
	}
	return out
}

// Contains reports whether s ever went towards the server.
func (tp *Tap) Contains(s string) bool {
	return bytes.Contains(tp.Received(), []byte(s))
}

// drain waits until every forwarded connection has ended, so Received is
// final. Connections still open after d (a handler that keeps its
// upstream open past its own return) fail the test.
func (tp *Tap) drain(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for _, l := range tp.snapshot() {
		select {
		case <-l.done:
		case <-deadline:
			t.Fatalf("decodertest: the handler's upstream connections were still open %v after it returned", d)
		}
	}
}

func (tp *Tap) snapshot() []*link {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]*link(nil), tp.links...)
}

func (tp *Tap) close() {
	tp.ln.Close()
	for _, l := range tp.snapshot() {
		l.c.Close()
		l.up.Close()
		<-l.done
	}
}

// Recorder is a session's recording: a real record.Writer writing a real
// file in a temporary directory, signed with keys made for the test.
type Recorder struct {
	t    testing.TB
	w    *record.Writer
	pub  ed25519.PublicKey
	once sync.Once
	mu   sync.Mutex
	fail error // what Fail injected
}

// NewRecorder creates a recording in t.TempDir(). Start makes one for
// Options.Record above None; a test of a session built by hand may make
// its own.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w, err := record.Create(t.TempDir(), "decodertest-"+strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), record.NewKeys(priv),
		record.Options{FsyncEvery: -1})
	if err != nil {
		t.Fatalf("decodertest: create recording: %v", err)
	}
	r := &Recorder{t: t, w: w, pub: pub}
	t.Cleanup(r.close)
	return r
}

// Writer is the record.Writer the session appends to.
func (r *Recorder) Writer() *record.Writer { return r.w }

// Fail makes the recording fail from now on: the writer is closed, so
// every later Append returns an error (record.ErrClosed), exactly as it
// returns the write error once a real recording's disk has failed. The
// session turns that into enforcer.ErrRecording at its next Record.
// Events recorded until now stay readable (Events).
func (r *Recorder) Fail() {
	r.mu.Lock()
	r.fail = record.ErrClosed
	r.mu.Unlock()
	r.close()
}

// Failed reports whether Fail was called.
func (r *Recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fail != nil
}

func (r *Recorder) close() {
	r.once.Do(func() {
		if err := r.w.Close(); err != nil && !errors.Is(err, record.ErrClosed) {
			r.t.Errorf("decodertest: close recording: %v", err)
		}
	})
}

// Events closes the recording (later Appends fail) and returns what it
// holds, after verifying it with the test's public key. Call it once the
// session has ended (Harness.Wait).
func (r *Recorder) Events() []record.Event {
	r.t.Helper()
	r.close()
	if _, err := record.Verify(r.w.Path(), r.pub); err != nil {
		r.t.Fatalf("decodertest: verify recording: %v", err)
	}
	rec, err := record.Open(r.w.Path())
	if err != nil {
		r.t.Fatalf("decodertest: open recording: %v", err)
	}
	return rec.Events()
}

// EventsOf returns the events of one type (record.TypeStatement, ...).
func (r *Recorder) EventsOf(typ string) []record.Event {
	r.t.Helper()
	var out []record.Event
	for _, e := range r.Events() {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// loopbackPair returns the two ends of a fresh loopback TCP connection:
// the one the test dialed, and the one a proxy would have accepted.
func loopbackPair(t testing.TB) (dialed, accepted net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("decodertest: listen: %v", err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	dialed, err = net.DialTimeout("tcp", ln.Addr().String(), DefaultTimeout)
	if err != nil {
		t.Fatalf("decodertest: dial: %v", err)
	}
	accepted = <-ch
	if accepted == nil {
		dialed.Close()
		t.Fatal("decodertest: accept failed")
	}
	return dialed, accepted
}

// isReset reports a connection reset by the handler: a session that ends
// with unread bytes from the client resets rather than closes.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && strings.Contains(op.Err.Error(), "connection reset")
}

// String describes the harness for failure messages.
func (h *Harness) String() string {
	return fmt.Sprintf("flow %d to %s (%s)", h.Flow.ID, h.Flow.Target.Name, h.Flow.Dest)
}

// BrokerHolder is a session Holder backed by a real approval broker, as
// the daemon wires one: each hold becomes a broker request (with the
// rule's approvers), the client is notified with its ID, and the hold
// ends with the broker's outcome. timeout, when above zero, replaces the
// rule's, so a test of an expiring hold waits that long, not the rule's
// minutes.
func BrokerHolder(b *approve.Broker, timeout time.Duration) func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome {
	return func(ctx context.Context, h enforcer.HoldRequest) enforcer.HoldOutcome {
		d := h.Verdict.Decision
		req := approve.Request{Rule: d.Rule.ID, Reason: d.Reason, Statement: h.Command.Text, Stage: h.Stage, Rows: h.Rows}
		if d.Hold != nil {
			req.Approvers, req.MinApprovals, req.Timeout = d.Hold.Approvers, d.Hold.MinApprovals, d.Hold.Timeout
		}
		if timeout > 0 {
			req.Timeout = timeout
		}
		req, ch := b.Hold(ctx, req)
		h.Notify(req.ID, fmt.Sprintf("held for approval: request %s under rule %q", req.ID, d.Rule.ID))
		out := <-ch
		return enforcer.HoldOutcome{Approved: out.Approved, Reason: out.Reason}
	}
}

// WantRelayCore checks where a session's steady state ran: its flow-log
// field relay_core (decoder.SessionStats.RelayCore).
func WantRelayCore(t testing.TB, res decoder.Result, want string) {
	t.Helper()
	got := ""
	for i := 0; i+1 < len(res.Fields); i += 2 {
		if res.Fields[i] == "relay_core" {
			got = fmt.Sprint(res.Fields[i+1])
		}
	}
	if got != want {
		t.Errorf("relay_core %q, want %q", got, want)
	}
}
