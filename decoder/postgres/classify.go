// Package postgres speaks the PostgreSQL protocol for the proxy. This file
// classifies SQL text into the ruleset's Statement vocabulary with
// PostgreSQL's own parser (pg_query), so a rule sees what the server
// would execute, not what a home-made lexer guessed.
package postgres

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

// Classify parses text, which may hold several statements, and returns one
// Statement for it all: the kind, has_where and has_limit of its most
// dangerous statement (see Merge) and every table, function and flag any
// of them touches, sorted, including in CTEs, subqueries and
// data-modifying CTEs. A parse error is returned as is; callers deny the
// statement.
func Classify(text string) (ruleset.Statement, error) {
	st, _, err := ClassifyForCache(text)
	return st, err
}

// ClassifyForCache is Classify for a cache that also keys statements by
// pg_query.Normalize's text, in which constants are replaced by $n.
// literalFree is false when the classification looked at a value rather
// than only at the shape of the tree and its names: a constant's value
// (set_config's setting name, LIMIT ALL or NULL, an EXPLAIN option), or a
// parameter or expression standing where such a value matters. Only a
// literal-free classification may be stored under the normalized text:
// any other text with the same normalized text then classifies the same.
// On error literalFree is false.
func ClassifyForCache(text string) (st ruleset.Statement, literalFree bool, err error) {
	parts, literalFree, err := classifyAll(text)
	if err != nil {
		return ruleset.Statement{}, false, err
	}
	return Merge(parts, text), literalFree, nil
}

// KindEmpty is the kind of text with no statement in it, such as ";"
// (decoder.KindEmpty, shared by every SQL protocol).
const KindEmpty = decoder.KindEmpty

// Flags set by the classifier; see the ruleset package doc.
const (
	FlagDangerousFunction = "dangerous_function" // a call that reaches server files, programs or other servers
	FlagCopyProgram       = "copy_program"       // COPY ... TO/FROM PROGRAM
	FlagCopyFile          = "copy_file"          // COPY ... TO/FROM a server file
	FlagSearchPath        = "search_path"        // a change of search_path
)

// ClassifyAll classifies each top-level statement in text. A statement
// with a data-modifying CTE takes the most dangerous kind within it.
func ClassifyAll(text string) ([]ruleset.Statement, error) {
	parts, _, err := classifyAll(text)
	return parts, err
}

func classifyAll(text string) ([]ruleset.Statement, bool, error) {
	return classifyAllDepth(text, 0)
}

// classifyAllDepth is classifyAll for text found inside a body at depth.
func classifyAllDepth(text string, depth int) ([]ruleset.Statement, bool, error) {
	js, err := pg_query.ParseToJSON(text)
	if err != nil {
		return nil, false, fmt.Errorf("parse statement: %w", err)
	}
	t := getTree()
	defer putTree(t)
	if err := t.parse(js); err != nil {
		return nil, false, fmt.Errorf("decode parse tree: %w", err)
	}
	stmts := t.get(0, "stmts")
	if stmts < 0 || t.n[stmts].first == 0 {
		return []ruleset.Statement{{Kind: KindEmpty, Text: text}}, true, nil
	}
	var out []ruleset.Statement
	literalFree := true
	for raw := range t.children(stmts) {
		w := walker{t: t, depth: depth, text: stmtText(text, t.int(t.get(raw, "stmt_location")), t.int(t.get(raw, "stmt_len")))}
		st := w.classify(t.get(raw, "stmt"))
		st.Text = w.text
		literalFree = literalFree && !w.valueDep
		out = append(out, st)
	}
	return out, literalFree, nil
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

// flag is a bit set of classifier flags.
type flag uint8

const (
	fDangerous flag = 1 << iota
	fCopyProgram
	fCopyFile
	fSearchPath
)

// flagNames are the flags in sorted order of their names.
var flagNames = []struct {
	f    flag
	name string
}{
	{fCopyFile, FlagCopyFile}, {fCopyProgram, FlagCopyProgram},
	{fDangerous, FlagDangerousFunction}, {fSearchPath, FlagSearchPath},
}

func (f flag) names() []string {
	if f == 0 {
		return nil
	}
	out := make([]string, 0, 4)
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			out = append(out, fn.name)
		}
	}
	return out
}

// walker collects tables, functions and flags from one statement's parse
// tree and the kinds of statements nested in it.
type walker struct {
	t             *tree
	tables, funcs []string
	flags         flag
	subs          []ruleset.Statement
	explain       int      // > 0 under a plain EXPLAIN, whose statement does not run
	valueDep      bool     // the classification looked at a value (see ClassifyForCache)
	more          []string // flags of bodies and of statements inside them
	depth         int      // how many bodies this statement is inside
	text          string   // the statement's text
	fn            string   // while reading a function's body: the CREATE's text
}

// classify classifies one statement node ({"SelectStmt": {...}}).
func (w *walker) classify(node int32) ruleset.Statement {
	var st ruleset.Statement
	if node < 0 {
		return ruleset.Statement{Kind: "other"}
	}
	for c := range w.t.children(node) {
		st = w.stmt(w.t.n[c].key, c, nil)
	}
	for _, sub := range w.subs {
		if danger(sub) > danger(st) {
			st.Kind, st.HasWhere, st.HasLimit = sub.Kind, sub.HasWhere, sub.HasLimit
		}
	}
	if st.Kind == "" {
		st.Kind = "other"
	}
	st.Tables, st.Functions = sortedSet(w.tables), sortedSet(w.funcs)
	st.Flags = w.flags.names()
	if len(w.more) > 0 {
		st.Flags = sortedSet(append(st.Flags, w.more...))
	}
	return st
}

func sortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Clip(slices.Compact(s))
}

// stmt classifies a statement node of type typ and body b and walks it.
func (w *walker) stmt(typ string, b int32, scope *cteScope) ruleset.Statement {
	t := w.t
	st := ruleset.Statement{Kind: w.kindOf(typ, b)}
	st.HasWhere = t.get(b, "whereClause") >= 0
	st.HasLimit = w.hasLimit(b)
	switch typ {
	case "ExplainStmt":
		if q := t.get(b, "query"); q >= 0 && w.explainAnalyze(b) {
			// EXPLAIN ANALYZE runs the statement: classify what it runs.
			for c := range t.children(q) {
				return w.stmt(t.n[c].key, c, scope)
			}
		}
		w.explain++
		defer func() { w.explain-- }()
	case "PrepareStmt", "DeclareCursorStmt":
		// Decide at PREPARE / DECLARE time by what will run.
		if typ == "PrepareStmt" {
			w.more = append(w.more, FlagPrepare)
		}
		if q := t.get(b, "query"); q >= 0 {
			for c := range t.children(q) {
				return w.stmt(t.n[c].key, c, scope)
			}
		}
	case "DoStmt", "CreateFunctionStmt", "RuleStmt", "CreateTrigStmt", "CreateEventTrigStmt":
		w.codeStmt(typ, b)
	case "DropStmt":
		w.dropObjects(b)
	case "CopyStmt":
		switch {
		case t.bool(t.get(b, "is_program")):
			w.flags |= fCopyProgram
		case t.get(b, "filename") >= 0:
			w.flags |= fCopyFile
		}
	case "UpdateStmt":
		// pg_settings is a view whose UPDATE calls set_config; which
		// setting it changes is in a WHERE clause we do not evaluate.
		if rel := t.get(b, "relation"); rel >= 0 && t.str(t.get(rel, "relname")) == "pg_settings" {
			w.flags |= fSearchPath
		}
	}
	w.node(typ, b)
	w.walk(b, scope)
	return st
}

// node inspects a node of type typ (or reached through field typ) for
// flags.
func (w *walker) node(typ string, b int32) {
	switch typ {
	case "VariableSetStmt", "setstmt":
		// SET, SET LOCAL, SET SCHEMA, and ALTER ROLE / DATABASE / SYSTEM /
		// FUNCTION ... SET. RESET and SET ... TO DEFAULT go back to the
		// configured value. GUC names are case-insensitive.
		kind := w.t.str(w.t.get(b, "kind"))
		if (kind == "VAR_SET_VALUE" || kind == "VAR_SET_CURRENT") && strings.EqualFold(w.t.str(w.t.get(b, "name")), "search_path") {
			w.flags |= fSearchPath
		}
	case "ExecuteStmt":
		// Also under EXPLAIN or CREATE TABLE AS. Unknown until the
		// session says what the name was prepared as (sqlPrepared.apply):
		// whoever classifies without a session (sluice rules test, a
		// forgotten call site) sees it refusable.
		w.more = append(w.more, FlagUnknownPrepared)
	}
}

// hasLimit reports whether b limits its rows: LIMIT ALL and LIMIT NULL
// are constants that do not, and a parameter may be bound to NULL, so a
// constant or parameter makes the answer depend on a value.
func (w *walker) hasLimit(b int32) bool {
	lc := w.t.get(b, "limitCount")
	if lc < 0 {
		return false
	}
	c := w.t.n[lc].first
	if c == 0 {
		return true
	}
	switch w.t.n[c].key {
	case "A_Const":
		w.valueDep = true
		return !w.t.bool(w.t.get(c, "isnull"))
	case "ParamRef":
		w.valueDep = true
	}
	return true
}

// explainAnalyze reports whether an ExplainStmt's options turn ANALYZE on,
// as PostgreSQL's defGetBoolean reads them: no argument, 1, true or on.
// Anything else that is not clearly off counts as on.
func (w *walker) explainAnalyze(b int32) bool {
	t := w.t
	opts := t.get(b, "options")
	if opts < 0 {
		return false
	}
	for o := range t.children(opts) {
		de := t.get(o, "DefElem")
		if de < 0 || t.str(t.get(de, "defname")) != "analyze" {
			continue
		}
		arg := t.get(de, "arg")
		if arg < 0 {
			return true
		}
		w.valueDep = true
		for v := range t.children(arg) {
			switch t.n[v].key {
			case "String":
				s := strings.ToLower(t.str(t.get(v, "sval")))
				return s != "false" && s != "off"
			case "Boolean":
				return t.bool(t.get(v, "boolval"))
			case "Integer":
				return t.int(t.get(v, "ival")) != 0 // absent means 0
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

func (w *walker) dropObjects(b int32) {
	t := w.t
	if !tableObjects[t.str(t.get(b, "removeType"))] {
		return
	}
	objs := t.get(b, "objects")
	if objs < 0 {
		return
	}
	for o := range t.children(objs) {
		if name := w.nameList(t.get(t.get(o, "List"), "items")); name != "" {
			w.tables = append(w.tables, name)
		}
	}
}

// nameList joins a list of String nodes with dots.
func (w *walker) nameList(list int32) string {
	if list < 0 {
		return ""
	}
	var name string
	for it := range w.t.children(list) {
		s := w.t.get(it, "String")
		if s < 0 {
			continue
		}
		if name != "" {
			name += "."
		}
		name += w.t.str(w.t.get(s, "sval"))
	}
	return strings.Clone(name) // do not pin the parse tree's text
}

// dmlTypes are the statements that change data when nested in a CTE.
var dmlTypes = map[string]bool{"InsertStmt": true, "UpdateStmt": true, "DeleteStmt": true, "MergeStmt": true}

// cteScope holds the CTE names visible at a node, which are not tables
// when referenced unqualified.
type cteScope struct {
	names []string
	outer *cteScope
}

func (s *cteScope) has(name string) bool {
	for ; s != nil; s = s.outer {
		if slices.Contains(s.names, name) {
			return true
		}
	}
	return false
}

// walk visits every node under n.
func (w *walker) walk(n int32, scope *cteScope) {
	t := w.t
	switch t.n[n].kind {
	case jArr:
		for c := range t.children(n) {
			w.walk(c, scope)
		}
	case jObj:
		if with := t.get(n, "withClause"); with >= 0 {
			scope = w.withScope(with, scope)
		}
		if rel := t.get(n, "relname"); rel >= 0 && t.n[rel].kind == jStr {
			rel := t.str(rel)
			if s := t.str(t.get(n, "schemaname")); s != "" {
				w.tables = append(w.tables, s+"."+rel)
			} else if !scope.has(rel) {
				w.tables = append(w.tables, strings.Clone(rel))
			}
		}
		if fn := t.get(n, "funcname"); fn >= 0 && t.n[fn].kind == jArr {
			w.call(fn, t.get(n, "args"))
		}
		for c := range t.children(n) {
			k := t.n[c].key
			if dmlTypes[k] && w.explain == 0 && t.n[c].kind == jObj {
				w.subs = append(w.subs, w.stmt(k, c, scope))
				continue
			}
			if t.n[c].kind == jObj {
				w.node(k, c)
			}
			w.walk(c, scope)
		}
	}
}

// call records a function call (or a FuncCall-shaped definition, such as
// CREATE FUNCTION's name) and flags the dangerous ones.
func (w *walker) call(funcname, args int32) {
	name := w.nameList(funcname)
	if name == "" {
		return
	}
	w.funcs = append(w.funcs, name)
	base := strings.ToLower(name[strings.LastIndexByte(name, '.')+1:])
	if dangerousFunction(base) {
		w.flags |= fDangerous
	}
	if base == "set_config" && args >= 0 {
		// set_config(name, value, is_local): flag search_path, and any
		// name that is not a string constant, since it could be.
		w.valueDep = true
		first := w.t.n[args].first
		if first == 0 {
			return
		}
		c := w.t.get(first, "A_Const")
		sv := w.t.get(w.t.get(c, "sval"), "sval")
		if c < 0 || sv < 0 || strings.EqualFold(w.t.str(sv), "search_path") {
			w.flags |= fSearchPath
		}
	}
}

// dangerousFunction reports whether a function (its unqualified,
// lower-case name) reads or lists server files, writes them, or reaches
// other servers. It matches in any schema: the core ones live in
// pg_catalog, adminpack's and dblink's wherever they were installed.
func dangerousFunction(name string) bool {
	switch name {
	case "pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_ls_dir",
		"lo_import", "lo_export", "pg_logdir_ls":
		return true
	}
	return strings.HasPrefix(name, "dblink") || strings.HasPrefix(name, "pg_ls_") || strings.HasPrefix(name, "pg_file_")
}

func (w *walker) withScope(with int32, outer *cteScope) *cteScope {
	t := w.t
	ctes := t.get(with, "ctes")
	if ctes < 0 {
		return outer
	}
	scope := &cteScope{outer: outer}
	for c := range t.children(ctes) {
		if name := t.get(t.get(c, "CommonTableExpr"), "ctename"); name >= 0 {
			scope.names = append(scope.names, t.str(name))
		}
	}
	return scope
}

// kindOf maps a parse node type to a statement kind.
func (w *walker) kindOf(typ string, b int32) string {
	t := w.t
	switch typ {
	case "SelectStmt":
		if t.get(b, "intoClause") >= 0 {
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
		if t.bool(t.get(b, "is_from")) {
			return "copy_in"
		}
		return "copy_out"
	case "TruncateStmt":
		return "truncate"
	case "GrantStmt", "GrantRoleStmt":
		if t.bool(t.get(b, "is_grant")) {
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

// danger scores a statement for choosing its most dangerous part; the
// ranking is shared by every SQL protocol (decoder.Danger).
func danger(s ruleset.Statement) int { return decoder.Danger(s) }

// Merge folds several statements into one for a ruleset decision: kind,
// has_where and has_limit come from the most dangerous (drop > truncate >
// delete > update > merge > alter > grant > revoke > do > copy_out > call
// > execute > create > copy_in > insert > lock > vacuum > other > select >
// explain > set > show > transaction; without WHERE beats with; the first
// of equals), tables, functions and flags are the sorted union, and Text
// is text. It is decoder.MergeStatements, shared with MySQL.
func Merge(parts []ruleset.Statement, text string) ruleset.Statement {
	return decoder.MergeStatements(parts, text)
}

// A tree is pg_query's JSON parse tree decoded into one flat slice of
// nodes, which is several times cheaper than decoding it into maps.
// Strings point into the JSON text; callers copy the ones they keep.
type tree struct {
	js string
	n  []jnode // n[0] is the root
}

type jkind uint8

const (
	jNull jkind = iota
	jObj
	jArr
	jStr
	jNum
	jTrue
	jFalse
)

// jnode is one JSON value. Children of an object or array are linked
// from first through next; index 0 (the root) is never a child, so 0
// ends a list.
type jnode struct {
	key         string // the member name, for an object's children
	val         string // a string's text or a number's digits
	first, next int32
	kind        jkind
}

var treePool = sync.Pool{New: func() any { return &tree{n: make([]jnode, 0, 256)} }}

func getTree() *tree { return treePool.Get().(*tree) }

func putTree(t *tree) {
	if cap(t.n) > 1<<16 {
		return // let an outsized tree go
	}
	clear(t.n) // drop references to the JSON text
	t.n, t.js = t.n[:0], ""
	treePool.Put(t)
}

// maxDepth bounds nesting, as encoding/json does; deeper trees fail to
// decode, so their statements are denied.
const maxDepth = 10000

var errJSON = errors.New("malformed JSON")

func (t *tree) parse(js string) error {
	t.js, t.n = js, t.n[:0]
	i, err := t.value(skipSpace(js, 0), 0)
	if err != nil {
		return err
	}
	if skipSpace(js, i) != len(js) {
		return errJSON
	}
	return nil
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
		i++
	}
	return i
}

// value decodes the value at s[i:] into a new node and returns the offset
// after it.
func (t *tree) value(i, depth int) (int, error) {
	s := t.js
	if i >= len(s) || depth > maxDepth {
		return 0, errJSON
	}
	idx := int32(len(t.n))
	t.n = append(t.n, jnode{})
	switch c := s[i]; {
	case c == '{' || c == '[':
		obj := c == '{'
		t.n[idx].kind = jArr
		closer := byte(']')
		if obj {
			t.n[idx].kind, closer = jObj, '}'
		}
		i = skipSpace(s, i+1)
		if i < len(s) && s[i] == closer {
			return i + 1, nil
		}
		var prev int32
		for {
			var key string
			if obj {
				var err error
				if key, i, err = t.string(i); err != nil {
					return 0, err
				}
				i = skipSpace(s, i)
				if i >= len(s) || s[i] != ':' {
					return 0, errJSON
				}
				i = skipSpace(s, i+1)
			}
			child := int32(len(t.n))
			var err error
			if i, err = t.value(i, depth+1); err != nil {
				return 0, err
			}
			t.n[child].key = key
			if prev == 0 {
				t.n[idx].first = child
			} else {
				t.n[prev].next = child
			}
			prev = child
			i = skipSpace(s, i)
			if i >= len(s) {
				return 0, errJSON
			}
			if s[i] == closer {
				return i + 1, nil
			}
			if s[i] != ',' {
				return 0, errJSON
			}
			i = skipSpace(s, i+1)
		}
	case c == '"':
		v, end, err := t.string(i)
		if err != nil {
			return 0, err
		}
		t.n[idx].kind, t.n[idx].val = jStr, v
		return end, nil
	case c == '-' || (c >= '0' && c <= '9'):
		j := i + 1
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' || s[j] == '+' || s[j] == '-') {
			j++
		}
		t.n[idx].kind, t.n[idx].val = jNum, s[i:j]
		return j, nil
	case strings.HasPrefix(s[i:], "true"):
		t.n[idx].kind = jTrue
		return i + 4, nil
	case strings.HasPrefix(s[i:], "false"):
		t.n[idx].kind = jFalse
		return i + 5, nil
	case strings.HasPrefix(s[i:], "null"):
		return i + 4, nil
	}
	return 0, errJSON
}

// string decodes the JSON string at s[i:]. Strings without escapes, which
// is nearly all of them, are not copied.
func (t *tree) string(i int) (string, int, error) {
	s := t.js
	if i >= len(s) || s[i] != '"' {
		return "", 0, errJSON
	}
	escaped := false
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			if !escaped {
				return s[i+1 : j], j + 1, nil
			}
			var v string
			if err := json.Unmarshal([]byte(s[i:j+1]), &v); err != nil {
				return "", 0, errJSON
			}
			return v, j + 1, nil
		}
	}
	return "", 0, errJSON
}

// get returns the member key of object n, or -1; n may be -1.
func (t *tree) get(n int32, key string) int32 {
	if n < 0 || t.n[n].kind != jObj {
		return -1
	}
	for c := t.n[n].first; c != 0; c = t.n[c].next {
		if t.n[c].key == key {
			return c
		}
	}
	return -1
}

// children iterates over the members of an object or the elements of an
// array.
func (t *tree) children(n int32) func(yield func(int32) bool) {
	return func(yield func(int32) bool) {
		if n < 0 {
			return
		}
		for c := t.n[n].first; c != 0; c = t.n[c].next {
			if !yield(c) {
				return
			}
		}
	}
}

// str returns n's text if it is a string, else "".
func (t *tree) str(n int32) string {
	if n < 0 || t.n[n].kind != jStr {
		return ""
	}
	return t.n[n].val
}

func (t *tree) bool(n int32) bool { return n >= 0 && t.n[n].kind == jTrue }

// int returns n's value if it is an integer, else 0.
func (t *tree) int(n int32) int {
	if n < 0 || t.n[n].kind != jNum {
		return 0
	}
	v := 0
	neg := false
	for k, c := range []byte(t.n[n].val) {
		switch {
		case k == 0 && c == '-':
			neg = true
		case c >= '0' && c <= '9' && v < 1<<40:
			v = v*10 + int(c-'0')
		default:
			return 0
		}
	}
	if neg {
		return -v
	}
	return v
}
