package ruleset

import (
	"fmt"
	"strings"
	"testing"
)

// benchRuleset has 100 policies on one target, each with a flow condition
// that every other policy meets and a deny, a hold and a mask block.
func benchRuleset(b testing.TB) *Ruleset { return benchRulesetAs(b, "statement") }

// benchRulesetAs is benchRuleset with its rules reading the SQL facet
// under the name root: statement or sql.
func benchRulesetAs(b testing.TB, root string) *Ruleset {
	var sb strings.Builder
	sb.WriteString(testTargets)
	for i := range 100 {
		team := "payments"
		if i%2 == 1 {
			team = fmt.Sprintf("team-%d", i)
		}
		fmt.Fprintf(&sb, `
policy "p%d" {
  targets = ["db"]
  when    = identity.repository == "acme/api" && identity.team == %q
  deny "ddl" {
    when = contains(["drop", "truncate", "alter"], statement.kind) || any_glob(["secret_%d.*"], statement.tables)
  }
  hold "export" {
    when      = statement.kind == "copy_out" || (statement.kind == "select" && !statement.has_limit && result.rows > 10000)
    approvers = ["group:security"]
  }
  mask "pii" {
    when    = contains(statement.tables, "users_%d")
    columns = ["users.email"]
  }
}
`, i, team, i, i)
	}
	return mustParse(b, map[string]string{"bench.hcl": strings.ReplaceAll(sb.String(), "statement.", root+".")})
}

func benchInput() *Input {
	in := input("acme/api", "select", "orders", "public.customers", "line_items")
	in.Identity.Claims["team"] = "payments"
	in.Statement.HasWhere = true
	in.Statement.Text = "SELECT ... FROM orders JOIN public.customers ... JOIN line_items ..."
	return in
}

// BenchmarkEvaluate100Policies evaluates one statement against 100
// policies on its target: Evaluate matches the flow and decides; Decide
// reuses a Match as a connection would.
func BenchmarkEvaluate100Policies(b *testing.B) {
	rs := benchRuleset(b)
	in := benchInput()
	if d := rs.Evaluate(in); d.Action != Allow || !d.AwaitResult {
		b.Fatalf("benchmark input decided %s by %s (await %t)", d.Action, d.Rule.ID, d.AwaitResult)
	}
	b.Run("Evaluate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rs.Evaluate(in)
		}
	})
	b.Run("Decide", func(b *testing.B) {
		m := rs.Match(in.Flow)
		b.ReportAllocs()
		for b.Loop() {
			m.Decide(&in.Statement, in.Result)
		}
	})
	b.Run("DecideWithResult", func(b *testing.B) {
		m := rs.Match(in.Flow)
		res := Result{Known: true, Rows: 20}
		b.ReportAllocs()
		for b.Loop() {
			m.Decide(&in.Statement, res)
		}
	})
}

// BenchmarkFacetNames decides the benchmark statement with the rules
// written with statement.* and with sql.*: both names compile to the
// same closures, so the numbers match.
func BenchmarkFacetNames(b *testing.B) {
	in := benchInput()
	for _, root := range []string{"statement", "sql"} {
		rs := benchRulesetAs(b, root)
		b.Run(root, func(b *testing.B) {
			m := rs.Match(in.Flow)
			b.ReportAllocs()
			for b.Loop() {
				m.Decide(&in.Statement, in.Result)
			}
		})
	}
}
