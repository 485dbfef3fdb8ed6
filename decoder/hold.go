package decoder

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/ruleset"
)

// Notify tells a client, in its protocol's terms (a PostgreSQL
// NoticeResponse, say), that its command waits for a human decision:
// id names the hold and message says how to approve it. It is called on
// the goroutine that waits, once the hold exists and before the wait
// begins, and must write what it says at once: nothing else reaches the
// client until the decision. A protocol makes its Notify functions once
// per session, so a command that is not held costs nothing.
type Notify func(id, message string)

// AwaitHold waits for the decision on c when its verdict holds it before
// it runs; any other verdict returns at once. Approved, c goes on as
// allowed, or as masked when it has a masker (its masks still apply).
// Refused or expired, its verdict becomes a deny with the decider's
// reason. When the session cannot hold (no approvals configured) the
// verdict stays a hold, which Blocked refuses: fail closed. AwaitHold
// must be called before the command is sent, from the goroutine that
// decided it; it blocks until the decision or ctx's end (the session's:
// an ended session's holds are refused).
func (d Decider) AwaitHold(ctx context.Context, c *Command, notify Notify) {
	if c.Verdict.Action != ruleset.Hold || !d.Session.CanHold() {
		return
	}
	o := d.Session.Hold(ctx, enforcer.HoldRequest{Command: &c.Cmd, Verdict: c.Verdict, Stage: "before", Notify: notify})
	if o.Approved {
		c.Verdict.Action = ruleset.Allow
		if c.Masker != nil {
			c.Verdict.Action = ruleset.Mask
		}
		return
	}
	c.Verdict.Action = ruleset.Deny
	c.Verdict.Decision.Reason = o.Reason
}

// ResultGate is the result stage of one execution of a command whose
// rules wait on its result (result.rows, result.bytes): when it must be
// decided again, and whether a hold on it was approved. Its zero value
// decides at the first row. It belongs to the goroutine that reads the
// result; a protocol that fetches a result in pieces (a portal, a cursor)
// carries Approved across them, and the counts it passes to CheckResult
// run on across them too.
type ResultGate struct {
	// Approved is set once a hold on the result was approved: the rest of
	// it passes without being decided again.
	Approved bool
	// nextRows and nextBytes are the counts at which the result is
	// decided again (zero: at its first row).
	nextRows, nextBytes int64
}

// CheckResult decides c's result again when its rules wait on the result:
// at the first row, then whenever rows or bytes reach the next count at
// which the ruleset says the verdict can change (for result.rows > N, row
// N+1), so the verdict is the one every row would get. rows and bytes
// count the row about to be passed on, as if it had been, over the whole
// result (earlier pieces included). It returns refused when the row and
// the rest of the result must not reach the client, with the verdict the
// protocol's error names; the protocol then drops the rest, stops the
// command on the server (CancelCommand) and ends it for the client with
// its own error, after exactly the rows already sent.
//
// A hold pauses the result: CheckResult returns only once a human decided
// (or ctx ended), and as the protocol reads nothing more from the server
// meanwhile, the server waits too. An approved hold lets the rest of the
// result pass; a refused one, and a hold the session cannot wait on, is
// a refusal (fail closed). It is called from the goroutine that reads the
// result.
func (d Decider) CheckResult(ctx context.Context, c *Command, g *ResultGate, rows, bytes int64, notify Notify) (refused bool, v enforcer.Verdict) {
	if !d.ResultDue(c, g, rows, bytes) {
		return false, v // every row of most results: small enough to inline
	}
	return d.decideResult(ctx, c, g, rows, bytes, notify)
}

// decideResult is CheckResult at a row where the result is decided again.
func (d Decider) decideResult(ctx context.Context, c *Command, g *ResultGate, rows, bytes int64, notify Notify) (refused bool, v enforcer.Verdict) {
	refused, v, hold := d.DecideResultNow(c, g, rows, bytes)
	if hold {
		return d.AwaitResultHold(ctx, c, g, v, rows, notify)
	}
	return refused, v
}

// ResultDue reports whether CheckResult would decide c's result again at
// these counts (and so might hold it).
func (d Decider) ResultDue(c *Command, g *ResultGate, rows, bytes int64) bool {
	return c.Verdict.Decision.AwaitResult && !g.Approved && (rows >= g.nextRows || bytes >= g.nextBytes)
}

// DecideResultNow is CheckResult at a row where ResultDue, without the
// wait: when the result must wait for a human, it returns hold and the
// verdict, and the caller waits with AwaitResultHold where it may block
// (a protocol running on the relay core leaves it first).
func (d Decider) DecideResultNow(c *Command, g *ResultGate, rows, bytes int64) (refused bool, v enforcer.Verdict, hold bool) {
	v = d.Session.DecideResult(&c.Cmd, rows, bytes)
	g.nextRows, g.nextBytes = d.Session.NextResultCheck(rows, bytes)
	switch v.Action {
	case ruleset.Hold:
		if d.Session.CanHold() {
			return false, v, true
		}
	case ruleset.Deny:
	default:
		return false, v, false
	}
	return true, v, false
}

// AwaitResultHold waits for the decision on the hold DecideResultNow
// returned (v) at rows, as CheckResult does.
func (d Decider) AwaitResultHold(ctx context.Context, c *Command, g *ResultGate, v enforcer.Verdict, rows int64, notify Notify) (refused bool, _ enforcer.Verdict) {
	o := d.Session.Hold(ctx, enforcer.HoldRequest{Command: &c.Cmd, Verdict: v, Stage: "result", Rows: rows - 1, Notify: notify})
	if o.Approved {
		g.Approved = true
		return false, v
	}
	v.Action = ruleset.Deny
	v.Decision.Reason = o.Reason
	return true, v
}

// Canceler stops the command running on the server, in the protocol's
// terms: PostgreSQL sends a CancelRequest on a fresh connection, MySQL
// would send KILL QUERY on one. ctx bounds it (CancelTimeout).
type Canceler func(ctx context.Context) error

// CancelTimeout bounds one cancel of a refused command.
const CancelTimeout = 10 * time.Second

// CancelCommand runs cancel on a goroutine of its own, within
// CancelTimeout, so that the result's reader goes on draining (and
// dropping) what the server still sends; a failure is logged to log. The
// server's answer to the cancel, if any, is the protocol's to read.
func CancelCommand(cancel Canceler, log hclog.Logger) {
	go func() {
		ctx, stop := context.WithTimeout(context.Background(), CancelTimeout)
		defer stop()
		if err := cancel(ctx); err != nil {
			log.Error("cancel request for a refused result failed", "error", err)
		}
	}()
}
