// Package postgres speaks the PostgreSQL protocol for the proxy. This file
// classifies SQL text into the ruleset's Statement vocabulary with
// PostgreSQL's own parser (pg_query), so a rule sees what the server
// would execute, not what a home-made lexer guessed.
package postgres

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/ruleset"
)

// Classify parses text, which may hold several statements, and returns one
// Statement for it all: the kind, has_where and has_limit of its most
// dangerous statement (see Merge) and every table and function any of
// them touches, sorted, including in CTEs, subqueries and data-modifying
// CTEs. A parse error is returned as is; callers deny the statement.
func Classify(text string) (ruleset.Statement, error) {
	parts, err := ClassifyAll(text)
	if err != nil {
		return ruleset.Statement{}, err
	}
	return Merge(parts, text), nil
}

// KindEmpty is the kind of text with no statement in it, such as ";".
const KindEmpty = "empty"

// ClassifyAll classifies each top-level statement in text. A statement
// with a data-modifying CTE takes the most dangerous kind within it.
func ClassifyAll(text string) ([]ruleset.Statement, error) {
	js, err := pg_query.ParseToJSON(text)
	if err != nil {
		return nil, fmt.Errorf("parse statement: %w", err)
	}
	var tree struct {
		Stmts []struct {
			Stmt     map[string]any `json:"stmt"`
			Location int            `json:"stmt_location"`
			Len      int            `json:"stmt_len"`
		} `json:"stmts"`
	}
	if err := json.Unmarshal([]byte(js), &tree); err != nil {
		return nil, fmt.Errorf("decode parse tree: %w", err)
	}
	if len(tree.Stmts) == 0 {
		return []ruleset.Statement{{Kind: KindEmpty, Text: text}}, nil
	}
	out := make([]ruleset.Statement, 0, len(tree.Stmts))
	for _, s := range tree.Stmts {
		st := classifyNode(s.Stmt)
		st.Text = stmtText(text, s.Location, s.Len)
		out = append(out, st)
	}
	return out, nil
}

// stmtText cuts one statement out of text; pg_query's locations are byte
// offsets and a zero length means "to the end".
func stmtText(text string, loc, n int) string {
	if loc < 0 || loc > len(text) {
		return text
	}
	end := len(text)
	if n > 0 && loc+n <= len(text) {
		end = loc + n
	}
	return strings.TrimSpace(text[loc:end])
}

// classifyNode classifies one statement node ({"SelectStmt": {...}}).
func classifyNode(node map[string]any) ruleset.Statement {
	w := &walker{seenT: map[string]bool{}, seenF: map[string]bool{}}
	var st ruleset.Statement
	for typ, body := range node {
		b, _ := body.(map[string]any)
		st = w.stmt(typ, b, nil)
	}
	for _, sub := range w.subs {
		if danger(sub) > danger(st) {
			st.Kind, st.HasWhere, st.HasLimit = sub.Kind, sub.HasWhere, sub.HasLimit
		}
	}
	sort.Strings(w.tables)
	sort.Strings(w.funcs)
	st.Tables, st.Functions = w.tables, w.funcs
	return st
}

// walker collects tables and functions from a parse tree and the kinds of
// statements nested in it.
type walker struct {
	tables, funcs []string
	seenT, seenF  map[string]bool
	subs          []ruleset.Statement
	explain       int // > 0 under a plain EXPLAIN, whose statement does not run
}

// stmt classifies a statement node of type typ and walks it.
func (w *walker) stmt(typ string, b map[string]any, scope map[string]bool) ruleset.Statement {
	st := ruleset.Statement{Kind: kindOf(typ, b)}
	_, st.HasWhere = b["whereClause"]
	_, st.HasLimit = b["limitCount"]
	switch typ {
	case "ExplainStmt":
		if q, ok := b["query"].(map[string]any); ok && explainAnalyze(b) {
			// EXPLAIN ANALYZE runs the statement: classify what it runs.
			for t, inner := range q {
				ib, _ := inner.(map[string]any)
				return w.stmt(t, ib, scope)
			}
		}
		w.explain++
		defer func() { w.explain-- }()
	case "PrepareStmt", "DeclareCursorStmt":
		// Decide at PREPARE / DECLARE time by what will run.
		if q, ok := b["query"].(map[string]any); ok {
			for t, inner := range q {
				ib, _ := inner.(map[string]any)
				return w.stmt(t, ib, scope)
			}
		}
	case "DropStmt":
		w.dropObjects(b)
	}
	w.walk(b, scope)
	return st
}

func explainAnalyze(b map[string]any) bool {
	opts, _ := b["options"].([]any)
	for _, o := range opts {
		de, _ := o.(map[string]any)["DefElem"].(map[string]any)
		if de["defname"] != "analyze" {
			continue
		}
		arg, ok := de["arg"].(map[string]any)
		if !ok {
			return true
		}
		for _, v := range arg {
			if m, ok := v.(map[string]any); ok {
				switch x := m["sval"].(type) {
				case string:
					return x != "false" && x != "off" && x != "0"
				}
				if bv, ok := m["boolval"]; ok {
					return bv == true
				}
				if iv, ok := m["ival"]; ok {
					return iv != float64(0)
				}
			}
		}
		return true
	}
	return false
}

// tableObjects are the DropStmt object types whose names are relations.
var tableObjects = map[string]bool{
	"OBJECT_TABLE": true, "OBJECT_VIEW": true, "OBJECT_MATVIEW": true,
	"OBJECT_FOREIGN_TABLE": true, "OBJECT_SEQUENCE": true, "OBJECT_INDEX": true,
}

func (w *walker) dropObjects(b map[string]any) {
	if t, _ := b["removeType"].(string); !tableObjects[t] {
		return
	}
	objs, _ := b["objects"].([]any)
	for _, o := range objs {
		list, _ := o.(map[string]any)["List"].(map[string]any)
		items, _ := list["items"].([]any)
		var parts []string
		for _, it := range items {
			if s, ok := it.(map[string]any)["String"].(map[string]any); ok {
				parts = append(parts, fmt.Sprint(s["sval"]))
			}
		}
		if len(parts) > 0 {
			w.addTable(strings.Join(parts, "."))
		}
	}
}

func (w *walker) addTable(name string) {
	if !w.seenT[name] {
		w.seenT[name] = true
		w.tables = append(w.tables, name)
	}
}

func (w *walker) addFunc(name string) {
	if !w.seenF[name] {
		w.seenF[name] = true
		w.funcs = append(w.funcs, name)
	}
}

// dmlTypes are the statements that change data when nested in a CTE.
var dmlTypes = map[string]bool{"InsertStmt": true, "UpdateStmt": true, "DeleteStmt": true, "MergeStmt": true}

// walk visits every node under n. scope holds the CTE names visible at n,
// which are not tables when referenced unqualified.
func (w *walker) walk(n any, scope map[string]bool) {
	switch n := n.(type) {
	case []any:
		for _, x := range n {
			w.walk(x, scope)
		}
	case map[string]any:
		if with, ok := n["withClause"].(map[string]any); ok {
			scope = withScope(with, scope)
		}
		if rel, ok := n["relname"].(string); ok {
			if s, ok := n["schemaname"].(string); ok && s != "" {
				w.addTable(s + "." + rel)
			} else if !scope[rel] {
				w.addTable(rel)
			}
		}
		if fn, ok := n["funcname"].([]any); ok {
			var parts []string
			for _, p := range fn {
				if s, ok := p.(map[string]any)["String"].(map[string]any); ok {
					parts = append(parts, fmt.Sprint(s["sval"]))
				}
			}
			if len(parts) > 0 {
				w.addFunc(strings.Join(parts, "."))
			}
		}
		for k, v := range n {
			if dmlTypes[k] && w.explain == 0 {
				if b, ok := v.(map[string]any); ok {
					w.subs = append(w.subs, w.stmt(k, b, scope))
					continue
				}
			}
			w.walk(v, scope)
		}
	}
}

func withScope(with map[string]any, outer map[string]bool) map[string]bool {
	ctes, _ := with["ctes"].([]any)
	scope := make(map[string]bool, len(outer)+len(ctes))
	for k := range outer {
		scope[k] = true
	}
	for _, c := range ctes {
		if cte, ok := c.(map[string]any)["CommonTableExpr"].(map[string]any); ok {
			if name, ok := cte["ctename"].(string); ok {
				scope[name] = true
			}
		}
	}
	return scope
}

// kindOf maps a parse node type to a statement kind.
func kindOf(typ string, b map[string]any) string {
	switch typ {
	case "SelectStmt":
		if _, ok := b["intoClause"]; ok {
			return "create" // SELECT ... INTO new_table
		}
		return "select"
	case "InsertStmt":
		return "insert"
	case "UpdateStmt":
		return "update"
	case "DeleteStmt":
		return "delete"
	case "MergeStmt":
		return "merge"
	case "CopyStmt":
		if b["is_from"] == true {
			return "copy_in"
		}
		return "copy_out"
	case "TruncateStmt":
		return "truncate"
	case "GrantStmt", "GrantRoleStmt":
		if b["is_grant"] == true {
			return "grant"
		}
		return "revoke"
	case "VariableSetStmt":
		return "set"
	case "VariableShowStmt":
		return "show"
	case "TransactionStmt":
		return "transaction"
	case "ExplainStmt":
		return "explain"
	case "CallStmt":
		return "call"
	case "DoStmt":
		return "do"
	case "ExecuteStmt":
		return "execute"
	case "FetchStmt":
		return "select" // reads rows of a cursor declared earlier
	case "LockStmt":
		return "lock"
	case "VacuumStmt":
		return "vacuum"
	case "RenameStmt", "CommentStmt", "ReassignOwnedStmt":
		return "alter"
	case "IndexStmt", "ViewStmt", "DefineStmt", "CompositeTypeStmt", "RuleStmt":
		return "create"
	}
	switch {
	case strings.HasPrefix(typ, "Drop"):
		return "drop"
	case strings.HasPrefix(typ, "Alter"):
		return "alter"
	case strings.HasPrefix(typ, "Create"):
		return "create"
	}
	return "other"
}

// rank orders kinds by how much harm they can do.
var rank = map[string]int{
	"drop": 100, "truncate": 95, "delete": 90, "update": 85, "merge": 84,
	"alter": 80, "grant": 75, "revoke": 74, "do": 70, "copy_out": 65,
	"call": 60, "execute": 55, "create": 50, "copy_in": 45, "insert": 40,
	"lock": 35, "vacuum": 30, "other": 25, "select": 20, "explain": 15,
	"set": 10, "show": 5, "transaction": 1, KindEmpty: 0,
}

// danger scores a statement; an UPDATE or DELETE without WHERE outranks
// one with.
func danger(s ruleset.Statement) int {
	d := rank[s.Kind] * 2
	if (s.Kind == "update" || s.Kind == "delete") && !s.HasWhere {
		d++
	}
	return d
}

// Merge folds several statements into one for a ruleset decision: kind,
// has_where and has_limit come from the most dangerous (drop > truncate >
// delete > update > merge > alter > grant > revoke > do > copy_out > call
// > execute > create > copy_in > insert > lock > vacuum > other > select >
// explain > set > show > transaction; without WHERE beats with), tables
// and functions are the sorted union, and Text is text.
func Merge(parts []ruleset.Statement, text string) ruleset.Statement {
	if len(parts) == 1 {
		st := parts[0]
		st.Text = text
		return st
	}
	var out ruleset.Statement
	seenT, seenF := map[string]bool{}, map[string]bool{}
	for i, p := range parts {
		if i == 0 || danger(p) > danger(out) {
			out.Kind, out.HasWhere, out.HasLimit = p.Kind, p.HasWhere, p.HasLimit
		}
		for _, t := range p.Tables {
			if !seenT[t] {
				seenT[t] = true
				out.Tables = append(out.Tables, t)
			}
		}
		for _, f := range p.Functions {
			if !seenF[f] {
				seenF[f] = true
				out.Functions = append(out.Functions, f)
			}
		}
	}
	sort.Strings(out.Tables)
	sort.Strings(out.Functions)
	out.Text = text
	return out
}
