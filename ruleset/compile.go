package ruleset

import (
	"errors"
	"math"
	"net/netip"
	"regexp"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// This file compiles the common subset of when expressions (literals,
// variables, comparisons, logic, arithmetic, conditionals and the rule
// functions) into Go closures over an Input, so evaluation builds no cty
// values and allocates almost nothing. Anything outside the subset (for
// expressions, templates with interpolation, splats, other functions)
// keeps HCL's own evaluator; both paths agree, which a test checks on
// every example ruleset. Compilation runs after the HCL type check, so
// the subset never sees an ill-typed expression.

type vkind uint8

const (
	kBool vkind = iota + 1
	kNum
	kStr
	kList // list of strings
)

// val is a compiled expression's value. unknown is only ever set for
// result.* before the result is known, and what is derived from it.
type val struct {
	k       vkind
	unknown bool
	b       bool
	n       float64
	s       string
	l       []string
}

var unknownVal = val{unknown: true}

// env is what compiled expressions read.
type env struct {
	flow     *Flow
	addr, ip string
	st       *Statement
	res      Result
}

type cfn func(*env) (val, error)

var errDivZero = errors.New("division by zero")

// compileFast compiles e, reporting false when e is outside the subset.
func (rs *Ruleset) compileFast(e hcl.Expression) (cfn, vkind, bool) {
	if len(e.Variables()) == 0 {
		// Constant: fold it with HCL itself.
		v, d := e.Value(&hcl.EvalContext{Functions: rs.funcs})
		if d.HasErrors() {
			return nil, 0, false
		}
		c, ok := ctyToVal(v)
		if !ok {
			return nil, 0, false
		}
		return func(*env) (val, error) { return c, nil }, c.k, true
	}
	switch e := e.(type) {
	case *hclsyntax.ParenthesesExpr:
		return rs.compileFast(e.Expression)
	case *hclsyntax.TemplateWrapExpr:
		return rs.compileFast(e.Wrapped)
	case *hclsyntax.ScopeTraversalExpr:
		return compileVar(e.Traversal)
	case *hclsyntax.UnaryOpExpr:
		f, k, ok := rs.compileFast(e.Val)
		if !ok {
			return nil, 0, false
		}
		switch {
		case e.Op == hclsyntax.OpLogicalNot && k == kBool:
			return func(en *env) (val, error) {
				v, err := f(en)
				if err != nil || v.unknown {
					return v, err
				}
				return val{k: kBool, b: !v.b}, nil
			}, kBool, true
		case e.Op == hclsyntax.OpNegate && k == kNum:
			return func(en *env) (val, error) {
				v, err := f(en)
				if err != nil || v.unknown {
					return v, err
				}
				return val{k: kNum, n: -v.n}, nil
			}, kNum, true
		}
		return nil, 0, false
	case *hclsyntax.BinaryOpExpr:
		return rs.compileBinary(e)
	case *hclsyntax.ConditionalExpr:
		c, ck, ok1 := rs.compileFast(e.Condition)
		t, tk, ok2 := rs.compileFast(e.TrueResult)
		f, fk, ok3 := rs.compileFast(e.FalseResult)
		if !ok1 || !ok2 || !ok3 || ck != kBool || tk != fk {
			return nil, 0, false
		}
		return func(en *env) (val, error) {
			v, err := c(en)
			if err != nil || v.unknown {
				return unknownVal, err
			}
			if v.b {
				return t(en)
			}
			return f(en)
		}, tk, true
	case *hclsyntax.TupleConsExpr:
		elems := make([]cfn, len(e.Exprs))
		for i, x := range e.Exprs {
			f, k, ok := rs.compileFast(x)
			if !ok || k != kStr {
				return nil, 0, false
			}
			elems[i] = f
		}
		return func(en *env) (val, error) {
			l := make([]string, len(elems))
			for i, f := range elems {
				v, err := f(en)
				if err != nil || v.unknown {
					return unknownVal, err
				}
				l[i] = v.s
			}
			return val{k: kList, l: l}, nil
		}, kList, true
	case *hclsyntax.FunctionCallExpr:
		return rs.compileCall(e)
	}
	return nil, 0, false
}

func ctyToVal(v cty.Value) (val, bool) {
	if !v.IsWhollyKnown() || v.IsNull() {
		return val{}, false
	}
	ty := v.Type()
	switch {
	case ty == cty.Bool:
		return val{k: kBool, b: v.True()}, true
	case ty == cty.Number:
		f, _ := v.AsBigFloat().Float64()
		return val{k: kNum, n: f}, true
	case ty == cty.String:
		return val{k: kStr, s: v.AsString()}, true
	case ty.IsListType() || ty.IsTupleType() || ty.IsSetType():
		l := make([]string, 0, v.LengthInt())
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() || e.Type() != cty.String {
				return val{}, false
			}
			l = append(l, e.AsString())
		}
		return val{k: kList, l: l}, true
	}
	return val{}, false
}

func compileVar(tr hcl.Traversal) (cfn, vkind, bool) {
	if len(tr) != 2 {
		return nil, 0, false
	}
	var name string
	switch step := tr[1].(type) {
	case hcl.TraverseAttr:
		name = step.Name
	case hcl.TraverseIndex:
		if step.Key.Type() != cty.String || !step.Key.IsKnown() || step.Key.IsNull() {
			return nil, 0, false
		}
		name = step.Key.AsString()
	default:
		return nil, 0, false
	}
	str := func(get func(*env) string) (cfn, vkind, bool) {
		return func(en *env) (val, error) { return val{k: kStr, s: get(en)}, nil }, kStr, true
	}
	num := func(get func(*env) int64) (cfn, vkind, bool) {
		return func(en *env) (val, error) { return val{k: kNum, n: float64(get(en))}, nil }, kNum, true
	}
	if f := facetByRoot[tr.RootName()]; f != nil {
		// sql.* and its older name statement.* compile to the same getter.
		if a := f.attr(name); a != nil {
			return a.get, a.kind, true
		}
		return nil, 0, false
	}
	switch tr.RootName() + "." + name {
	case "identity." + identityLevelAttr:
		return str(func(en *env) string {
			if en.flow.Identity.Level == "" {
				return LevelNone
			}
			return en.flow.Identity.Level
		})
	case "process.pid":
		return num(func(en *env) int64 { return en.flow.Process.PID })
	case "process.uid":
		return num(func(en *env) int64 { return en.flow.Process.UID })
	case "process.gid":
		return num(func(en *env) int64 { return en.flow.Process.GID })
	case "process.exe":
		return str(func(en *env) string { return en.flow.Process.Exe })
	case "process.comm":
		return str(func(en *env) string { return en.flow.Process.Comm })
	case "process.cgroup":
		return str(func(en *env) string { return en.flow.Process.Cgroup })
	case "process.unit":
		return str(func(en *env) string { return en.flow.Process.Unit })
	case "target.name":
		return str(func(en *env) string { return en.flow.Target.Name })
	case "target.protocol":
		return str(func(en *env) string { return en.flow.Target.Protocol })
	case "target.address":
		return str(func(en *env) string { return en.addr })
	case "target.ip":
		return str(func(en *env) string { return en.ip })
	case "target.port":
		return num(func(en *env) int64 { return int64(en.flow.Target.Addr.Port()) })
	case "result.rows", "result.bytes":
		rows := name == "rows"
		return func(en *env) (val, error) {
			if !en.res.Known {
				return unknownVal, nil
			}
			if rows {
				return val{k: kNum, n: float64(en.res.Rows)}, nil
			}
			return val{k: kNum, n: float64(en.res.Bytes)}, nil
		}, kNum, true
	}
	if tr.RootName() == varIdentity {
		return str(func(en *env) string { return en.flow.Identity.Claims[name] })
	}
	return nil, 0, false
}

func (rs *Ruleset) compileBinary(e *hclsyntax.BinaryOpExpr) (cfn, vkind, bool) {
	l, lk, ok1 := rs.compileFast(e.LHS)
	r, rk, ok2 := rs.compileFast(e.RHS)
	if !ok1 || !ok2 {
		return nil, 0, false
	}
	switch e.Op {
	case hclsyntax.OpLogicalAnd, hclsyntax.OpLogicalOr:
		if lk != kBool || rk != kBool {
			return nil, 0, false
		}
		// short is the value that decides alone: false for &&, true for ||.
		// As in HCL, an operand that fails counts as unknown: the other
		// operand can still decide, and an error only surfaces when it
		// does not.
		short := e.Op == hclsyntax.OpLogicalOr
		return func(en *env) (val, error) {
			a, ea := l(en)
			if ea == nil && !a.unknown && a.b == short {
				return a, nil
			}
			b, eb := r(en)
			aUnk, bUnk := ea != nil || a.unknown, eb != nil || b.unknown
			switch {
			case aUnk && bUnk:
				if ea == nil {
					return unknownVal, nil
				}
				return unknownVal, ea
			case !bUnk && b.b == short:
				return b, nil
			case aUnk:
				return unknownVal, ea
			case bUnk:
				return unknownVal, eb
			}
			return val{k: kBool, b: !short}, nil
		}, kBool, true
	case hclsyntax.OpEqual, hclsyntax.OpNotEqual:
		if lk == kList || rk == kList {
			// HCL tells list from tuple types here (statement.tables == []
			// is always false); leave such comparisons to it.
			return nil, 0, false
		}
		neg := e.Op == hclsyntax.OpNotEqual
		same := lk == rk
		return func(en *env) (val, error) {
			a, err := l(en)
			if err != nil {
				return a, err
			}
			b, err := r(en)
			if err != nil {
				return b, err
			}
			if a.unknown || b.unknown {
				return unknownVal, nil
			}
			return val{k: kBool, b: (same && equal(a, b)) != neg}, nil
		}, kBool, true
	}
	if lk != kNum || rk != kNum {
		return nil, 0, false
	}
	var op func(a, b float64) (val, error)
	switch e.Op {
	case hclsyntax.OpGreaterThan:
		op = func(a, b float64) (val, error) { return val{k: kBool, b: a > b}, nil }
	case hclsyntax.OpGreaterThanOrEqual:
		op = func(a, b float64) (val, error) { return val{k: kBool, b: a >= b}, nil }
	case hclsyntax.OpLessThan:
		op = func(a, b float64) (val, error) { return val{k: kBool, b: a < b}, nil }
	case hclsyntax.OpLessThanOrEqual:
		op = func(a, b float64) (val, error) { return val{k: kBool, b: a <= b}, nil }
	case hclsyntax.OpAdd:
		op = func(a, b float64) (val, error) { return val{k: kNum, n: a + b}, nil }
	case hclsyntax.OpSubtract:
		op = func(a, b float64) (val, error) { return val{k: kNum, n: a - b}, nil }
	case hclsyntax.OpMultiply:
		op = func(a, b float64) (val, error) { return val{k: kNum, n: a * b}, nil }
	case hclsyntax.OpDivide:
		op = func(a, b float64) (val, error) {
			if b == 0 {
				return val{}, errDivZero
			}
			return val{k: kNum, n: a / b}, nil
		}
	case hclsyntax.OpModulo:
		op = func(a, b float64) (val, error) {
			if b == 0 {
				return val{}, errDivZero
			}
			return val{k: kNum, n: math.Mod(a, b)}, nil
		}
	default:
		return nil, 0, false
	}
	k := kNum
	switch e.Op {
	case hclsyntax.OpGreaterThan, hclsyntax.OpGreaterThanOrEqual, hclsyntax.OpLessThan, hclsyntax.OpLessThanOrEqual:
		k = kBool
	}
	return func(en *env) (val, error) {
		a, err := l(en)
		if err != nil {
			return a, err
		}
		b, err := r(en)
		if err != nil {
			return b, err
		}
		if a.unknown || b.unknown {
			return unknownVal, nil
		}
		return op(a.n, b.n)
	}, k, true
}

func equal(a, b val) bool {
	switch a.k {
	case kBool:
		return a.b == b.b
	case kNum:
		return a.n == b.n
	case kStr:
		return a.s == b.s
	}
	return false
}

// constString returns e's value when it is a constant string.
func constString(e hclsyntax.Expression) (string, bool) {
	if len(e.Variables()) > 0 {
		return "", false
	}
	v, d := e.Value(nil)
	if d.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}

func (rs *Ruleset) compileCall(e *hclsyntax.FunctionCallExpr) (cfn, vkind, bool) {
	if e.ExpandFinal {
		return nil, 0, false
	}
	args := make([]cfn, len(e.Args))
	kinds := make([]vkind, len(e.Args))
	for i, a := range e.Args {
		f, k, ok := rs.compileFast(a)
		if !ok {
			return nil, 0, false
		}
		args[i], kinds[i] = f, k
	}
	want := func(ks ...vkind) bool {
		if len(ks) != len(kinds) {
			return false
		}
		for i := range ks {
			if ks[i] != kinds[i] {
				return false
			}
		}
		return true
	}
	// call evaluates the arguments; any unknown makes the result unknown.
	call := func(k vkind, impl func(a []val) (val, error)) (cfn, vkind, bool) {
		n := len(args)
		return func(en *env) (val, error) {
			var buf [2]val
			a := buf[:0]
			if n > len(buf) {
				a = make([]val, 0, n)
			}
			for _, f := range args {
				v, err := f(en)
				if err != nil {
					return v, err
				}
				if v.unknown {
					return unknownVal, nil
				}
				a = append(a, v)
			}
			return impl(a)
		}, k, true
	}
	boolean := func(b bool) (val, error) { return val{k: kBool, b: b}, nil }
	switch e.Name {
	case "glob":
		if want(kStr, kStr) {
			return call(kBool, func(a []val) (val, error) { return boolean(globMatch(a[0].s, a[1].s)) })
		}
	case "regex":
		if !want(kStr, kStr) {
			break
		}
		if p, ok := constString(e.Args[0]); ok {
			if c := rs.regexes[p]; c != nil {
				re := c.re
				return call(kBool, func(a []val) (val, error) { return boolean(re.MatchString(a[1].s)) })
			}
		}
		return call(kBool, func(a []val) (val, error) {
			re, err := regexp.Compile(a[0].s)
			if err != nil {
				return val{}, err
			}
			return boolean(re.MatchString(a[1].s))
		})
	case "cidr_contains":
		if !want(kStr, kStr) {
			break
		}
		var fixed netip.Prefix
		if p, ok := constString(e.Args[0]); ok {
			fixed, _ = netip.ParsePrefix(p)
		}
		return call(kBool, func(a []val) (val, error) {
			p := fixed
			if !p.IsValid() {
				var err error
				if p, err = netip.ParsePrefix(a[0].s); err != nil {
					return val{}, err
				}
			}
			ip, err := netip.ParseAddr(a[1].s)
			if err != nil {
				return boolean(false)
			}
			return boolean(p.Contains(ip.Unmap()))
		})
	case "any_glob", "all_glob":
		if !want(kList, kList) {
			break
		}
		all := e.Name == "all_glob"
		return call(kBool, func(a []val) (val, error) {
			for _, s := range a[1].l {
				m := false
				for _, p := range a[0].l {
					if globMatch(p, s) {
						m = true
						break
					}
				}
				if m != all {
					return boolean(m)
				}
			}
			return boolean(all)
		})
	case "contains":
		if want(kList, kStr) {
			return call(kBool, func(a []val) (val, error) {
				for _, s := range a[0].l {
					if s == a[1].s {
						return boolean(true)
					}
				}
				return boolean(false)
			})
		}
	case "length":
		if want(kList) {
			return call(kNum, func(a []val) (val, error) { return val{k: kNum, n: float64(len(a[0].l))}, nil })
		}
	case "lower", "upper":
		if want(kStr) {
			up := e.Name == "upper"
			return call(kStr, func(a []val) (val, error) {
				if up {
					return val{k: kStr, s: strings.ToUpper(a[0].s)}, nil
				}
				return val{k: kStr, s: strings.ToLower(a[0].s)}, nil
			})
		}
	}
	return nil, 0, false
}
