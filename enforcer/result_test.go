package enforcer

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// TestDecideResultKept: a prepared statement run again gets, from the
// verdict kept on its command, exactly what deciding anew would give, at
// every row count and on both sides of each threshold, and a deny past a
// threshold is still decided (and logged) each time.
func TestDecideResultKept(t *testing.T) {
	rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(`
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "ci" {
  targets = ["db"]
  deny "big" {
    when = result.rows > 5
  }
  mask "mid" {
    when   = result.rows >= 3 && result.bytes < 1000
    detect = ["email"]
  }
}
`)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	m := rs.Match(flow(ruleset.LevelOIDC, "refs/heads/main"))
	s := NewSession(context.Background(), m, nil, 0, hclog.NewNullLogger())
	c := &Command{Text: "SELECT * FROM t", Statement: ruleset.Statement{Kind: "select", Tables: []string{"t"}}}
	if v := s.Decide(c); !v.Decision.AwaitResult {
		t.Fatalf("statement verdict %s does not await the result", v.Action)
	}
	// Executions of the command with 1..8 rows, bytes growing 300 a row.
	for exec := range 3 {
		for rows := int64(1); rows <= 8; rows++ {
			bytes := rows * 300
			got := s.DecideResult(c, rows, bytes)
			want := m.Decide(&c.Statement, ruleset.Result{Known: true, Rows: rows, Bytes: bytes})
			if got.Action != want.Enforced() || got.Decision.Rule.ID != want.Rule.ID {
				t.Fatalf("execution %d, row %d: kept verdict %s by %s, deciding anew gives %s by %s",
					exec, rows, got.Action, got.Decision.Rule.ID, want.Action, want.Rule.ID)
			}
		}
	}
	if _, denied := s.Counts(); denied != 9 {
		t.Errorf("denied %d times at rows 6-8 over 3 executions, want 9: a deny is never kept", denied)
	}
}
