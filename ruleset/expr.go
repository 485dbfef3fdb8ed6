package ruleset

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// stage is when an expression can first be decided.
type stage uint8

const (
	stageFlow      stage = iota // identity, process, target: once per connection
	stageStatement              // statement.*: once per statement
	stageResult                 // result.*: once the result is (partly) known
)

// expr is a compiled when expression.
type expr struct {
	e     hcl.Expression
	stage stage
	fast  cfn // nil: evaluate with HCL
	// result is where a result-stage expression may change its truth as
	// rows arrive (see NextResultCheck).
	result resultPoints
}

// The variables expressions may use. identity is open: any attribute is
// a string claim ("" when the token lacks it), and identity.level is the
// identity level. The others are fixed objects. Beside these common
// variables are the protocol facets (facet.go): sql, with statement its
// older name, ssh and sftp, and k8s.
const (
	varIdentity  = "identity"
	varProcess   = "process"
	varTarget    = "target"
	varStatement = "statement"
	varResult    = "result"
)

// rootNames are every variable name, for suggestions; the facets add
// theirs (facet.go).
var rootNames = []string{varIdentity, varProcess, varTarget, varResult}

var (
	processType = cty.Object(map[string]cty.Type{
		"pid": cty.Number, "uid": cty.Number, "gid": cty.Number,
		"exe": cty.String, "comm": cty.String, "cgroup": cty.String, "unit": cty.String,
	})
	targetType = cty.Object(map[string]cty.Type{
		"name": cty.String, "protocol": cty.String, "address": cty.String, "ip": cty.String, "port": cty.Number,
	})
	resultType = cty.Object(map[string]cty.Type{"rows": cty.Number, "bytes": cty.Number})
)

// fixedTypes are the object types of the fixed variables; the facets add
// theirs, under every name (facet.go).
var fixedTypes = map[string]cty.Type{
	varProcess: processType, varTarget: targetType, varResult: resultType,
}

// identityLevelAttr is the reserved identity attribute holding the level.
const identityLevelAttr = "level"

// exprUse describes where a when expression sits, for its checks.
type exprUse struct {
	what       string // "policy", "deny block", ...
	allowStmt  bool   // the facets (sql.*, statement.*) and result.* are allowed
	allowAfter bool   // result.* is allowed
}

// checkVars checks the variables e refers to against the schema, records
// identity attributes in idAttrs and returns the expression's stage.
func checkVars(e hcl.Expression, use exprUse, idAttrs map[string]bool) (stage, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	st := stageFlow
	for _, tr := range e.Variables() {
		root := tr.RootName()
		rootRange := tr[0].SourceRange()
		f := facetByRoot[root]
		switch {
		case root == varIdentity || root == varProcess || root == varTarget:
		case f != nil && f.reserved != "":
			diags = append(diags, reservedFacet(f, tr, e))
			continue
		case f != nil || root == varResult:
			if !use.allowStmt {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Statement variables not allowed here",
					Detail: fmt.Sprintf("A %s's when is decided once per connection, before any statement runs, so it can use identity, process and target but not %s. Move the condition into a deny, hold, mask or allow block.",
						use.what, root),
					Subject:    rootRange.Ptr(),
					Expression: e,
				})
				continue
			}
			if root == varResult && !use.allowAfter {
				diags = append(diags, &hcl.Diagnostic{
					Severity:   hcl.DiagError,
					Summary:    "Result variables not allowed here",
					Detail:     fmt.Sprintf("A %s is decided before the statement runs, so it cannot use result. Use a hold, deny or mask block to act on results.", use.what),
					Subject:    rootRange.Ptr(),
					Expression: e,
				})
				continue
			}
			if root == varResult {
				st = stageResult
			} else if st < stageStatement {
				st = stageStatement
			}
		default:
			detail := fmt.Sprintf("There is no variable named %q. The variables are %s.", root, variablesSentence())
			if s := suggest(root, rootNames); s != "" {
				detail = fmt.Sprintf("There is no variable named %q. Did you mean %q?", root, s)
			}
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError, Summary: "Unknown variable", Detail: detail,
				Subject: rootRange.Ptr(), Expression: e,
			})
			continue
		}
		if len(tr) < 2 {
			continue
		}
		var name string
		switch step := tr[1].(type) {
		case hcl.TraverseAttr:
			name = step.Name
		case hcl.TraverseIndex:
			if step.Key.Type() != cty.String || !step.Key.IsKnown() || step.Key.IsNull() {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError, Summary: "Invalid index",
					Detail:  fmt.Sprintf("%s is an object: index it with a quoted attribute name, or write %s.name.", root, root),
					Subject: tr[1].SourceRange().Ptr(), Expression: e,
				})
				continue
			}
			name = step.Key.AsString()
		default:
			continue
		}
		if root == varIdentity {
			if name != identityLevelAttr {
				idAttrs[name] = true
			}
			continue
		}
		ty := fixedTypes[root]
		if ty.HasAttribute(name) {
			continue
		}
		attrs := make([]string, 0, len(ty.AttributeTypes()))
		for a := range ty.AttributeTypes() {
			attrs = append(attrs, a)
		}
		sort.Strings(attrs)
		detail := fmt.Sprintf("%s has no attribute %q. Its attributes are %s.", root, name, strings.Join(attrs, ", "))
		if s := suggest(name, attrs); s != "" {
			detail = fmt.Sprintf("%s has no attribute %q. Did you mean %q?", root, name, s)
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError, Summary: "Unsupported attribute", Detail: detail,
			Subject: tr[1].SourceRange().Ptr(), Expression: e,
		})
	}
	return st, diags
}

// typeCheck evaluates e with every variable unknown but typed, which
// reports type errors and unknown functions, and checks the result is a
// bool. It also checks literal regex and CIDR arguments.
func (rs *Ruleset) typeCheck(e hcl.Expression, ctx *hcl.EvalContext, attrRange hcl.Range) hcl.Diagnostics {
	diags := rs.checkLiterals(e)
	if diags.HasErrors() {
		return diags
	}
	if diags = append(diags, checkComparisons(e, ctx)...); diags.HasErrors() {
		return diags
	}
	v, d := e.Value(ctx)
	diags = append(diags, d...)
	if d.HasErrors() {
		return diags
	}
	switch {
	case v.Type() == cty.DynamicPseudoType:
		// Decided at evaluation time; a non-bool then fails closed.
	case v.Type() != cty.Bool:
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Condition is not a boolean",
			Detail: fmt.Sprintf("when must be true or false, but this expression is %s. Compare it with something, for example sql.kind == \"select\".",
				v.Type().FriendlyName()),
			Subject: e.Range().Ptr(), Context: attrRange.Ptr(), Expression: e,
		})
	case v.IsKnown() && v.IsNull():
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError, Summary: "Condition is null",
			Detail:  "when must be true or false; remove it to make the block always apply.",
			Subject: e.Range().Ptr(), Expression: e,
		})
	}
	return diags
}

// checkComparisons reports == and != between a list and a string, number
// or bool, which HCL accepts and which is always false (or always true):
// sql.flags == "search_path" is a mistake for contains(...).
func checkComparisons(e hcl.Expression, ctx *hcl.EvalContext) hcl.Diagnostics {
	node, ok := e.(hclsyntax.Node)
	if !ok {
		return nil
	}
	return hclsyntax.VisitAll(node, func(n hclsyntax.Node) hcl.Diagnostics {
		b, ok := n.(*hclsyntax.BinaryOpExpr)
		if !ok || (b.Op != hclsyntax.OpEqual && b.Op != hclsyntax.OpNotEqual) {
			return nil
		}
		l, dl := b.LHS.Value(ctx)
		r, dr := b.RHS.Value(ctx)
		if dl.HasErrors() || dr.HasErrors() {
			return nil // reported by the full evaluation
		}
		isList := func(t cty.Type) bool { return t.IsListType() || t.IsTupleType() || t.IsSetType() }
		if !(isList(l.Type()) && r.Type().IsPrimitiveType()) && !(isList(r.Type()) && l.Type().IsPrimitiveType()) {
			return nil
		}
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "List compared with a single value",
			Detail: fmt.Sprintf("This compares a list with %s, which is never equal. To test whether a list holds a value, write contains(list, value), for example contains(sql.flags, \"search_path\").",
				map[bool]string{true: l.Type().FriendlyName(), false: r.Type().FriendlyName()}[isList(r.Type())]),
			Subject: b.Range().Ptr(), Expression: e,
		}}
	})
}

// checkLiterals compiles literal regex patterns into rs.regexes and
// checks literal CIDRs and glob patterns.
func (rs *Ruleset) checkLiterals(e hcl.Expression) hcl.Diagnostics {
	node, ok := e.(hclsyntax.Node)
	if !ok {
		return nil
	}
	return hclsyntax.VisitAll(node, func(n hclsyntax.Node) hcl.Diagnostics {
		call, ok := n.(*hclsyntax.FunctionCallExpr)
		if !ok || len(call.Args) == 0 {
			return nil
		}
		arg := call.Args[0]
		v, d := arg.Value(nil)
		if d.HasErrors() || !v.IsWhollyKnown() || v.IsNull() || v.Type() != cty.String {
			return nil // not a literal string; checked when evaluated
		}
		s := v.AsString()
		bad := func(summary, detail string) hcl.Diagnostics {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError, Summary: summary, Detail: detail,
				Subject: arg.Range().Ptr(), Context: call.Range().Ptr(), Expression: e,
			}}
		}
		switch call.Name {
		case "regex":
			re, err := regexp.Compile(s)
			if err != nil {
				return bad("Invalid regular expression", fmt.Sprintf("The pattern does not compile: %s. Patterns use Go's RE2 syntax.", err))
			}
			rs.regexes[s] = &compiledRegex{re: re}
		case "cidr_contains":
			if _, err := netip.ParsePrefix(s); err != nil {
				return bad("Invalid CIDR", fmt.Sprintf("%s. Write a prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\".", err))
			}
		case "glob":
			if strings.HasSuffix(s, `\`) && !strings.HasSuffix(s, `\\`) {
				return bad("Invalid glob pattern", "The pattern ends in an unfinished escape; write \\\\ for a literal backslash.")
			}
		}
		return nil
	})
}

// compiledRegex is a literal regex compiled at load time.
type compiledRegex struct{ re *regexp.Regexp }

// makeFuncs builds the function table expressions may call. It closes
// over rs.regexes, which must be complete before evaluation starts (it is
// only read afterwards).
func (rs *Ruleset) makeFuncs() map[string]function.Function {
	str := func(name string) function.Parameter { return function.Parameter{Name: name, Type: cty.String} }
	strList := func(name string) function.Parameter {
		return function.Parameter{Name: name, Type: cty.List(cty.String)}
	}
	boolFunc := func(params []function.Parameter, impl func(args []cty.Value) (bool, error)) function.Function {
		return function.New(&function.Spec{
			Params: params,
			Type:   function.StaticReturnType(cty.Bool),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				ok, err := impl(args)
				if err != nil {
					return cty.UnknownVal(cty.Bool), err
				}
				return cty.BoolVal(ok), nil
			},
		})
	}
	return map[string]function.Function{
		"glob": boolFunc([]function.Parameter{str("pattern"), str("s")}, func(a []cty.Value) (bool, error) {
			return globMatch(a[0].AsString(), a[1].AsString()), nil
		}),
		"any_glob": boolFunc([]function.Parameter{strList("patterns"), strList("values")}, func(a []cty.Value) (bool, error) {
			for it := a[1].ElementIterator(); it.Next(); {
				_, v := it.Element()
				if globAny(a[0], v.AsString()) {
					return true, nil
				}
			}
			return false, nil
		}),
		"all_glob": boolFunc([]function.Parameter{strList("patterns"), strList("values")}, func(a []cty.Value) (bool, error) {
			for it := a[1].ElementIterator(); it.Next(); {
				_, v := it.Element()
				if !globAny(a[0], v.AsString()) {
					return false, nil
				}
			}
			return true, nil
		}),
		"regex": boolFunc([]function.Parameter{str("pattern"), str("s")}, func(a []cty.Value) (bool, error) {
			p := a[0].AsString()
			if c := rs.regexes[p]; c != nil {
				return c.re.MatchString(a[1].AsString()), nil
			}
			re, err := regexp.Compile(p)
			if err != nil {
				return false, function.NewArgErrorf(0, "invalid regular expression: %s", err)
			}
			return re.MatchString(a[1].AsString()), nil
		}),
		"cidr_contains": boolFunc([]function.Parameter{str("cidr"), str("ip")}, func(a []cty.Value) (bool, error) {
			p, err := netip.ParsePrefix(a[0].AsString())
			if err != nil {
				return false, function.NewArgErrorf(0, "invalid CIDR: %s", err)
			}
			ip, err := netip.ParseAddr(a[1].AsString())
			if err != nil {
				return false, nil // no address (for example an unset target.ip) is in no prefix
			}
			return p.Contains(ip.Unmap()), nil
		}),
		"anytrue": boolFunc([]function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}}, func(a []cty.Value) (bool, error) {
			for it := a[0].ElementIterator(); it.Next(); {
				if _, v := it.Element(); !v.IsNull() && v.True() {
					return true, nil
				}
			}
			return false, nil
		}),
		"alltrue": boolFunc([]function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}}, func(a []cty.Value) (bool, error) {
			for it := a[0].ElementIterator(); it.Next(); {
				if _, v := it.Element(); v.IsNull() || !v.True() {
					return false, nil
				}
			}
			return true, nil
		}),
		"contains":   stdlib.ContainsFunc,
		"length":     stdlib.LengthFunc,
		"strlen":     stdlib.StrlenFunc,
		"lower":      stdlib.LowerFunc,
		"upper":      stdlib.UpperFunc,
		"concat":     stdlib.ConcatFunc,
		"join":       stdlib.JoinFunc,
		"split":      stdlib.SplitFunc,
		"trimprefix": stdlib.TrimPrefixFunc,
		"trimsuffix": stdlib.TrimSuffixFunc,
	}
}

func globAny(patterns cty.Value, s string) bool {
	for it := patterns.ElementIterator(); it.Next(); {
		_, p := it.Element()
		if globMatch(p.AsString(), s) {
			return true
		}
	}
	return false
}

// MatchGlob reports whether s matches pattern, where * matches any run of
// characters (including "/" and "."), ? matches one character and \
// escapes the next one. Matching is case-sensitive and allocation-free;
// it is the glob() of rule expressions.
func MatchGlob(pattern, s string) bool { return globMatch(pattern, s) }

// globMatch is MatchGlob.
func globMatch(pattern, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := -1, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					_, n := utf8.DecodeRuneInString(s[sx:])
					px++
					sx += n
					continue
				}
			default:
				if c == '\\' && px+1 < len(pattern) {
					c = pattern[px+1]
					if sx < len(s) && s[sx] == c {
						px += 2
						sx++
						continue
					}
				} else if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextSx > 0 && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// suggest returns the candidate closest to s if it is close enough to be
// a likely typo, or "".
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// variablesSentence lists the variables for a diagnostic: the common
// ones, then the facets.
func variablesSentence() string {
	names := make([]string, 0, len(facets))
	for _, f := range facets {
		n := f.name
		for _, a := range f.aliases {
			n += fmt.Sprintf(" (older name %s)", a)
		}
		names = append(names, n)
	}
	return "identity, process, target and result, and the protocol facets " + protocolWords(names, "and")
}

// readsStatementText reports whether e may read a facet's raw text
// (sql.text, or statement.text by its older name): through the
// attribute, an index, or the whole facet object (handed to a function,
// compared, or indexed with a computed key).
func readsStatementText(e hcl.Expression) bool {
	for _, tr := range e.Variables() {
		f := facetByRoot[tr.RootName()]
		if f == nil || f.text == "" {
			continue
		}
		if len(tr) < 2 {
			return true
		}
		switch step := tr[1].(type) {
		case hcl.TraverseAttr:
			if step.Name == f.text {
				return true
			}
		case hcl.TraverseIndex:
			if !step.Key.IsKnown() || step.Key.Type() != cty.String || step.Key.IsNull() || step.Key.AsString() == f.text {
				return true
			}
		default:
			return true
		}
	}
	return false
}
