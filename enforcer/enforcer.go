// Package enforcer turns ruleset decisions into what a session does. It
// holds the protocol-neutral vocabulary decoders speak (a command, a
// verdict, an outcome) and the Session that answers Decide for each command
// and records what happened. It never sees a wire format and never imports
// a decoder.
//
// Recording is fail-closed: once the session's recording cannot be written,
// every further command is denied and the decoder ends the session.
package enforcer

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// Command is one statement a client sent, as a decoder classified it.
type Command struct {
	Text string
	// Statement is the classification; ClassifyErr is set when the text
	// could not be classified (the decision is then a deny).
	Statement   ruleset.Statement
	ClassifyErr error
	// Unmaskable, when set, says why the decoder cannot mask this
	// command's results (an SSH terminal, an SFTP file): a mask verdict
	// is then a deny, decided and recorded as one.
	Unmaskable string
	// Fields are recorded with the command's statement event (an SSH
	// channel's number); nil for most protocols. Not modified after
	// Decide.
	Fields map[string]string

	// result is DecideResult's last allow or mask verdict on this command
	// and the counts it holds for (ruleset.Match.ResultSpan), so that a
	// prepared statement run again is not decided again at every first
	// row.
	result keptResult
	// class is the statement's entry in the session's decisions by
	// classification, when the ruleset allows keeping them.
	class *classDecision
}

// keptResult is a result-stage verdict and the counts it holds for.
type keptResult struct {
	ok                                   bool
	verdict                              Verdict
	rowsFrom, rowsTo, bytesFrom, bytesTo int64
}

func (r *keptResult) covers(rows, bytes int64) bool {
	return r.ok && rows >= r.rowsFrom && rows < r.rowsTo && bytes >= r.bytesFrom && bytes < r.bytesTo
}

// classDecision is the decision of every statement with one
// classification, and the last result-stage verdict kept for them.
type classDecision struct {
	d      ruleset.Decision
	result keptResult // under Session.mu
}

// maxClasses bounds a session's decisions by classification; past it
// they are dropped and kept afresh.
const maxClasses = 256

// Verdict is what the decoder must do with a command.
type Verdict struct {
	// Action is the action to apply: the decision's, or Allow in monitor
	// mode.
	Action ruleset.Action
	// Decision is the ruleset's full answer, for events and messages.
	Decision ruleset.Decision
}

// Outcome is how a command ended, reported by the decoder.
type Outcome struct {
	Rows     int64
	Bytes    int64
	Duration time.Duration
	// ErrCode is the protocol's error code when the command failed
	// upstream (a PostgreSQL SQLSTATE), or "" on success.
	ErrCode string
	// Skipped is set when the command never ran (an earlier error in the
	// same batch).
	Skipped bool
	// Fields are recorded with the result (an SSH channel's number); nil
	// for most protocols. Not modified after Done.
	Fields map[string]string
}

// HoldRequest is a statement waiting for approval.
type HoldRequest struct {
	Command *Command
	Verdict Verdict
	// Stage is "before" (the statement has not run) or "result" (its
	// result is paused after Rows rows).
	Stage string
	Rows  int64
	// Notify is called once the request exists, with its ID and a
	// message for the client (how to approve), before the wait begins.
	Notify func(id, message string)
}

// HoldOutcome is the decision on a held statement.
type HoldOutcome struct {
	Approved bool
	// Reason says who decided, or that it timed out.
	Reason string
}

// CanHold reports whether hold verdicts can wait for approval.
func (s *Session) CanHold() bool { return s.Holder != nil }

// Hold waits for the decision on a held command and records the request
// and the outcome.
func (s *Session) Hold(ctx context.Context, h HoldRequest) HoldOutcome {
	if s.Holder == nil {
		return HoldOutcome{Reason: "approval holds are not configured"}
	}
	o := s.Holder(ctx, h)
	verdict := "deny"
	if o.Approved {
		verdict = "allow"
	}
	if err := s.Record(s.levelFor(h.Verdict.Decision), record.Event{Type: record.TypeNote, Kind: h.Command.Statement.Kind,
		Verdict: verdict, Rule: h.Verdict.Decision.Rule.ID, Reason: "hold (" + h.Stage + "): " + o.Reason}); err != nil && o.Approved {
		// An approval that cannot be recorded lets nothing run.
		o = HoldOutcome{Reason: "approved, but the session can no longer be recorded"}
	}
	if o.Approved {
		s.log.Info("held statement approved", "rule", h.Verdict.Decision.Rule.ID, "stage", h.Stage, "reason", o.Reason)
	} else {
		s.denied.Add(1)
		s.log.Warn("held statement refused", "rule", h.Verdict.Decision.Rule.ID, "stage", h.Stage, "reason", o.Reason)
	}
	return o
}

// ErrRecording is returned (wrapped) once the session's recording failed.
var ErrRecording = errors.New("session recording failed")

// Session is one flow's enforcement state. Decide may be called from the
// decoder's client-side goroutine while Done and Wire are called from its
// server-side goroutine.
type Session struct {
	match *ruleset.Match
	log   hclog.Logger

	// Recording: rec is nil when the session is not recorded; level is
	// the session's level (wire bytes follow it), while statement events
	// follow their own decision's level.
	rec   *record.Writer
	level record.Level
	ctx   context.Context

	statements atomic.Int64
	denied     atomic.Int64
	recErr     atomic.Pointer[error]

	mu       sync.Mutex
	verdicts map[string]bool
	// byClass keeps decisions per statement classification when the
	// ruleset allows it (ruleset.Match.ByClassification); keyBuf is the
	// scratch its keys are built in. Both under mu.
	byClass map[string]*classDecision
	keyBuf  []byte

	// Holder, when set before the session is used, makes hold verdicts
	// wait for a human decision. Without it a hold is refused (fail
	// closed).
	Holder func(ctx context.Context, h HoldRequest) HoldOutcome

	// Secrets, when set before the session is used, reads the credentials
	// the ruleset injects. Without it a flow granted one is refused.
	Secrets *credential.Store

	// Tee, when set before the session is used, also receives every
	// recorded event (after level filtering), for live export. It must
	// not block and must not keep e.Data beyond the call.
	Tee func(e record.Event)

	// Observer, when set before the session is used, is told of verdicts
	// and outcomes, for metrics.
	Observer *Observer
}

// Observer receives a session's verdicts and outcomes for the daemon's
// metrics. Its functions are called on the session's goroutines, may be
// nil, and must be cheap and not block.
type Observer struct {
	// Verdict is called for every verdict the session logs and records:
	// each Decide, and each DecideResult that stops a result. action is
	// the ruleset's decision; in monitor mode that is what the rule would
	// have done, not what was enforced.
	Verdict func(rule string, action ruleset.Action)
	// Done is called when an allowed command has ended.
	Done func(o Outcome)
}

// RecordingStats returns how many events wait in the session's recording
// queue and how many bytes its recording has written; zeros when the
// session is not recorded.
func (s *Session) RecordingStats() (queued int, written int64) {
	if s.rec == nil {
		return 0, 0
	}
	return s.rec.Queued(), s.rec.Written()
}

// NewSession starts a session for a flow matched against the ruleset. rec
// may be nil (not recorded); level is the session's record level.
func NewSession(ctx context.Context, m *ruleset.Match, rec *record.Writer, level record.Level, log hclog.Logger) *Session {
	if rec == nil {
		level = record.None
	}
	return &Session{match: m, log: log, rec: rec, level: level, ctx: ctx, verdicts: map[string]bool{}}
}

// RecordingRoom returns how many more events the session's recording
// queue takes before Record blocks; math.MaxInt when the session is not
// recorded. A decoder that must not block (one running on the relay
// core) checks it first.
func (s *Session) RecordingRoom() int {
	if s.rec == nil {
		return math.MaxInt
	}
	return s.rec.Room()
}

// Record appends e if level allows it. A failure makes the session's
// recording failed for good: every later Decide denies.
func (s *Session) Record(level record.Level, e record.Event) error {
	if s.rec == nil {
		return nil
	}
	if p := s.recErr.Load(); p != nil {
		return *p
	}
	e, ok := level.Filter(e)
	if !ok {
		return nil
	}
	if err := s.rec.Append(s.ctx, e); err != nil {
		err = errors.Join(ErrRecording, err)
		s.recErr.Store(&err)
		s.log.Error("session recording failed; denying every further command", "error", err)
		return err
	}
	if s.Tee != nil {
		s.Tee(e)
	}
	return nil
}

// FailRecording makes the session's recording failed for good, as a
// failed Record does (every later Decide denies), for a failure found
// outside Record: the session's index entry could not be committed. The
// first failure stays.
func (s *Session) FailRecording(err error) {
	err = errors.Join(ErrRecording, err)
	if s.recErr.CompareAndSwap(nil, &err) {
		s.log.Error("session recording failed; denying every further command", "error", err)
	}
}

// RecordingFailed returns the recording error, if any.
func (s *Session) RecordingFailed() error {
	if p := s.recErr.Load(); p != nil {
		return *p
	}
	return nil
}

// WantsWire reports whether the session records wire bytes (level full),
// so decoders copy bytes only when they will be kept.
func (s *Session) WantsWire() bool { return s.rec != nil && s.level >= record.Full }

// Wire records bytes the client sent (dir record.DirClientToServer) or
// received (record.DirServerToClient), as they crossed the client's
// connection: after masking.
func (s *Session) Wire(dir string, b []byte) error {
	if !s.WantsWire() || len(b) == 0 {
		return nil
	}
	return s.Record(s.level, record.Event{Type: record.TypeWire, Dir: dir, Data: b})
}

// WireStream records bytes of one stream of a multiplexed session (an
// SSH channel's stdin, stdout, stderr or terminal), named by fields,
// which must not be modified afterwards (one map per stream, reused).
// Like Wire, it records only at the full level.
func (s *Session) WireStream(dir string, fields map[string]string, b []byte) error {
	if !s.WantsWire() || len(b) == 0 {
		return nil
	}
	return s.Record(s.level, record.Event{Type: record.TypeWire, Dir: dir, Data: b, Fields: fields})
}

// Decide returns the verdict for a command and records it. A command that
// could not be classified is denied in enforce mode: an unparsable
// statement is never passed through unseen. Once recording has failed,
// every command is denied, the one whose verdict could not be recorded
// included, in monitor mode too.
func (s *Session) Decide(c *Command) Verdict {
	s.statements.Add(1)
	var d ruleset.Decision
	switch {
	case s.RecordingFailed() != nil:
		d = recordingFailed
	case c.ClassifyErr != nil:
		d = ruleset.Decision{Action: ruleset.Deny, Reason: "the statement could not be parsed: " + c.ClassifyErr.Error(),
			Rule: &ruleset.Rule{ID: "sluice/unparsable", Action: ruleset.Deny}}
		d.Monitor = s.match.Ruleset().Mode() == ruleset.Monitor
		d.Record = ruleset.RecordCommands
	case s.match.ByClassification() && c.Statement.SSH == nil && c.Statement.K8s == nil:
		// The key of a decision by classification is SQL's (kind,
		// tables, functions, flags): an SSH or Kubernetes request is
		// decided alone.
		d = s.decideByClass(c)
	default:
		d = s.match.Decide(&c.Statement, ruleset.Result{})
	}
	if c.Unmaskable != "" && d.Action == ruleset.Mask {
		d.Action = ruleset.Deny
		d.Reason = "the mask rules cannot be applied to " + c.Unmaskable + ": " + d.Reason
	}
	v := s.verdict(c, d)
	if v.Action != ruleset.Deny && s.RecordingFailed() != nil {
		// The verdict's own event could not be recorded: the command
		// must not run unrecorded.
		s.denied.Add(1)
		v = Verdict{Action: ruleset.Deny, Decision: recordingFailed}
	}
	return v
}

// recordingFailed is the decision on every command once the session's
// recording failed.
var recordingFailed = ruleset.Decision{Action: ruleset.Deny, Reason: "the session can no longer be recorded",
	Rule: &ruleset.Rule{ID: "sluice/recording-failed", Action: ruleset.Deny}}

// decideByClass decides c from the session's decisions by
// classification, deciding and keeping it the first time.
func (s *Session) decideByClass(c *Command) ruleset.Decision {
	st := &c.Statement
	s.mu.Lock()
	b := append(s.keyBuf[:0], st.Kind...)
	for _, list := range [...][]string{st.Tables, st.Functions, st.Flags} {
		b = append(b, 0x1e)
		for _, x := range list {
			b = append(append(b, x...), 0x1f)
		}
	}
	b = append(b, 0x1e, boolByte(st.HasWhere), boolByte(st.HasLimit))
	s.keyBuf = b
	cd := s.byClass[string(b)]
	if cd != nil {
		s.mu.Unlock()
		c.class = cd
		return cd.d
	}
	key := string(b)
	s.mu.Unlock()
	cd = &classDecision{d: s.match.Decide(st, ruleset.Result{})}
	s.mu.Lock()
	if s.byClass == nil || len(s.byClass) >= maxClasses {
		s.byClass = make(map[string]*classDecision)
	}
	s.byClass[key] = cd
	s.mu.Unlock()
	c.class = cd
	return cd.d
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// DecideResult re-evaluates a command whose decision awaited its result,
// with the rows and bytes seen so far. It is called at the first row of
// such a result and again whenever NextResultCheck says the verdict may
// have changed (for some rules on every row), so only a verdict that
// stops the result (hold or deny) is logged and recorded. An allow or
// mask verdict is kept on the command for the counts over which the
// ruleset says it cannot change, and given again without evaluating the
// rules when a later execution of the command asks within them. Calls for
// one command must not be concurrent (a decoder makes them from the loop
// that reads the command's results).
func (s *Session) DecideResult(c *Command, rows, bytes int64) Verdict {
	if c.result.covers(rows, bytes) {
		return c.result.verdict
	}
	if c.class != nil {
		s.mu.Lock()
		kept := c.class.result
		s.mu.Unlock()
		if kept.covers(rows, bytes) {
			c.result = kept
			return kept.verdict
		}
	}
	d := s.match.Decide(&c.Statement, ruleset.Result{Known: true, Rows: rows, Bytes: bytes})
	if a := d.Enforced(); a != ruleset.Hold && a != ruleset.Deny {
		v := Verdict{Action: a, Decision: d}
		r := &c.result
		r.rowsFrom, r.rowsTo, r.bytesFrom, r.bytesTo = s.match.ResultSpan(rows, bytes)
		r.verdict, r.ok = v, true
		if c.class != nil {
			s.mu.Lock()
			c.class.result = *r
			s.mu.Unlock()
		}
		return v
	}
	c.result.ok = false
	return s.verdict(c, d)
}

// NextResultCheck returns when a result decided by DecideResult with
// rows and bytes must be decided again: once it has nextRows rows or
// nextBytes bytes. Before that the verdict is the same (see
// ruleset.Match.NextResultCheck).
func (s *Session) NextResultCheck(rows, bytes int64) (nextRows, nextBytes int64) {
	return s.match.NextResultCheck(rows, bytes)
}

func (s *Session) verdict(c *Command, d ruleset.Decision) Verdict {
	v := Verdict{Action: d.Enforced(), Decision: d}
	s.mu.Lock()
	s.verdicts[d.Action.String()] = true
	s.mu.Unlock()
	if s.Observer != nil && s.Observer.Verdict != nil {
		s.Observer.Verdict(d.Rule.ID, d.Action)
	}
	switch {
	case v.Action == ruleset.Deny:
		s.denied.Add(1)
		s.log.Warn("statement denied", "rule", d.Rule.ID, "reason", d.Reason, "kind", c.Statement.Kind, "statement", clip(c.Text))
	case d.Monitor && d.Action != ruleset.Allow:
		s.log.Warn("statement would be "+d.Action.String()+" (monitor mode)", "rule", d.Rule.ID, "kind", c.Statement.Kind, "statement", clip(c.Text))
	}
	s.Record(s.levelFor(d), record.Event{Type: record.TypeStatement, Kind: c.Statement.Kind, Text: c.Text,
		Verdict: d.Action.String(), Rule: d.Rule.ID, Reason: d.Reason, Fields: c.Fields})
	return v
}

// levelFor is the level a statement's events are recorded at: its own
// decision's, but never below the session's.
func (s *Session) levelFor(d ruleset.Decision) record.Level {
	l := record.LevelOf(d.Record)
	if l < s.level {
		l = s.level
	}
	return l
}

// Done reports how an allowed command ended, and records it.
func (s *Session) Done(c *Command, v Verdict, o Outcome) {
	s.Record(s.levelFor(v.Decision), record.Event{Type: record.TypeResult, Kind: c.Statement.Kind,
		Rows: o.Rows, Bytes: o.Bytes, DurationUS: o.Duration.Microseconds(), ErrCode: o.ErrCode, Fields: o.Fields})
	if s.Observer != nil && s.Observer.Done != nil {
		s.Observer.Done(o)
	}
	if !s.log.IsDebug() {
		return
	}
	s.log.Debug("statement", "kind", c.Statement.Kind, "verdict", v.Decision.Action.String(), "rule", v.Decision.Rule.ID,
		"rows", o.Rows, "duration_us", o.Duration.Microseconds(), "error_code", o.ErrCode, "skipped", o.Skipped,
		"statement", clip(c.Text))
}

// Counts returns the statements decided and denied so far.
func (s *Session) Counts() (statements, denied int64) {
	return s.statements.Load(), s.denied.Load()
}

// Verdicts returns the distinct actions decided so far.
func (s *Session) Verdicts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.verdicts))
	for _, a := range []string{"allow", "mask", "hold", "deny"} {
		if s.verdicts[a] {
			out = append(out, a)
		}
	}
	return out
}

func clip(s string) string {
	const max = 1024
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
