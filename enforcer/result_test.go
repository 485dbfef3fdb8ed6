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
// policyRuleset is a ruleset with target db and policy ci holding blocks.
func policyRuleset(t *testing.T, blocks string) *ruleset.Ruleset {
	t.Helper()
	rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(`
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "ci" {
  targets = ["db"]
` + blocks + `
}
`)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return rs
}

func TestDecideResultKept(t *testing.T) {
	rs := policyRuleset(t, `
  deny "big" {
    when = result.rows > 5
  }
  mask "mid" {
    when   = result.rows >= 3 && result.bytes < 1000
    detect = ["email"]
  }
`)
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

// TestDecideByClassification: a ruleset that never reads statement.text
// decides statements by their classification, and the kept decision is
// the one deciding anew gives, for every statement; a ruleset that reads
// the text decides each statement on its own, so two statements that
// classify the same but differ in text get different decisions.
func TestDecideByClassification(t *testing.T) {
	parse := func(blocks string) *ruleset.Ruleset { return policyRuleset(t, blocks) }
	statements := []ruleset.Statement{
		{Kind: "select", Tables: []string{"users"}},
		{Kind: "select", Tables: []string{"users"}, HasWhere: true},
		{Kind: "select", Tables: []string{"users"}, HasLimit: true},
		{Kind: "delete", Tables: []string{"users"}},
		{Kind: "delete", Tables: []string{"users"}, HasWhere: true},
		{Kind: "select", Tables: []string{"users", "orders"}},
		{Kind: "select", Tables: []string{"usersorders"}},
		{Kind: "select", Functions: []string{"pg_read_file"}, Flags: []string{"dangerous_function"}},
		{Kind: "select", Functions: []string{"pg_read_file", "dangerous_function"}},
		{Kind: "drop", Tables: []string{"users"}},
	}
	byClass := parse(`
  deny "unbounded-delete" {
    when = statement.kind == "delete" && !statement.has_where
  }
  deny "dangerous" {
    when = contains(statement.flags, "dangerous_function")
  }
  deny "drops" {
    when = statement.kind == "drop"
  }
  mask "orders" {
    when   = contains(statement.tables, "orders")
    detect = ["email"]
  }
  hold "big" {
    when      = statement.kind == "select" && !statement.has_limit && result.rows > 100
    approvers = ["dba"]
  }
`)
	m := byClass.Match(flow(ruleset.LevelOIDC, "refs/heads/main"))
	if !m.ByClassification() {
		t.Fatal("a ruleset that never reads statement.text is not decided by classification")
	}
	s := NewSession(context.Background(), m, nil, 0, hclog.NewNullLogger())
	for round := range 3 {
		for i, st := range statements {
			st.Text = "statement " + string(rune('a'+round)) + string(rune('0'+i))
			c := &Command{Text: st.Text, Statement: st}
			got := s.Decide(c)
			want := m.Decide(&c.Statement, ruleset.Result{})
			if got.Decision.Action != want.Action || got.Decision.Rule.ID != want.Rule.ID || got.Decision.AwaitResult != want.AwaitResult {
				t.Fatalf("round %d, %+v: kept %s by %s, deciding anew gives %s by %s",
					round, st, got.Decision.Action, got.Decision.Rule.ID, want.Action, want.Rule.ID)
			}
			if got.Decision.AwaitResult {
				for _, rows := range []int64{1, 100, 101, 5} {
					gr := s.DecideResult(c, rows, rows*10)
					wr := m.Decide(&c.Statement, ruleset.Result{Known: true, Rows: rows, Bytes: rows * 10})
					if gr.Decision.Action != wr.Action || gr.Decision.Rule.ID != wr.Rule.ID {
						t.Fatalf("round %d, %+v at %d rows: kept %s by %s, deciding anew gives %s by %s",
							round, st, rows, gr.Decision.Action, gr.Decision.Rule.ID, wr.Action, wr.Rule.ID)
					}
				}
			}
		}
	}

	for _, when := range []string{
		`regex("secret", statement.text)`,
		`regex("secret", statement["text"])`,
		`length([for k, v in statement : v if k == "text" && v == "SELECT secret FROM users"]) > 0`,
	} {
		m := parse("  deny \"text\" {\n    when = " + when + "\n  }\n").Match(flow(ruleset.LevelOIDC, "refs/heads/main"))
		if m.ByClassification() {
			t.Errorf("when = %s reads the statement's text, yet ByClassification is true", when)
			continue
		}
		s := NewSession(context.Background(), m, nil, 0, hclog.NewNullLogger())
		st := ruleset.Statement{Kind: "select", Tables: []string{"users"}}
		plain, secret := st, st
		plain.Text, secret.Text = "SELECT name FROM users", "SELECT secret FROM users"
		if v := s.Decide(&Command{Text: plain.Text, Statement: plain}); v.Action != ruleset.Allow {
			t.Errorf("when = %s: %q got %s, want allow", when, plain.Text, v.Action)
		}
		if v := s.Decide(&Command{Text: secret.Text, Statement: secret}); v.Action != ruleset.Deny {
			t.Errorf("when = %s: %q, classified like an allowed statement, got %s, want deny", when, secret.Text, v.Action)
		}
	}
}
