package decoder

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// commandRules deny drop, mask the users table's email and hold copy_out.
const commandRules = `
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "ci" {
  targets = ["db"]
  deny "no-drop" {
    when = sql.kind == "drop"
  }
  mask "emails" {
    columns = ["users.email"]
    using   = "redact"
  }
  hold "export" {
    when      = sql.kind == "copy_out"
    approvers = ["group:security"]
  }
  deny "big" {
    when = sql.kind == "select" && result.rows > 2
  }
  hold "long" {
    when      = sql.kind == "explain" && result.rows > 1
    approvers = ["group:security"]
  }
}
`

// newSession is an unrecorded session of a flow to target db under
// commandRules, with holder deciding its holds (nil: holds cannot wait).
func newSession(t *testing.T, holder func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome) *enforcer.Session {
	t.Helper()
	rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(commandRules)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	m := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "db", Protocol: "postgres"}})
	s := enforcer.NewSession(context.Background(), m, nil, 0, hclog.NewNullLogger())
	s.Holder = holder
	return s
}

func command(kind string) *Command {
	return &Command{Cmd: enforcer.Command{Text: kind + " ...", Statement: ruleset.Statement{Kind: kind, Tables: []string{"users"}}}}
}

// TestDecideMasker: a mask verdict gets its masker, and without maskers
// it is refused rather than run unmasked; a deny never gets one.
func TestDecideMasker(t *testing.T) {
	masks := mask.NewCache(make([]byte, 32))
	tests := []struct {
		name       string
		kind       string
		masks      *mask.Cache
		want       ruleset.Action
		wantMasker bool
		reason     string // a substring of the verdict's reason
	}{
		{"masked", "select", masks, ruleset.Mask, true, ""},
		{"no maskers: refused", "select", nil, ruleset.Deny, false, "the mask rules cannot be applied: no masking configured"},
		{"denied", "drop", masks, ruleset.Deny, false, ""},
		{"held", "copy_out", masks, ruleset.Hold, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := command(tc.kind)
			Decider{Session: newSession(t, nil), Masks: tc.masks}.Decide(c)
			if c.Verdict.Action != tc.want || (c.Masker != nil) != tc.wantMasker {
				t.Fatalf("verdict %s, masker %v; want %s, masker %v", c.Verdict.Action, c.Masker != nil, tc.want, tc.wantMasker)
			}
			if !strings.Contains(c.Verdict.Decision.Reason, tc.reason) {
				t.Errorf("reason %q does not say %q", c.Verdict.Decision.Reason, tc.reason)
			}
			if blocked := tc.want == ruleset.Deny || tc.want == ruleset.Hold; c.Blocked() != blocked {
				t.Errorf("Blocked() = %v for %s", c.Blocked(), tc.want)
			}
		})
	}
}
