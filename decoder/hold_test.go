package decoder

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// holder decides every hold as approve says, and counts the holds and
// their notices by stage.
type holder struct {
	approve bool
	holds   map[string]int
	notices int
}

func (h *holder) hold(ctx context.Context, r enforcer.HoldRequest) enforcer.HoldOutcome {
	h.holds[r.Stage]++
	r.Notify("h1", "waiting for approval")
	if h.approve {
		return enforcer.HoldOutcome{Approved: true, Reason: "approved by test"}
	}
	return enforcer.HoldOutcome{Reason: "refused by test"}
}

// holding returns a decider with maskers whose session's holds h decides
// as approve says, or that cannot hold.
func holding(t *testing.T, canHold, approve bool) (*holder, Decider) {
	h := &holder{approve: approve, holds: map[string]int{}}
	var hf func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome
	if canHold {
		hf = h.hold
	}
	return h, Decider{Session: newSession(t, hf), Masks: mask.NewCache(make([]byte, 32))}
}

// holdCase is what a hold test runs: a statement of kind, in a session
// that can hold or not, whose holds are approved or not.
type holdCase struct {
	name, kind       string
	canHold, approve bool
}

// TestAwaitHold: a statement held before it runs goes on as allowed or
// masked when approved, becomes a deny with the decider's reason when
// refused, and stays a (blocked) hold when the session cannot hold.
func TestAwaitHold(t *testing.T) {
	tests := []struct {
		holdCase
		want    ruleset.Action
		holds   int
		blocked bool
		reason  string
	}{
		{holdCase{"approved: masks still apply", "copy_out", true, true}, ruleset.Mask, 1, false, ""},
		{holdCase{"refused", "copy_out", true, false}, ruleset.Deny, 1, true, "refused by test"},
		{holdCase{"no approvals: fail closed", "copy_out", false, false}, ruleset.Hold, 0, true, ""},
		{holdCase{"not held", "select", true, true}, ruleset.Mask, 0, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, d := holding(t, tc.canHold, tc.approve)
			c := command(tc.kind)
			d.Decide(c)
			d.AwaitHold(context.Background(), c, func(id, msg string) { h.notices++ })
			if c.Verdict.Action != tc.want || c.Blocked() != tc.blocked {
				t.Fatalf("verdict %s (blocked %v), want %s (blocked %v)", c.Verdict.Action, c.Blocked(), tc.want, tc.blocked)
			}
			if h.holds["before"] != tc.holds || h.notices != tc.holds {
				t.Errorf("%d holds, %d notices; want %d", h.holds["before"], h.notices, tc.holds)
			}
			if tc.reason != "" && c.Verdict.Decision.Reason != tc.reason {
				t.Errorf("reason %q, want %q", c.Verdict.Decision.Reason, tc.reason)
			}
		})
	}
}

// TestCheckResult: a result whose rules wait on it is refused at exactly
// the row a deny starts at; a hold on a result pauses it once, and an
// approval lets the rest pass while a refusal, or a session that cannot
// hold, refuses it.
func TestCheckResult(t *testing.T) {
	tests := []struct {
		holdCase
		refusedAt int64 // the first row refused; 0: none of 5
		action    ruleset.Action
		holds     int
	}{
		{holdCase{"deny past two rows", "select", false, false}, 3, ruleset.Deny, 0},
		{holdCase{"hold approved", "explain", true, true}, 0, 0, 1},
		{holdCase{"hold refused", "explain", true, false}, 2, ruleset.Deny, 1},
		{holdCase{"hold without approvals", "explain", false, false}, 2, ruleset.Hold, 0},
		{holdCase{"no result rule", "insert", true, true}, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, d := holding(t, tc.canHold, tc.approve)
			c := command(tc.kind)
			d.Decide(c)
			var g ResultGate
			refusedAt := int64(0)
			for row := int64(1); row <= 5; row++ {
				refused, v := d.CheckResult(context.Background(), c, &g, row, row*100, func(id, msg string) { h.notices++ })
				if refused {
					refusedAt = row
					if v.Action != tc.action {
						t.Errorf("refused with %s, want %s", v.Action, tc.action)
					}
					break
				}
			}
			if refusedAt != tc.refusedAt {
				t.Errorf("refused at row %d, want %d", refusedAt, tc.refusedAt)
			}
			if h.holds["result"] != tc.holds || h.notices != tc.holds {
				t.Errorf("%d result holds, %d notices; want %d", h.holds["result"], h.notices, tc.holds)
			}
			if g.Approved != (tc.holds > 0 && tc.approve) {
				t.Errorf("gate approved %v", g.Approved)
			}
		})
	}
}

// TestCancelCommand: the cancel runs on its own goroutine within
// CancelTimeout, and its failure does not stop anything.
func TestCancelCommand(t *testing.T) {
	done := make(chan time.Duration, 2)
	cancel := func(ctx context.Context) error {
		dl, ok := ctx.Deadline()
		if !ok {
			t.Error("cancel without a deadline")
		}
		done <- time.Until(dl)
		return errors.New("server unreachable")
	}
	CancelCommand(cancel, hclog.NewNullLogger())
	select {
	case left := <-done:
		if left <= 0 || left > CancelTimeout {
			t.Errorf("cancel has %v left, want within %v", left, CancelTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel never ran")
	}
}
