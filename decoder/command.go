package decoder

import (
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// Command is one command a protocol has decided: what the enforcer saw of
// it, its verdict, and the masker its results go through. A protocol
// makes one per command it classifies (a PostgreSQL Query or Parse, a
// MySQL COM_QUERY or COM_STMT_PREPARE), fills Cmd, and has a Decider
// decide it. Afterwards a Command is shared by pointer for the
// command's whole life (a prepared statement's executions included) and
// never copied: the enforcer keeps state in Cmd (the last result
// verdict). Its verdict is changed only by the goroutine that decided it,
// before the command is sent (a hold's outcome); after that it is read
// by the protocol's goroutines without a lock.
type Command struct {
	// Cmd is the command as the enforcer sees it: its text and its
	// classification, or ClassifyErr when it could not be classified
	// (the verdict is then a deny).
	Cmd enforcer.Command
	// Verdict is the session's verdict, as the shared layer amended it:
	// a deny when the masks cannot be applied, a hold's outcome once
	// decided (AwaitHold).
	Verdict enforcer.Verdict
	// Masker is set when the verdict's mask rules apply to the command's
	// results; nil otherwise.
	Masker *mask.Masker
}

// Blocked reports whether the command must not reach the server: its
// verdict denies it, or holds it (a hold that was not approved, or that
// cannot wait for approval: fail closed). The protocol refuses it with
// its own error.
func (c *Command) Blocked() bool {
	return c.Verdict.Action == ruleset.Deny || c.Verdict.Action == ruleset.Hold
}

// Decider decides the commands of one session: the session's verdict,
// the masker that verdict needs, holds before a command runs
// (AwaitHold) and on its result (CheckResult). It is a value the
// protocol keeps for the session's lifetime; it holds no state of its
// own, so its methods may be called from the protocol's client-side and
// server-side goroutines at once (as Session's may).
type Decider struct {
	// Session decides the commands and records them.
	Session *enforcer.Session
	// Masks builds the maskers of mask verdicts, shared by every session
	// of the daemon. Nil: a command whose verdict masks is refused.
	Masks *mask.Cache
}

// errNoMasks is why a mask verdict is refused when the protocol was
// given no maskers.
var errNoMasks = errors.New("no masking configured")

// Decide asks the session for c's verdict; c.Cmd holds its text and
// classification as the protocol made them. When the verdict masks, c
// gets the masker of its mask rules, and when that cannot be built the
// verdict becomes a deny: a result the rules say to mask never passes
// unmasked (fail closed). A deny verdict gets no masker.
func (d Decider) Decide(c *Command) {
	c.Verdict = d.Session.Decide(&c.Cmd)
	if len(c.Verdict.Decision.Masks) == 0 || c.Verdict.Action == ruleset.Deny {
		return
	}
	var m *mask.Masker
	err := errNoMasks
	if d.Masks != nil {
		m, err = d.Masks.Masker(c.Verdict.Decision.Masks)
	}
	if err != nil {
		// A mask that cannot be built must not let data through.
		c.Verdict.Action = ruleset.Deny
		c.Verdict.Decision.Reason = "the mask rules cannot be applied: " + err.Error()
		return
	}
	c.Masker = m
}

// RuleID names the rule of a verdict, "sluice/unknown" when it has none.
func RuleID(v enforcer.Verdict) string {
	if v.Decision.Rule != nil {
		return v.Decision.Rule.ID
	}
	return "sluice/unknown"
}

// Refusal is the sentence a refused command is answered with by the
// protocols that answer in text (an SSH client's stderr, a Kubernetes
// Status): "sluice: WHAT denied by rule ID: REASON", or "held, and cannot
// wait for approval," for a hold the session cannot wait on.
func (c *Command) Refusal(what string) string {
	verb := "denied"
	if c.Verdict.Action == ruleset.Hold {
		verb = "held, and cannot wait for approval,"
	}
	return fmt.Sprintf("sluice: %s %s by rule %s: %s", what, verb, RuleID(c.Verdict), c.Verdict.Decision.Reason)
}
