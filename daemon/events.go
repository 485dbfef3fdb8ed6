package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/api"
)

// eventsBlock is the events block as written: where the daemon's events
// are published.
type eventsBlock struct {
	NATSURL       string `hcl:"nats_url"`
	Stream        string `hcl:"stream,optional"`
	SubjectPrefix string `hcl:"subject_prefix,optional"`
	VM            string `hcl:"vm,optional"`
	Creds         string `hcl:"creds,optional"`
	CAFile        string `hcl:"ca_file,optional"`
	BufferDir     string `hcl:"buffer_dir,optional"`
	MaxBuffer     string `hcl:"max_buffer,optional"`
}

// EventsSettings is the validated events block.
type EventsSettings struct {
	events.Config
	// BufferDir holds the on-disk buffer (default data_dir/events).
	BufferDir string
	// MaxBuffer bounds it in bytes (default 64 MiB).
	MaxBuffer int64
}

var (
	subjectToken = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	subjectName  = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// parseBytes reads a size such as "64MiB", "512KiB", "1GiB" or "1048576".
func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("not a positive size")
	}
	return n * mult, nil
}

// setEvents validates the events block.
func (c *Config) setEvents(eb *eventsBlock) hcl.Diagnostics {
	if eb == nil {
		return nil
	}
	var diags hcl.Diagnostics
	bad := func(summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail})
	}
	es := &EventsSettings{Config: events.Config{URL: eb.NATSURL, Stream: eb.Stream, Prefix: eb.SubjectPrefix, VM: eb.VM,
		CredsFile: eb.Creds, CAFile: eb.CAFile}, BufferDir: eb.BufferDir, MaxBuffer: 64 << 20}
	for _, u := range strings.Split(eb.NATSURL, ",") {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			bad("Invalid events nats_url", fmt.Sprintf("nats_url %q: give one or more nats://HOST:PORT (or tls://) URLs separated by commas.", eb.NATSURL))
			break
		}
	}
	if es.Stream == "" {
		es.Stream = "SLUICE_EVENTS"
	}
	if !subjectToken.MatchString(es.Stream) {
		bad("Invalid events stream", fmt.Sprintf("stream %q: use letters, digits, '-' and '_' only.", es.Stream))
	}
	if es.Prefix == "" {
		es.Prefix = "sluice.events"
	}
	if !subjectName.MatchString(es.Prefix) {
		bad("Invalid events subject_prefix", fmt.Sprintf("subject_prefix %q: use dot-separated tokens of letters, digits, '-' and '_', such as \"sluice.events\".", es.Prefix))
	}
	if es.VM == "" {
		h, _ := os.Hostname()
		es.VM = events.SubjectToken(h)
	} else if !subjectToken.MatchString(es.VM) {
		bad("Invalid events vm", fmt.Sprintf("vm %q: use letters, digits, '-' and '_' only (it is one token of each subject), or leave it out for the host name.", es.VM))
	}
	if eb.MaxBuffer != "" {
		n, err := parseBytes(eb.MaxBuffer)
		if err != nil || n < 64<<10 {
			bad("Invalid events max_buffer", fmt.Sprintf("max_buffer %q: give a size of at least 64KiB, such as \"64MiB\".", eb.MaxBuffer))
		}
		es.MaxBuffer = n
	}
	c.Events = es
	return diags
}

// eventsPub is the daemon's publisher of events.
type eventsPub struct {
	p      *events.Publisher
	buf    *events.Buffer
	cfg    *EventsSettings
	log    hclog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// startEvents starts publishing the daemon's events; with no events block
// it does nothing and returns nil. It runs until stop, so that events of
// flows drained at stop are buffered too.
func startEvents(cfg *Config, rec *recorder, log hclog.Logger) (*eventsPub, error) {
	if cfg.Events == nil {
		return nil, nil
	}
	dir := cfg.Events.BufferDir
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "events")
	}
	buf, err := events.OpenBuffer(dir, cfg.Events.MaxBuffer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ep := &eventsPub{p: events.New(cfg.Events.Config, buf, log), buf: buf, cfg: cfg.Events, log: log, cancel: cancel, done: make(chan struct{})}
	rec.events = ep.p.Publish
	go func() {
		defer close(ep.done)
		ep.p.Run(ctx)
	}()
	st := buf.Stats()
	log.Info("publishing events", "nats_url", cfg.Events.URL, "stream", cfg.Events.Stream, "subject_prefix", cfg.Events.Prefix, "vm", cfg.Events.VM, "buffered", st.Pending)
	return ep, nil
}

// status reports the publisher for sluice status; nil without events.
func (ep *eventsPub) status() *api.Events {
	if ep == nil {
		return nil
	}
	st := ep.p.Stats()
	return &api.Events{Stream: ep.cfg.Stream, URL: ep.cfg.URL, Connected: st.Connected, Sent: st.Sent,
		Pending: st.Pending, BufferBytes: st.Bytes, MaxBuffer: ep.cfg.MaxBuffer, Dropped: st.Dropped + st.QueueDropped, LastError: st.LastError}
}

// stop sends what it can for up to within, then stops; what is left stays
// in the buffer for the next start. Calls after the first do nothing.
func (ep *eventsPub) stop(within time.Duration) {
	if ep == nil || ep.cancel == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	left := ep.p.Flush(ctx)
	cancel()
	ep.cancel()
	<-ep.done
	ep.cancel = nil
	ep.buf.Close()
	if left > 0 {
		ep.log.Warn("events not sent before exit; they stay buffered and are sent after the next start", "pending", left, "buffer_dir", ep.cfg.BufferDir)
	}
}

// eventsOnStop bounds how long a stopping daemon tries to send buffered
// events, after its flows drained and its uploads ended.
const eventsOnStop = 3 * time.Second

// eventsTee returns a Session.Tee that publishes a session's events: its
// start and end, and every statement whose verdict is not a plain allow
// (allowed statements are counted in the end event's fields, which keeps
// the stream bounded by what the ruleset flags). next, when set, also
// receives every event.
func eventsTee(pub func(events.Event), session, target string, next func(record.Event)) func(record.Event) {
	return func(e record.Event) {
		if next != nil {
			next(e)
		}
		switch e.Type {
		case record.TypeSessionStart, record.TypeSessionEnd:
		case record.TypeStatement, record.TypeResult, record.TypeNote:
			if e.Verdict == "" || e.Verdict == "allow" {
				return
			}
		default:
			return
		}
		pub(events.Event{Time: e.Time, Type: e.Type, Session: session, Target: target, Kind: e.Kind, Text: e.Text,
			Verdict: e.Verdict, Rule: e.Rule, Reason: e.Reason, Fields: e.Fields})
	}
}

// eventsHolder wraps a session's Holder to publish each hold request and
// its decision. The statement's text is included only when withText (the
// session records commands).
func eventsHolder(pub func(events.Event), session, target string, withText bool, hold func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome) func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome {
	return func(ctx context.Context, h enforcer.HoldRequest) enforcer.HoldOutcome {
		d := h.Verdict.Decision
		id, text := "", ""
		if withText && h.Command != nil {
			text = h.Command.Text
		}
		notify := h.Notify
		h.Notify = func(reqID, msg string) {
			id = reqID
			pub(events.Event{Type: "hold", Session: session, Target: target, Text: text, Verdict: "hold", Rule: d.Rule.ID, Reason: d.Reason,
				Fields: map[string]string{"request": reqID, "stage": h.Stage, "rows": strconv.FormatInt(h.Rows, 10)}})
			if notify != nil {
				notify(reqID, msg)
			}
		}
		out := hold(ctx, h)
		verdict := "deny"
		if out.Approved {
			verdict = "allow"
		}
		pub(events.Event{Type: "hold_decision", Session: session, Target: target, Verdict: verdict, Rule: d.Rule.ID, Reason: out.Reason,
			Fields: map[string]string{"request": id, "stage": h.Stage}})
		return out
	}
}
