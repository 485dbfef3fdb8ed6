// Package events publishes a daemon's events (sessions starting and
// ending, denials, holds and their decisions, tamper alerts) to a NATS
// JetStream stream, where a SIEM or a responder reads the whole fleet's
// events from one place. Publishing never blocks a session: events are
// queued in memory, written to an on-disk Buffer, and sent by one
// goroutine that waits for the stream's acknowledgement before it forgets
// them. Each event carries a unique id, sent as the Nats-Msg-Id header, so
// one that is sent again after a lost acknowledgement is stored once.
package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Event is one event as published, in JSON.
type Event struct {
	// ID is unique across the fleet: the VM, the daemon's run and a
	// counter. It is the message's Nats-Msg-Id.
	ID   string    `json:"id"`
	VM   string    `json:"vm"`
	Time time.Time `json:"time"`
	// Type is session_start, session_end, statement, hold, hold_decision
	// or tamper.
	Type    string `json:"type"`
	Session string `json:"session,omitempty"`
	Target  string `json:"target,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Text    string `json:"text,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Fields are further named facts (identity, process, counts).
	Fields map[string]string `json:"fields,omitempty"`
}

// Config says where a Publisher sends events.
type Config struct {
	// URL is the NATS server list (nats://host:4222[,nats://...]).
	URL string
	// Stream is the JetStream stream, created when missing with the
	// subjects Prefix.>.
	Stream string
	// Prefix is the subject prefix: an event goes to
	// Prefix.<vm>.<type>.
	Prefix string
	// VM names this machine in subjects and events (a subject token: no
	// dots, spaces, '*' or '>').
	VM string
	// CredsFile and CAFile are optional: a NATS credentials file and the
	// only CAs trusted for the server's TLS certificate.
	CredsFile, CAFile string
	// Queue bounds the events waiting in memory to be written to the
	// buffer (default 4096); beyond it events are dropped and counted.
	Queue int
}

// Stats are a Publisher's counts since it started.
type Stats struct {
	BufferStats
	// Sent counts events the stream acknowledged.
	Sent int64
	// QueueDropped counts events dropped before reaching the buffer
	// (its writer fell behind).
	QueueDropped int64
	// Connected reports whether the NATS connection is up.
	Connected bool
	// LastError is the last publish error, "" after a success.
	LastError string
}

// Publisher sends events to the stream through a Buffer. Publish may be
// called from any goroutine; Run sends until its context ends.
type Publisher struct {
	cfg  Config
	buf  *Buffer
	log  hclog.Logger
	run  string
	seq  atomic.Uint64
	q    chan Event
	sent atomic.Int64
	qd   atomic.Int64

	mu      sync.Mutex
	nc      *nats.Conn
	lastErr string
	// retry is how long Run waits after a failed send (default 1 s).
	retry time.Duration
}

// New returns a Publisher over buf. Nothing is sent until Run.
func New(cfg Config, buf *Buffer, log hclog.Logger) *Publisher {
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	var r [6]byte
	rand.Read(r[:])
	return &Publisher{cfg: cfg, buf: buf, log: log, run: hex.EncodeToString(r[:]), q: make(chan Event, cfg.Queue), retry: time.Second}
}

// SubjectToken makes s fit one token of a subject.
func SubjectToken(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			return '_'
		}
		return r
	}, s)
	if s == "" {
		return "_"
	}
	return s
}

// Publish queues e, setting its ID, VM and (when zero) Time. It never
// blocks: when the queue is full the event is dropped and counted.
func (p *Publisher) Publish(e Event) {
	e.ID = p.cfg.VM + "-" + p.run + "-" + strconv.FormatUint(p.seq.Add(1), 10)
	e.VM = p.cfg.VM
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	select {
	case p.q <- e:
	default:
		if n := p.qd.Add(1); n == 1 || n%1000 == 0 {
			p.log.Warn("event queue full; events dropped", "dropped", n)
		}
	}
}

// Stats returns the publisher's counts.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{BufferStats: p.buf.Stats(), Sent: p.sent.Load(), QueueDropped: p.qd.Load(),
		Connected: p.nc != nil && p.nc.IsConnected(), LastError: p.lastErr}
}

// Run writes queued events to the buffer and sends the buffer's events to
// the stream until ctx ends; then it writes what is still queued to the
// buffer (to be sent by the next run) and returns. It reconnects and
// retries forever.
func (p *Publisher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.send(ctx)
	}()
	lastDropped := int64(0)
	write := func(e Event) {
		b, err := json.Marshal(e)
		if err == nil {
			err = p.buf.Append(b)
		}
		if err != nil {
			p.log.Error("buffering an event failed; it is lost", "error", err)
			return
		}
		if d := p.buf.Stats().Dropped; d != lastDropped {
			p.log.Warn("event buffer full; oldest unsent events dropped", "dropped", d)
			lastDropped = d
		}
	}
	for {
		select {
		case e := <-p.q:
			write(e)
		case <-ctx.Done():
			for {
				select {
				case e := <-p.q:
					write(e)
				default:
					wg.Wait()
					return
				}
			}
		}
	}
}

// Flush waits, until ctx ends, for the buffer to be empty; it reports the
// events still pending.
func (p *Publisher) Flush(ctx context.Context) int64 {
	for {
		st := p.buf.Stats()
		if st.Pending == 0 && len(p.q) == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return st.Pending + int64(len(p.q))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *Publisher) connect() (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("sluiced " + p.cfg.VM), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}
	if p.cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(p.cfg.CredsFile))
	}
	if p.cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(p.cfg.CAFile))
	}
	return nats.Connect(p.cfg.URL, opts...)
}

// EnsureStream creates the stream (file storage, subjects prefix.>, a
// two-minute duplicate window) unless it exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, stream, prefix string) error {
	_, err := js.Stream(ctx, stream)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("look up stream %s: %w", stream, err)
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", stream, err)
	}
	return nil
}

func (p *Publisher) fail(err error) {
	p.mu.Lock()
	first := p.lastErr == ""
	p.lastErr = err.Error()
	p.mu.Unlock()
	if first {
		p.log.Warn("sending events failed; they stay buffered and are retried", "error", err)
	}
}

func (p *Publisher) ok() {
	p.mu.Lock()
	was := p.lastErr
	p.lastErr = ""
	p.mu.Unlock()
	if was != "" {
		p.log.Info("sending events again", "pending", p.buf.Stats().Pending)
	}
}

func (p *Publisher) send(ctx context.Context) {
	nc, err := p.connect()
	if err != nil {
		p.log.Error("connecting to NATS failed; events stay buffered", "error", err)
		<-ctx.Done()
		return
	}
	p.mu.Lock()
	p.nc = nc
	p.mu.Unlock()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		p.log.Error("opening JetStream failed; events stay buffered", "error", err)
		<-ctx.Done()
		return
	}
	haveStream := false
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		if !haveStream {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := EnsureStream(sctx, js, p.cfg.Stream, p.cfg.Prefix)
			cancel()
			if err != nil {
				p.fail(err)
				if !wait(p.retry) {
					return
				}
				continue
			}
			haveStream = true
		}
		recs, pos, err := p.buf.Next(256)
		if err != nil {
			p.fail(err)
			if !wait(p.retry) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.buf.Ready():
			case <-time.After(time.Second):
			}
			continue
		}
		if err := p.publish(ctx, js, recs); err != nil {
			p.fail(err)
			if !wait(p.retry) {
				return
			}
			continue
		}
		if err := p.buf.Ack(pos); err != nil {
			p.fail(err)
		}
		p.sent.Add(int64(len(recs)))
		p.ok()
	}
}

// publish sends recs and waits for every acknowledgement.
func (p *Publisher) publish(ctx context.Context, js jetstream.JetStream, recs [][]byte) error {
	futs := make([]jetstream.PubAckFuture, 0, len(recs))
	for _, r := range recs {
		var h struct {
			ID   string `json:"id"`
			VM   string `json:"vm"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(r, &h); err != nil || h.ID == "" {
			continue // not an event: nothing to send
		}
		m := nats.NewMsg(p.cfg.Prefix + "." + SubjectToken(h.VM) + "." + SubjectToken(h.Type))
		m.Data = r
		m.Header.Set(jetstream.MsgIDHeader, h.ID)
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish event: %w", err)
		}
		futs = append(futs, f)
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish event: %w", err)
		case <-timeout.C:
			return errors.New("publish event: no acknowledgement within 10s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
