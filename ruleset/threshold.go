package ruleset

import (
	"math"
	"math/big"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// This file finds, at compile time, the row and byte counts at which a
// condition on result.* can change its truth. A condition in which every
// reference to result.rows or result.bytes is a comparison with a constant
// number (result.rows > 10000, 1000000 <= result.bytes) is a function of
// the comparisons' outcomes, and each outcome changes only where the
// counter crosses its constant: between two such points every other input
// is fixed (the flow and the statement are), so the decision is too. A
// decoder can then re-decide a result only when a counter reaches the next
// point instead of on every row. Any other use of result (arithmetic,
// result.rows compared with a variable, the whole result object) has no
// such points, and the result is re-decided on every row.

// resultPoints are the counts at which a result-stage condition may change.
type resultPoints struct {
	// perRow is set when the condition uses result in a way this
	// analysis cannot bound: re-decide on every row.
	perRow bool
	// rows and bytes are sorted, without duplicates: the truth may differ
	// between count p-1 and count p only for p in the list.
	rows, bytes []int64
}

// analyseResult returns the change points of e, a when expression that
// passed the type check. funcs are the ruleset's functions, for folding
// constant operands such as -5 or 1024 * 1024.
func analyseResult(e hcl.Expression, funcs *hcl.EvalContext) resultPoints {
	node, ok := e.(hclsyntax.Node)
	if !ok {
		return resultPoints{perRow: true}
	}
	var pts resultPoints
	bounded := map[*hclsyntax.ScopeTraversalExpr]bool{}
	refs := 0
	hclsyntax.VisitAll(node, func(n hclsyntax.Node) hcl.Diagnostics {
		switch n := n.(type) {
		case *hclsyntax.ScopeTraversalExpr:
			if n.Traversal.RootName() == varResult {
				refs++
			}
		case *hclsyntax.BinaryOpExpr:
			switch n.Op {
			case hclsyntax.OpGreaterThan, hclsyntax.OpGreaterThanOrEqual, hclsyntax.OpLessThan,
				hclsyntax.OpLessThanOrEqual, hclsyntax.OpEqual, hclsyntax.OpNotEqual:
			default:
				return nil
			}
			for i, side := range [2][2]hclsyntax.Expression{{n.LHS, n.RHS}, {n.RHS, n.LHS}} {
				tr, counter := resultCounter(side[0])
				if tr == nil {
					continue
				}
				limit, exact, ok := constNumber(side[1], funcs)
				if !ok {
					continue
				}
				bounded[tr] = true
				op := n.Op
				if i == 1 {
					op = flip(op) // 1000 < result.rows is result.rows > 1000
				}
				if counter == "rows" {
					pts.rows = appendChangePoints(pts.rows, op, limit, exact)
				} else {
					pts.bytes = appendChangePoints(pts.bytes, op, limit, exact)
				}
			}
		}
		return nil
	})
	if len(bounded) != refs {
		return resultPoints{perRow: true}
	}
	slices.Sort(pts.rows)
	slices.Sort(pts.bytes)
	pts.rows, pts.bytes = slices.Compact(pts.rows), slices.Compact(pts.bytes)
	return pts
}

// resultCounter returns e as a reference to result.rows or result.bytes
// (through parentheses), and which one.
func resultCounter(e hclsyntax.Expression) (*hclsyntax.ScopeTraversalExpr, string) {
	for {
		p, ok := e.(*hclsyntax.ParenthesesExpr)
		if !ok {
			break
		}
		e = p.Expression
	}
	st, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok || len(st.Traversal) != 2 || st.Traversal.RootName() != varResult {
		return nil, ""
	}
	var name string
	switch step := st.Traversal[1].(type) {
	case hcl.TraverseAttr:
		name = step.Name
	case hcl.TraverseIndex:
		if step.Key.Type() != cty.String || !step.Key.IsKnown() || step.Key.IsNull() {
			return nil, ""
		}
		name = step.Key.AsString()
	}
	if name != "rows" && name != "bytes" {
		return nil, ""
	}
	return st, name
}

// constNumber returns e's value when e uses no variables and is a finite
// number, and whether float64 holds it exactly.
func constNumber(e hclsyntax.Expression, funcs *hcl.EvalContext) (f float64, exact, ok bool) {
	if len(e.Variables()) > 0 {
		return 0, false, false
	}
	v, d := e.Value(funcs)
	if d.HasErrors() || !v.IsWhollyKnown() || v.IsNull() || v.Type() != cty.Number {
		return 0, false, false
	}
	f, acc := v.AsBigFloat().Float64()
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, false
	}
	return f, acc == big.Exact, true
}

// flip mirrors a comparison for swapped operands.
func flip(op *hclsyntax.Operation) *hclsyntax.Operation {
	switch op {
	case hclsyntax.OpGreaterThan:
		return hclsyntax.OpLessThan
	case hclsyntax.OpGreaterThanOrEqual:
		return hclsyntax.OpLessThanOrEqual
	case hclsyntax.OpLessThan:
		return hclsyntax.OpGreaterThan
	case hclsyntax.OpLessThanOrEqual:
		return hclsyntax.OpGreaterThanOrEqual
	}
	return op
}

// appendChangePoints adds the counts at which counter op limit, for an
// integer counter, can change: for an integer limit L, x > L and x <= L
// change at L+1, x >= L and x < L at L, x == L and x != L at both; a
// fractional limit changes every comparison at its ceiling. A limit
// float64 cannot hold exactly is compared in float64 by the compiled
// evaluator and exactly by HCL's, which differ by less than one below
// 2^53, so it gets the points on both sides of the rounded limit. Counts
// below 1 are left out: a result is always decided at its first row.
func appendChangePoints(pts []int64, op *hclsyntax.Operation, limit float64, exact bool) []int64 {
	lo, hi := math.Floor(limit), math.Ceil(limit)
	var cand []float64
	switch {
	case !exact:
		cand = []float64{lo, lo + 1, hi, hi + 1}
	case lo != hi:
		cand = []float64{hi}
	case op == hclsyntax.OpGreaterThan || op == hclsyntax.OpLessThanOrEqual:
		cand = []float64{limit + 1}
	case op == hclsyntax.OpGreaterThanOrEqual || op == hclsyntax.OpLessThan:
		cand = []float64{limit}
	default: // == and !=
		cand = []float64{limit, limit + 1}
	}
	const maxCount = float64(math.MaxInt64 / 2)
	for _, p := range cand {
		switch {
		case p < 1:
		case p >= maxCount:
			pts = append(pts, math.MaxInt64/2)
		default:
			pts = append(pts, int64(p))
		}
	}
	return pts
}

// next returns the first point above n, or math.MaxInt64.
func nextPoint(pts []int64, n int64) int64 {
	i, found := slices.BinarySearch(pts, n)
	if found {
		i++
	}
	if i < len(pts) {
		return pts[i]
	}
	return math.MaxInt64
}

// NextResultCheck says when a decision on this flow that awaited its
// result (Decision.AwaitResult) must be made again. Decided with rows and
// bytes as the result so far, the decision is the same for every later
// count below nextRows rows and nextBytes bytes; a decoder re-decides when
// either counter reaches its bound, and at the first row of a result.
// When a rule uses result.* other than by comparing result.rows or
// result.bytes with a constant number, the bounds are rows+1 and bytes+1:
// every row is decided. With no rule on result.*, both are math.MaxInt64.
func (m *Match) NextResultCheck(rows, bytes int64) (nextRows, nextBytes int64) {
	_, nextRows, _, nextBytes = m.ResultSpan(rows, bytes)
	return nextRows, nextBytes
}

// prevPoint is the last change point at or below n, or math.MinInt64.
func prevPoint(pts []int64, n int64) int64 {
	i, found := slices.BinarySearch(pts, n)
	if found {
		return pts[i]
	}
	if i > 0 {
		return pts[i-1]
	}
	return math.MinInt64
}

// ResultSpan says over which counts a decision that awaited its result,
// made with rows and bytes, stays the same: for every count r in
// [rowsFrom, rowsTo) and b in [bytesFrom, bytesTo) the flow and the
// statement get the same decision. A decoder can keep a statement's
// result decision across executions (a prepared statement run again)
// while the counts stay inside the span. When a rule uses result.* other
// than by comparing result.rows or result.bytes with a constant, the span
// is the single point (rows, bytes).
func (m *Match) ResultSpan(rows, bytes int64) (rowsFrom, rowsTo, bytesFrom, bytesTo int64) {
	rowsFrom, bytesFrom = math.MinInt64, math.MinInt64
	rowsTo, bytesTo = math.MaxInt64, math.MaxInt64
	for _, p := range m.policies {
		for _, rules := range [...][]*Rule{p.deny, p.hold, p.allow, p.mask} {
			for _, r := range rules {
				if r.when == nil || r.when.stage != stageResult {
					continue
				}
				pts := &r.when.result
				if pts.perRow {
					return rows, rows + 1, bytes, bytes + 1
				}
				rowsFrom = max(rowsFrom, prevPoint(pts.rows, rows))
				rowsTo = min(rowsTo, nextPoint(pts.rows, rows))
				bytesFrom = max(bytesFrom, prevPoint(pts.bytes, bytes))
				bytesTo = min(bytesTo, nextPoint(pts.bytes, bytes))
			}
		}
	}
	return rowsFrom, rowsTo, bytesFrom, bytesTo
}
