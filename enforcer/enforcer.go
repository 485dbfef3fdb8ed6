// Package enforcer turns ruleset decisions into what a session does. It
// holds the protocol-neutral vocabulary decoders speak (a command, a
// verdict, an event) and the Session that answers Decide for each command
// and takes the events. It never sees a wire format and never imports a
// decoder.
//
// Masking, approval holds and recording are added here by their issues;
// today a Session decides and reports events to a logger.
package enforcer

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// Command is one statement a client sent, as a decoder classified it.
type Command struct {
	Text string
	// Statement is the classification; ClassifyErr is set when the text
	// could not be classified (the decision is then a deny).
	Statement   ruleset.Statement
	ClassifyErr error
}

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
}

// Session is one flow's enforcement state. Decide may be called from the
// decoder's client-side goroutine while Done is called from its
// server-side goroutine.
type Session struct {
	match *ruleset.Match
	log   hclog.Logger

	statements atomic.Int64
	denied     atomic.Int64
	unapplied  atomic.Bool
}

// NewSession starts a session for a flow matched against the ruleset.
func NewSession(m *ruleset.Match, log hclog.Logger) *Session {
	return &Session{match: m, log: log}
}

// Decide returns the verdict for a command. A command that could not be
// classified is denied in enforce mode: an unparsable statement is never
// passed through unseen.
func (s *Session) Decide(c *Command) Verdict {
	s.statements.Add(1)
	if c.ClassifyErr != nil {
		d := ruleset.Decision{Action: ruleset.Deny, Reason: "the statement could not be parsed: " + c.ClassifyErr.Error(),
			Rule: &ruleset.Rule{ID: "sluice/unparsable", Action: ruleset.Deny}}
		d.Monitor = s.match.Ruleset().Mode() == ruleset.Monitor
		return s.verdict(c, d)
	}
	return s.verdict(c, s.match.Decide(&c.Statement, ruleset.Result{}))
}

// DecideResult re-evaluates a command whose decision awaited its result,
// with the rows and bytes seen so far.
func (s *Session) DecideResult(c *Command, rows, bytes int64) Verdict {
	return s.verdict(c, s.match.Decide(&c.Statement, ruleset.Result{Known: true, Rows: rows, Bytes: bytes}))
}

func (s *Session) verdict(c *Command, d ruleset.Decision) Verdict {
	v := Verdict{Action: d.Enforced(), Decision: d}
	switch {
	case v.Action == ruleset.Deny:
		s.denied.Add(1)
		s.log.Warn("statement denied", "rule", d.Rule.ID, "reason", d.Reason, "kind", c.Statement.Kind, "statement", clip(c.Text))
	case d.Monitor && d.Action != ruleset.Allow:
		s.log.Warn("statement would be "+d.Action.String()+" (monitor mode)", "rule", d.Rule.ID, "kind", c.Statement.Kind, "statement", clip(c.Text))
	}
	return v
}

// Done reports how an allowed command ended.
func (s *Session) Done(c *Command, v Verdict, o Outcome) {
	if !s.log.IsDebug() {
		return
	}
	s.log.Debug("statement", "kind", c.Statement.Kind, "verdict", v.Decision.Action.String(), "rule", v.Decision.Rule.ID,
		"rows", o.Rows, "duration_us", o.Duration.Microseconds(), "error_code", o.ErrCode, "skipped", o.Skipped,
		"statement", clip(c.Text))
}

// Unapplied records that a verdict this build cannot apply yet (mask, or a
// hold before approvals exist) was let through, and says so once per
// session.
func (s *Session) Unapplied(v Verdict) {
	if s.unapplied.CompareAndSwap(false, true) {
		s.log.Warn("verdict not applied: this build has no "+v.Decision.Action.String()+" support yet; the statement ran unchanged",
			"rule", v.Decision.Rule.ID)
	}
}

// Counts returns the statements decided and denied so far.
func (s *Session) Counts() (statements, denied int64) {
	return s.statements.Load(), s.denied.Load()
}

func clip(s string) string {
	const max = 1024
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
