package approve

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// Request states.
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateDenied    = "denied"
	StateExpired   = "expired"
	StateCancelled = "cancelled"
)

// Stages at which a statement is held.
const (
	StageBefore = "before" // held before it runs
	StageResult = "result" // paused mid-result
)

// Approver kinds.
const (
	KindLocal = "local" // a local user, identified by the daemon's socket peer credentials
	KindOIDC  = "oidc"  // a remote user, identified by a verified OIDC token
)

// LocalAdmin is the approver principal every local administrator matches.
const LocalAdmin = "local-admin"

// DefaultTimeout is how long a hold waits when its Request has no Timeout.
const DefaultTimeout = ruleset.DefaultHoldTimeout

// keepFinished is how many finished requests List and Get still show.
const keepFinished = 100

// Approver is who decides on a request, as authenticated by the caller of
// Decide.
type Approver struct {
	Kind    string // KindLocal or KindOIDC
	Subject string // the local user name, or the token's sub
	UID     int    // the local user's UID (KindLocal)
	Groups  []string
	Email   string // set only when verified
	// Claims are other token claims, for the record; never sent in
	// notifications.
	Claims map[string]string
}

// Requester is the job whose statement is held.
type Requester struct {
	IdentityLevel string
	Subject       string // the verified token's sub, or ""
	Repository    string
	Actor         string // the CI actor who started the job
	Job           string
	UID           uint32
	Comm          string
	PID           uint32
}

// Request is one held statement. The broker hands out copies: changing one
// changes nothing in the broker.
type Request struct {
	// ID is short, unique among the requests the broker knows and easy to
	// type: "h-" and 8 lowercase base32 characters. Hold sets it.
	ID string

	Session, Target, Rule, Reason, Statement string

	Stage string // StageBefore or StageResult
	Rows  int64  // rows already sent when paused (StageResult)

	// Approvers are the rule's principals: "group:NAME", "email:ADDR",
	// "user:NAME", LocalAdmin. Empty means LocalAdmin only.
	Approvers []string
	// MinApprovals is how many distinct approvers must approve; values
	// below 1 mean 1.
	MinApprovals int
	// Timeout is how long the request waits before it expires (the rule's
	// timeout); zero means DefaultTimeout.
	Timeout time.Duration

	Requester Requester

	// Created and Deadline are set by Hold: Deadline is Created + Timeout.
	Created, Deadline time.Time

	State     string     // one of the State constants
	Decisions []Decision // accepted decisions, in order
}

// Decision is one approver's accepted decision.
type Decision struct {
	By      Approver
	Approve bool
	Comment string
	At      time.Time
}

// Outcome is how a held request ended.
type Outcome struct {
	Approved bool
	// Reason says who decided, or that the request expired or was
	// cancelled; it is meant for the client and the recording.
	Reason  string
	Request Request
}

// Event kinds.
const (
	EventRequest  = "request"  // a request is waiting
	EventDecision = "decision" // a request ended (approved, denied, expired or cancelled)
	EventAlert    = "alert"    // a security alert (Event.Alert), not about a request
)

// Event is what a Notifier is told.
type Event struct {
	Kind    string  // EventRequest, EventDecision or EventAlert
	Request Request // a copy; zero for EventAlert
	Alert   *Alert  // EventAlert only
}

// Alert is a security event the approvers are told of, such as a job
// tampering with Sluice.
type Alert struct {
	Kind    string // what happened, one word (cgroup_move, signal_sluiced, ...)
	Summary string // one sentence
	Time    time.Time
	// Fields are the details: the process, its job identity, the target.
	Fields map[string]string
}

// Alert delivers a to the notifier, on the broker's goroutine. It does
// nothing without a notifier or after Close.
func (b *Broker) Alert(a Alert) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.notify == nil || b.closed {
		return
	}
	ev := Event{Kind: EventAlert, Alert: &a}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.notify(b.ctx, ev)
	}()
}

// Notifier delivers an event to people. The broker calls it on its own
// goroutine, never holding its lock, once per event; a request's decision
// event is delivered after its request event has returned. ctx is done
// when the broker closes. A Notifier must not keep the Request's slices
// beyond the call.
type Notifier func(ctx context.Context, ev Event)

// Options configure a Broker. The zero value is usable.
type Options struct {
	Notify Notifier         // nil: nobody is notified
	Now    func() time.Time // nil: time.Now
	Log    hclog.Logger     // nil: no logging
}

// Broker holds requests and takes decisions on them. It keeps everything
// in memory (see the package doc on restarts). Its methods are safe for
// concurrent use. Close it to fail pending requests closed and wait for
// notifications.
type Broker struct {
	notify Notifier
	now    func() time.Time
	log    hclog.Logger

	ctx    context.Context // for notifications; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // notification goroutines

	mu       sync.Mutex
	closed   bool
	entries  map[string]*entry // pending and kept finished requests
	finished []string          // IDs of kept finished requests, oldest first
}

type entry struct {
	req      Request
	out      chan Outcome
	timer    *time.Timer
	stopCtx  func() bool
	voters   map[string]bool // distinct approvers who approved
	notified chan struct{}   // closed when the request event was delivered
}

// NewBroker returns an empty broker.
func NewBroker(opts Options) *Broker {
	b := &Broker{notify: opts.Notify, now: opts.Now, log: opts.Log, entries: map[string]*entry{}}
	if b.now == nil {
		b.now = time.Now
	}
	if b.log == nil {
		b.log = hclog.NewNullLogger()
	}
	b.log = b.log.Named("approve")
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b
}

// Hold registers r, notifies, and returns the registered copy (ID,
// Created, Deadline, State set) and a channel that delivers exactly one
// Outcome and is then closed: when the request is approved or denied, when
// its deadline passes (expired), or when ctx is done (cancelled). The
// caller waits on the channel; the broker never blocks on it. After Close,
// Hold delivers a cancelled Outcome at once.
func (b *Broker) Hold(ctx context.Context, r Request) (Request, <-chan Outcome) {
	r.Approvers = slices.Clone(r.Approvers)
	r.Decisions = nil
	if r.MinApprovals < 1 {
		r.MinApprovals = 1
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	r.Created = b.now()
	r.Deadline = r.Created.Add(r.Timeout)
	r.State = StatePending
	e := &entry{req: r, out: make(chan Outcome, 1), voters: map[string]bool{}, notified: make(chan struct{})}

	b.mu.Lock()
	defer b.mu.Unlock()
	e.req.ID = b.newIDLocked()
	if b.closed {
		e.req.State = StateCancelled
		e.out <- Outcome{Reason: "approval broker stopped", Request: copyRequest(e.req)}
		close(e.out)
		return copyRequest(e.req), e.out
	}
	b.entries[e.req.ID] = e
	b.log.Info("statement held", "id", e.req.ID, "session", r.Session, "rule", r.Rule, "stage", r.Stage,
		"approvers", r.Approvers, "min_approvals", r.MinApprovals, "deadline", r.Deadline)
	b.notifyLocked(e, EventRequest)

	id := e.req.ID
	e.timer = time.AfterFunc(r.Timeout, func() { b.expire(id) })
	e.stopCtx = context.AfterFunc(ctx, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if e.req.State == StatePending {
			b.finishLocked(e, StateCancelled, "cancelled")
		}
	})
	return copyRequest(e.req), e.out
}

// Decide records by's decision on the request id and returns the request
// as it stands afterwards. It refuses with a *RefusedError wrapping
// ErrUnknownRequest, ErrNotPending, ErrInvalidApprover, ErrNotApprover or
// ErrSelfApproval (see the package doc for the rules). A second decision
// from the same approver is accepted without changing anything, except
// that a deny after their own approval still denies. id is matched without
// regard to case or surrounding space, and the "h-" prefix may be left
// out.
func (b *Broker) Decide(id string, by Approver, approve bool, comment string) (Request, error) {
	id = normalizeID(id)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireDueLocked()
	e, ok := b.entries[id]
	if !ok {
		return Request{}, &RefusedError{ID: id, Err: ErrUnknownRequest}
	}
	if e.req.State != StatePending {
		return copyRequest(e.req), &RefusedError{ID: id, Err: ErrNotPending, Detail: "it is " + e.req.State}
	}
	if err := check(&e.req, by, approve); err != nil {
		err.ID = id
		b.log.Warn("decision refused", "id", id, "approver", by.display(), "kind", by.Kind, "error", err)
		return copyRequest(e.req), err
	}
	key := by.key()
	if approve && e.voters[key] {
		return copyRequest(e.req), nil
	}
	by.Groups = slices.Clone(by.Groups)
	by.Claims = maps.Clone(by.Claims)
	e.req.Decisions = append(e.req.Decisions, Decision{By: by, Approve: approve, Comment: comment, At: b.now()})
	b.log.Info("decision accepted", "id", id, "approver", by.display(), "kind", by.Kind, "approve", approve)
	switch {
	case !approve:
		reason := "denied by " + by.display()
		if comment != "" {
			reason += ": " + comment
		}
		b.finishLocked(e, StateDenied, reason)
	default:
		e.voters[key] = true
		if len(e.voters) >= e.req.MinApprovals {
			var names []string
			for _, d := range e.req.Decisions {
				if d.Approve {
					names = append(names, d.By.display())
				}
			}
			b.finishLocked(e, StateApproved, "approved by "+strings.Join(names, ", "))
		}
	}
	return copyRequest(e.req), nil
}

// List returns pending requests, oldest first, then the kept finished
// ones, most recently finished first.
func (b *Broker) List() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireDueLocked()
	var pending []Request
	for _, e := range b.entries {
		if e.req.State == StatePending {
			pending = append(pending, copyRequest(e.req))
		}
	}
	slices.SortFunc(pending, func(x, y Request) int {
		return cmp.Or(x.Created.Compare(y.Created), strings.Compare(x.ID, y.ID))
	})
	out := pending
	for i := len(b.finished) - 1; i >= 0; i-- {
		out = append(out, copyRequest(b.entries[b.finished[i]].req))
	}
	return out
}

// Get returns the request id if it is pending or among the kept finished
// ones. id is matched as in Decide.
func (b *Broker) Get(id string) (Request, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireDueLocked()
	e, ok := b.entries[normalizeID(id)]
	if !ok {
		return Request{}, false
	}
	return copyRequest(e.req), true
}

// Close cancels every pending request (its Outcome says the broker
// stopped, so the statement does not run), waits until ctx is done for
// notifications still being delivered, then cancels those and waits for
// them to return. Later Holds are cancelled at once. Close is idempotent.
func (b *Broker) Close(ctx context.Context) {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		for _, e := range b.entries {
			if e.req.State == StatePending {
				b.finishLocked(e, StateCancelled, "approval broker stopped")
			}
		}
	}
	b.mu.Unlock()

	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	b.cancel()
	<-done
}

// expire ends the request id when its timer fires.
func (b *Broker) expire(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.entries[id]; ok && e.req.State == StatePending {
		b.finishLocked(e, StateExpired, "no decision within "+e.req.Timeout.String())
	}
}

// expireDueLocked ends the pending requests whose deadline has passed by
// the broker's clock, so a decision never lands after the deadline even
// when the timer has not fired yet (or the clock is not the wall clock).
func (b *Broker) expireDueLocked() {
	now := b.now()
	for _, e := range b.entries {
		if e.req.State == StatePending && !now.Before(e.req.Deadline) {
			b.finishLocked(e, StateExpired, "no decision within "+e.req.Timeout.String())
		}
	}
}

// finishLocked ends a pending request: it delivers the Outcome, moves the
// request to the finished list and queues the decision event.
func (b *Broker) finishLocked(e *entry, state, reason string) {
	e.req.State = state
	if e.timer != nil {
		e.timer.Stop()
	}
	if e.stopCtx != nil {
		e.stopCtx()
	}
	e.out <- Outcome{Approved: state == StateApproved, Reason: reason, Request: copyRequest(e.req)}
	close(e.out)
	b.log.Info("hold finished", "id", e.req.ID, "session", e.req.Session, "state", state, "reason", reason)
	b.finished = append(b.finished, e.req.ID)
	if len(b.finished) > keepFinished {
		delete(b.entries, b.finished[0])
		b.finished = slices.Delete(b.finished, 0, 1)
	}
	b.notifyLocked(e, EventDecision)
}

// notifyLocked delivers an event on a new goroutine. It is only called
// while the broker is open or while Close finishes pending requests, so
// b.wg.Add never races with Close's Wait.
func (b *Broker) notifyLocked(e *entry, kind string) {
	if b.notify == nil {
		if kind == EventRequest {
			close(e.notified)
		}
		return
	}
	ev := Event{Kind: kind, Request: copyRequest(e.req)}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if kind == EventRequest {
			defer close(e.notified)
		} else {
			<-e.notified
		}
		b.notify(b.ctx, ev)
	}()
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newIDLocked returns an ID no kept request has: "h-" and 40 random bits.
func (b *Broker) newIDLocked() string {
	for {
		var buf [5]byte
		rand.Read(buf[:])
		id := "h-" + idEncoding.EncodeToString(buf[:])
		if _, taken := b.entries[id]; !taken {
			return id
		}
	}
}

func normalizeID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	if !strings.HasPrefix(id, "h-") {
		id = "h-" + id
	}
	return id
}

// copyRequest returns r with its own slices, so callers and notifiers
// cannot change the broker's copy.
func copyRequest(r Request) Request {
	r.Approvers = slices.Clone(r.Approvers)
	r.Decisions = slices.Clone(r.Decisions)
	for i := range r.Decisions {
		r.Decisions[i].By.Groups = slices.Clone(r.Decisions[i].By.Groups)
		r.Decisions[i].By.Claims = maps.Clone(r.Decisions[i].By.Claims)
	}
	return r
}
