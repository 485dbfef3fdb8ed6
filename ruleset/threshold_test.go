package ruleset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// thresholdFlow is a flow to the test target "db".
var thresholdFlow = Flow{Identity: Identity{Level: LevelOIDC, Claims: map[string]string{"team": "payments"}},
	Target: Endpoint{Name: "db", Protocol: "postgres", Addr: netip.MustParseAddrPort("10.0.0.5:5432")}}

// thresholdRules is a ruleset whose one policy has the given blocks.
func thresholdRules(t *testing.T, blocks string) *Ruleset {
	t.Helper()
	return mustParse(t, map[string]string{"t.hcl": testTargets + `
policy "p" {
  targets = ["db"]
` + blocks + `
}`})
}

// TestNextResultCheckBounds: the bounds a decoder gets for comparisons
// with constants, and per-row checking for every other use of result.
func TestNextResultCheckBounds(t *testing.T) {
	const never = math.MaxInt64
	cases := []struct {
		name         string
		when         string
		rows, bytes  int64 // the counts decided at
		wantRows     int64
		wantBytes    int64
		wantPerRow   bool
		wantNoResult bool
	}{
		{name: "rows over", when: `result.rows > 10000`, rows: 1, bytes: 40, wantRows: 10001, wantBytes: never},
		{name: "rows over, reached", when: `result.rows > 10000`, rows: 10001, bytes: 40, wantRows: never, wantBytes: never},
		{name: "rows at least", when: `result.rows >= 10000`, rows: 1, bytes: 40, wantRows: 10000, wantBytes: never},
		{name: "rows equal", when: `result.rows == 50`, rows: 50, bytes: 40, wantRows: 51, wantBytes: never},
		{name: "reversed", when: `10000 < result.rows`, rows: 1, bytes: 40, wantRows: 10001, wantBytes: never},
		{name: "fraction", when: `result.rows > 10.5`, rows: 1, bytes: 40, wantRows: 11, wantBytes: never},
		{name: "index form and folded constant", when: `result["rows"] > (2 * 500)`, rows: 1, bytes: 1, wantRows: 1001, wantBytes: never},
		{name: "bytes", when: `result.bytes > 1048576`, rows: 7, bytes: 5000, wantRows: never, wantBytes: 1048577},
		{name: "both", when: `statement.kind == "copy_out" || result.rows > 1000 && result.bytes <= 64`, rows: 1, bytes: 70, wantRows: 1001, wantBytes: never},
		{name: "negative", when: `result.rows > -1`, rows: 1, bytes: 1, wantRows: never, wantBytes: never},
		{name: "arithmetic falls back", when: `result.bytes / result.rows > 50`, rows: 3, bytes: 90, wantPerRow: true},
		{name: "scaled counter falls back", when: `result.rows * 2 > 1000`, rows: 3, bytes: 90, wantPerRow: true},
		{name: "compared with a variable falls back", when: `result.rows > process.uid`, rows: 3, bytes: 90, wantPerRow: true},
		{name: "template falls back", when: `"${result.rows}" == "777"`, rows: 3, bytes: 90, wantPerRow: true},
		{name: "one bounded and one not falls back", when: `result.rows > 10 || result.bytes - 1 > 10`, rows: 3, bytes: 90, wantPerRow: true},
		{name: "no result rule", when: `statement.kind == "select"`, rows: 3, bytes: 90, wantNoResult: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs := thresholdRules(t, fmt.Sprintf("  hold \"h\" {\n    when = %s\n    approvers = [\"group:x\"]\n  }", c.when))
			m := rs.Match(thresholdFlow)
			gotRows, gotBytes := m.NextResultCheck(c.rows, c.bytes)
			switch {
			case c.wantPerRow:
				if gotRows != c.rows+1 || gotBytes != c.bytes+1 {
					t.Errorf("NextResultCheck(%d, %d) = %d, %d; want every row (%d, %d)", c.rows, c.bytes, gotRows, gotBytes, c.rows+1, c.bytes+1)
				}
			case c.wantNoResult:
				if gotRows != never || gotBytes != never {
					t.Errorf("NextResultCheck(%d, %d) = %d, %d; want never", c.rows, c.bytes, gotRows, gotBytes)
				}
			default:
				if gotRows != c.wantRows || gotBytes != c.wantBytes {
					t.Errorf("NextResultCheck(%d, %d) = %d, %d; want %d, %d", c.rows, c.bytes, gotRows, gotBytes, c.wantRows, c.wantBytes)
				}
			}
		})
	}
}

// TestNextResultCheckExact streams results row by row and requires that
// deciding only at the bounds NextResultCheck gives yields, at every row,
// the decision made when every row is decided: the same action by the
// same rule, so a hold on result.rows > N still stops row N+1. It also
// requires that the bounded conditions are decided far less often.
func TestNextResultCheckExact(t *testing.T) {
	cases := []struct {
		name    string
		blocks  string
		bounded bool // expect few decisions
	}{
		{"hold over rows", `hold "h" {
    when = result.rows > 1000
    approvers = ["g"]
  }`, true},
		{"deny at rows, hold under rows", `deny "d" {
    when = result.rows >= 1500
  }
  hold "h" {
    when = result.rows < 300 && statement.kind == "select"
    approvers = ["g"]
  }`, true},
		{"equal and not equal", `hold "h" {
    when = result.rows == 777 || result.rows != 778 && result.rows > 1990
    approvers = ["g"]
  }`, true},
		{"fractions and folded constants", `deny "d" {
    when = result.rows > 600.5 && result["rows"] <= (2 * 400)
  }`, true},
		{"bytes", `hold "h" {
    when = result.bytes > 123456
    approvers = ["g"]
  }
  mask "m" {
    when = result.bytes >= 5000 && result.bytes < 9000
    detect = ["email"]
  }`, true},
		{"conditional", `hold "h" {
    when = result.rows > 100 ? result.bytes > 90000 : result.bytes > 9000
    approvers = ["g"]
  }`, true},
		{"mixed with statement", `hold "h" {
    when = statement.kind == "copy_out" || (statement.kind == "select" && !statement.has_limit && result.rows > 1000)
    approvers = ["g"]
  }`, true},
		{"arithmetic: every row", `hold "h" {
    when = result.bytes / result.rows > 120
    approvers = ["g"]
  }`, false},
		{"one bounded rule, one not: every row", `deny "d" {
    when = result.rows > 1000
  }
  hold "h" {
    when = result.rows % 700 == 699
    approvers = ["g"]
  }`, false},
	}
	st := &Statement{Kind: "select", Tables: []string{"users"}}
	for _, c := range cases {
		t.Run(c.name+"/span", func(t *testing.T) {
			// A decision kept over the span ResultSpan gives must be the
			// decision at every count inside it.
			rs := thresholdRules(t, c.blocks)
			m := rs.Match(thresholdFlow)
			rng := rand.New(rand.NewPCG(3, 4))
			for range 2000 {
				rows, bytes := 1+rng.Int64N(2500), rng.Int64N(200000)
				kept := m.Decide(st, Result{Known: true, Rows: rows, Bytes: bytes})
				rf, rt, bf, bt := m.ResultSpan(rows, bytes)
				if rows < rf || rows >= rt || bytes < bf || bytes >= bt {
					t.Fatalf("ResultSpan(%d, %d) = [%d, %d) x [%d, %d): the anchor is outside", rows, bytes, rf, rt, bf, bt)
				}
				if !c.bounded && (rt-rf != 1 || bt-bf != 1) {
					t.Fatalf("ResultSpan(%d, %d) = [%d, %d) x [%d, %d); want the single point", rows, bytes, rf, rt, bf, bt)
				}
				for range 20 {
					r := max(rf, 1) + rng.Int64N(min(rt, 3000)-max(rf, 1)+1)
					b := max(bf, 0) + rng.Int64N(min(bt, 300000)-max(bf, 0)+1)
					if r >= rt || b >= bt {
						continue
					}
					got := m.Decide(st, Result{Known: true, Rows: r, Bytes: b})
					if got.Action != kept.Action || got.Rule.ID != kept.Rule.ID || len(got.Masks) != len(kept.Masks) {
						t.Fatalf("decided at (%d, %d): %s by %s; at (%d, %d) inside its span: %s by %s",
							rows, bytes, kept.Action, kept.Rule.ID, r, b, got.Action, got.Rule.ID)
					}
				}
			}
		})
		t.Run(c.name, func(t *testing.T) {
			rs := thresholdRules(t, c.blocks)
			m := rs.Match(thresholdFlow)
			if d := m.Decide(st, Result{}); !d.AwaitResult {
				t.Fatalf("decision before the result = %s by %s, want one awaiting the result", d.Action, d.Rule.ID)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			var rows, bytes, nextRows, nextBytes int64
			var last Decision
			decisions := 0
			for rows < 2500 {
				rows++
				bytes += 1 + rng.Int64N(150)
				want := m.Decide(st, Result{Known: true, Rows: rows, Bytes: bytes})
				if rows == 1 || rows >= nextRows || bytes >= nextBytes {
					last = m.Decide(st, Result{Known: true, Rows: rows, Bytes: bytes})
					nextRows, nextBytes = m.NextResultCheck(rows, bytes)
					decisions++
				}
				if last.Action != want.Action || last.Rule.ID != want.Rule.ID || len(last.Masks) != len(want.Masks) {
					t.Fatalf("row %d (%d bytes): bounded checks give %s by %s, every row gives %s by %s",
						rows, bytes, last.Action, last.Rule.ID, want.Action, want.Rule.ID)
				}
			}
			if c.bounded && decisions > 12 {
				t.Errorf("decided %d times over 2500 rows, want a handful", decisions)
			}
			if !c.bounded && decisions != 2500 {
				t.Errorf("decided %d times over 2500 rows, want every row", decisions)
			}
		})
	}
}
