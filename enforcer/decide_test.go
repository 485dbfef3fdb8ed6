package enforcer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// failRules has a deny, a rule whose condition fails to evaluate for a
// flow whose claims carry an invalid pattern, and a hold.
const failRules = `
  deny "no-drop" {
    when = sql.kind == "drop"
  }
  deny "pattern" {
    when = identity.pattern != "" && regex(identity.pattern, sql.kind)
  }
  hold "export" {
    when      = sql.kind == "copy_out"
    approvers = ["group:security"]
  }
`

// newRecording starts a real recording in a temporary directory; closing
// the writer makes every later Append fail, as a failed disk does.
func newRecording(t *testing.T) *record.Writer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	w, err := record.Create(t.TempDir(), "decide", record.NewKeys(priv), record.Options{FsyncEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// TestDecideFailsClosed: every way Decide can fail denies the command in
// enforce mode; monitor mode enforces nothing but what keeps the session
// accountable (a recording that failed).
func TestDecideFailsClosed(t *testing.T) {
	drop := ruleset.Statement{Kind: "drop", Tables: []string{"users"}}
	sel := ruleset.Statement{Kind: "select", Tables: []string{"users"}}
	tests := []struct {
		name    string
		mode    string // "" (enforce) or "monitor"
		pattern string // identity.pattern: "([" makes the pattern rule fail
		// record: 0 no recording, 1 recording failed before the
		// command, 2 recording fails at the command's own event.
		record int
		cmd    Command
		// want is the enforced action, rule the deciding rule, and
		// decided the ruleset's own action (what monitor mode logs).
		want, decided ruleset.Action
		rule          string
		reason        string
		err           bool // Decision.Err is set
	}{
		{name: "allowed", cmd: Command{Text: "SELECT 1", Statement: sel},
			want: ruleset.Allow, decided: ruleset.Allow, rule: "ci/default"},
		{name: "denied by a rule", cmd: Command{Text: "DROP TABLE users", Statement: drop},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "ci/deny/no-drop"},
		{name: "unparsable", cmd: Command{Text: "SELEC", ClassifyErr: errors.New("syntax error at or near \"SELEC\"")},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "sluice/unparsable", reason: "could not be parsed: syntax error"},
		{name: "evaluation error", pattern: "([", cmd: Command{Text: "SELECT 1", Statement: sel},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "ci/deny/pattern", reason: "rule evaluation failed", err: true},
		{name: "recording failed before", record: 1, cmd: Command{Text: "SELECT 1", Statement: sel},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "sluice/recording-failed"},
		{name: "recording fails at the verdict", record: 2, cmd: Command{Text: "SELECT 1", Statement: sel},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "sluice/recording-failed"},
		{name: "recording fails, unparsable", record: 2, cmd: Command{Text: "SELEC", ClassifyErr: errors.New("syntax error")},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "sluice/unparsable"}, // denied already: the first reason stands

		// Monitor mode: the ruleset's verdict is logged and recorded,
		// nothing is enforced...
		{name: "monitor: denied by a rule", mode: "monitor", cmd: Command{Text: "DROP TABLE users", Statement: drop},
			want: ruleset.Allow, decided: ruleset.Deny, rule: "ci/deny/no-drop"},
		{name: "monitor: unparsable", mode: "monitor", cmd: Command{Text: "SELEC", ClassifyErr: errors.New("syntax error")},
			want: ruleset.Allow, decided: ruleset.Deny, rule: "sluice/unparsable"},
		{name: "monitor: evaluation error", mode: "monitor", pattern: "([", cmd: Command{Text: "SELECT 1", Statement: sel},
			want: ruleset.Allow, decided: ruleset.Deny, rule: "ci/deny/pattern", err: true},
		// ... except a recording that failed: an unrecorded session is
		// what monitor mode exists to avoid.
		{name: "monitor: recording failed before", mode: "monitor", record: 1, cmd: Command{Text: "SELECT 1", Statement: sel},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "sluice/recording-failed"},
		{name: "monitor: recording fails at the verdict", mode: "monitor", record: 2, cmd: Command{Text: "DROP TABLE users", Statement: drop},
			want: ruleset.Deny, decided: ruleset.Deny, rule: "sluice/recording-failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks := failRules
			if tt.mode != "" {
				blocks = "}\nmode = \"" + tt.mode + "\"\npolicy \"unused\" {\n  targets = [\"db\"]\n  when = false"
				blocks = failRules + blocks
			}
			rs := policyRuleset(t, blocks)
			f := flow(ruleset.LevelOIDC, "refs/heads/main")
			f.Identity.Claims["pattern"] = tt.pattern
			var w *record.Writer
			if tt.record > 0 {
				w = newRecording(t)
			}
			s := NewSession(context.Background(), rs.Match(f), w, record.Commands, hclog.NewNullLogger())
			if tt.record == 1 {
				w.Close()
				if s.Record(record.Metadata, record.Event{Type: record.TypeNote, Reason: "before"}) == nil {
					t.Fatal("a closed recording took an event")
				}
			}
			if tt.record == 2 {
				w.Close()
			}
			c := tt.cmd
			v := s.Decide(&c)
			if v.Action != tt.want || v.Decision.Action != tt.decided || v.Decision.Rule.ID != tt.rule {
				t.Fatalf("got %s (decided %s) by %s: %s; want %s (decided %s) by %s",
					v.Action, v.Decision.Action, v.Decision.Rule.ID, v.Decision.Reason, tt.want, tt.decided, tt.rule)
			}
			if !strings.Contains(v.Decision.Reason, tt.reason) {
				t.Errorf("reason %q does not say %q", v.Decision.Reason, tt.reason)
			}
			if (v.Decision.Err != nil) != tt.err {
				t.Errorf("Decision.Err = %v, want set: %t", v.Decision.Err, tt.err)
			}
			statements, denied := s.Counts()
			wantDenied := int64(0)
			if tt.want == ruleset.Deny {
				wantDenied = 1
			}
			if statements != 1 || denied != wantDenied {
				t.Errorf("counts: %d statements, %d denied; want 1, %d", statements, denied, wantDenied)
			}
			if tt.record > 0 && !errors.Is(s.RecordingFailed(), ErrRecording) {
				t.Errorf("RecordingFailed() = %v, want ErrRecording", s.RecordingFailed())
			}
		})
	}
}

// TestHoldFailsClosed: a hold is refused without a Holder, with the
// Holder's refusal, and when the Holder approves but the approval cannot
// be recorded.
func TestHoldFailsClosed(t *testing.T) {
	approveAll := func(ctx context.Context, h HoldRequest) HoldOutcome {
		h.Notify("h-1", "held")
		return HoldOutcome{Approved: true, Reason: "approved by test"}
	}
	refuseAll := func(ctx context.Context, h HoldRequest) HoldOutcome {
		return HoldOutcome{Reason: "expired"}
	}
	tests := []struct {
		name     string
		holder   func(context.Context, HoldRequest) HoldOutcome
		failRec  bool
		approved bool
		reason   string
	}{
		{"no holder", nil, false, false, "not configured"},
		{"refused", refuseAll, false, false, "expired"},
		{"approved", approveAll, false, true, "approved by test"},
		{"approved, recording fails", approveAll, true, false, "can no longer be recorded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := policyRuleset(t, failRules)
			w := newRecording(t)
			s := NewSession(context.Background(), rs.Match(flow(ruleset.LevelOIDC, "refs/heads/main")), w, record.Commands, hclog.NewNullLogger())
			s.Holder = tt.holder
			c := &Command{Text: "COPY users TO STDOUT", Statement: ruleset.Statement{Kind: "copy_out", Tables: []string{"users"}}}
			v := s.Decide(c)
			if v.Action != ruleset.Hold || v.Decision.Rule.ID != "ci/hold/export" {
				t.Fatalf("got %s by %s, want hold by ci/hold/export", v.Action, v.Decision.Rule.ID)
			}
			if s.CanHold() != (tt.holder != nil) {
				t.Errorf("CanHold() = %t with holder set %t", s.CanHold(), tt.holder != nil)
			}
			if tt.failRec {
				w.Close()
			}
			o := s.Hold(context.Background(), HoldRequest{Command: c, Verdict: v, Stage: "before", Notify: func(id, msg string) {}})
			if o.Approved != tt.approved || !strings.Contains(o.Reason, tt.reason) {
				t.Errorf("got approved %t (%s), want %t (%s)", o.Approved, o.Reason, tt.approved, tt.reason)
			}
		})
	}
}
