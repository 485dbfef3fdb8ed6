package postgres

import (
	"encoding/json"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/ruleset"
)

// Flags for code that runs inside the database: bodies of DO blocks,
// functions, procedures, rules and triggers (see body.go).
const (
	FlagDoBlock         = "do_block"         // DO
	FlagCreateFunction  = "create_function"  // CREATE [OR REPLACE] FUNCTION
	FlagCreateProcedure = "create_procedure" // CREATE [OR REPLACE] PROCEDURE
	FlagCreateRule      = "create_rule"      // CREATE RULE
	FlagCreateTrigger   = "create_trigger"   // CREATE [CONSTRAINT | EVENT] TRIGGER
	FlagEventTrigger    = "event_trigger"    // CREATE EVENT TRIGGER (also create_trigger)
	FlagDynamicSQL      = "dynamic_sql"      // a body whose SQL cannot be read: EXECUTE of an expression, another language
	FlagUnknownPrepared = "unknown_prepared" // EXECUTE of a name this session never prepared
	FlagPrepare         = "prepare"          // SQL-level PREPARE (classified as the statement it prepares)
)

// maxBodyDepth bounds bodies inside bodies (a DO that creates a function
// that runs a DO ...); deeper ones are dynamic_sql.
const maxBodyDepth = 4

// body classifies code a statement carries as a string: a DO block or a
// function or procedure body. The statements inside become the walker's
// nested statements (their kinds compete for the statement's kind), and
// their tables, functions and flags are the statement's. What cannot be
// read (another language, EXECUTE of a computed string, a body that does
// not parse) is flagged dynamic_sql. The classification depends on the
// string's value, so it is never cached under the normalised text.
func (w *walker) body(lang, src string) {
	w.valueDep = true
	lang = strings.ToLower(lang)
	switch {
	case w.depth >= maxBodyDepth:
		w.more = append(w.more, FlagDynamicSQL)
	case lang == "sql":
		w.sql(src)
	case lang == "plpgsql" || lang == "":
		w.plpgsql(src)
	default:
		// Another language runs what it likes: C a library's code, and
		// internal any function built into the server under a new name
		// (pg_read_file's, say), which the name checks would not see.
		w.more = append(w.more, FlagDynamicSQL)
	}
}

// sql takes statements written as SQL text into the walker.
func (w *walker) sql(src string) {
	parts, _, err := classifyAllDepth(src, w.depth+1)
	if err != nil {
		w.more = append(w.more, FlagDynamicSQL)
		return
	}
	for _, p := range parts {
		w.subs = append(w.subs, p)
		w.tables = append(w.tables, p.Tables...)
		w.funcs = append(w.funcs, p.Functions...)
		w.more = append(w.more, p.Flags...)
	}
}

// plpgsql reads a PL/pgSQL body with PostgreSQL's own PL/pgSQL parser (as
// pg_query ships it): its SQL statements, the SQL of EXECUTE of a string
// literal, and its expressions (for functions and tables they use).
func (w *walker) plpgsql(src string) {
	if w.fn != "" {
		// A CREATE FUNCTION or PROCEDURE: its own text declares the
		// parameters, result columns and return type the body uses.
		js, err := pg_query.ParsePlPgSqlToJSON(w.fn)
		var v any
		if err == nil && json.Unmarshal([]byte(js), &v) == nil {
			w.plNode(v)
			return
		}
	}
	tag := "$sluice$"
	for i := 0; strings.Contains(src, tag); i++ {
		tag = "$sluice" + strings.Repeat("x", i+1) + "$"
	}
	// PL/pgSQL's parser checks RETURN against the return type and knows
	// NEW and OLD only in trigger functions: try the shapes a body may
	// need, the common one first.
	var js string
	var err error
	for _, rt := range []string{"void", "SETOF record", "trigger"} {
		js, err = pg_query.ParsePlPgSqlToJSON("CREATE FUNCTION sluice_body() RETURNS " + rt + " LANGUAGE plpgsql AS " + tag + src + tag)
		if err == nil {
			break
		}
	}
	var v any
	if err == nil {
		err = json.Unmarshal([]byte(js), &v)
	}
	if err != nil {
		w.more = append(w.more, FlagDynamicSQL)
		return
	}
	w.plNode(v)
}

func (w *walker) plNode(v any) {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			w.plNode(e)
		}
	case map[string]any:
		for k, e := range v {
			switch k {
			case "PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors":
				// Then walked on: USING expressions, a loop's body.
				w.dynamic(e, "query")
			case "PLpgSQL_stmt_open", "PLpgSQL_stmt_return_query":
				if m, ok := e.(map[string]any); ok && m["dynquery"] != nil {
					w.dynamic(e, "dynquery")
				}
			case "PLpgSQL_expr":
				w.plExpr(e)
				continue
			}
			w.plNode(e)
		}
	}
}

// plExpr classifies one PL/pgSQL expression or statement.
func (w *walker) plExpr(e any) {
	m, _ := e.(map[string]any)
	q, _ := m["query"].(string)
	mode, _ := m["parseMode"].(float64)
	switch mode {
	case 0: // a whole SQL statement
	case 3, 4, 5: // an assignment: target := expression
		if _, rhs, ok := strings.Cut(q, ":="); ok {
			q = "SELECT " + rhs
		} else if _, rhs, ok := strings.Cut(q, "="); ok {
			q = "SELECT " + rhs
		}
	default: // an expression
		q = "SELECT " + q
	}
	w.sql(q)
}

// dynamic classifies EXECUTE's string: the SQL of a string literal, or
// dynamic_sql for anything computed.
func (w *walker) dynamic(e any, field string) {
	m, _ := e.(map[string]any)
	x, _ := m[field].(map[string]any)
	expr, _ := x["PLpgSQL_expr"].(map[string]any)
	q, _ := expr["query"].(string)
	if lit, ok := stringLiteral(q); ok {
		w.sql(lit)
		return
	}
	w.more = append(w.more, FlagDynamicSQL)
	w.sql("SELECT " + q) // the functions that compute it still count
}

// stringLiteral returns the value of expr when it is one string constant.
func stringLiteral(expr string) (string, bool) {
	js, err := pg_query.ParseToJSON("SELECT " + expr)
	if err != nil {
		return "", false
	}
	var v struct {
		Stmts []struct {
			Stmt struct {
				SelectStmt struct {
					TargetList []struct {
						ResTarget struct {
							Val map[string]json.RawMessage `json:"val"`
						}
					} `json:"targetList"`
				}
			} `json:"stmt"`
		} `json:"stmts"`
	}
	if json.Unmarshal([]byte(js), &v) != nil || len(v.Stmts) != 1 || len(v.Stmts[0].Stmt.SelectStmt.TargetList) != 1 {
		return "", false
	}
	c, ok := v.Stmts[0].Stmt.SelectStmt.TargetList[0].ResTarget.Val["A_Const"]
	if !ok {
		return "", false
	}
	var a struct {
		Sval *struct {
			Sval string `json:"sval"`
		} `json:"sval"`
	}
	if json.Unmarshal(c, &a) != nil || a.Sval == nil {
		return "", false
	}
	return a.Sval.Sval, true
}

// defElems maps the names of a DefElem list (DO's args, CREATE
// FUNCTION's options) to their string values; a list argument (AS 'obj',
// 'link') gives its first string.
func (w *walker) defElems(list int32) map[string]string {
	t := w.t
	out := map[string]string{}
	for c := range t.children(list) {
		d := t.get(c, "DefElem")
		if d < 0 {
			continue
		}
		arg := t.get(d, "arg")
		if l := t.get(t.get(arg, "List"), "items"); l >= 0 {
			for s := range t.children(l) {
				arg = s
				break
			}
		}
		out[t.str(t.get(d, "defname"))] = t.str(t.get(t.get(arg, "String"), "sval"))
	}
	return out
}

// codeStmt handles the statements that put code into the database.
func (w *walker) codeStmt(typ string, b int32) {
	t := w.t
	switch typ {
	case "DoStmt":
		w.more = append(w.more, FlagDoBlock)
		args := w.defElems(t.get(b, "args"))
		w.body(args["language"], args["as"])
	case "CreateFunctionStmt":
		if t.bool(t.get(b, "is_procedure")) {
			w.more = append(w.more, FlagCreateProcedure)
		} else {
			w.more = append(w.more, FlagCreateFunction)
		}
		if sb := t.get(b, "sql_body"); sb >= 0 {
			// BEGIN ATOMIC: parsed already; its statements' kinds count.
			w.bodyKinds(sb)
			return
		}
		opts := w.defElems(t.get(b, "options"))
		if src, ok := opts["as"]; ok {
			w.fn = w.text
			w.body(opts["language"], src)
			w.fn = ""
		}
	case "RuleStmt":
		w.more = append(w.more, FlagCreateRule)
		w.bodyKinds(t.get(b, "actions"))
	case "CreateTrigStmt":
		w.more = append(w.more, FlagCreateTrigger)
	case "CreateEventTrigStmt":
		w.more = append(w.more, FlagCreateTrigger, FlagEventTrigger)
	}
}

// bodyKinds adds the kinds of the statements nested under n (a rule's
// actions, a BEGIN ATOMIC body) to the walker's nested statements; their
// tables and functions are collected by the walk.
func (w *walker) bodyKinds(n int32) {
	if n < 0 {
		return
	}
	for c := range w.t.children(n) {
		key := w.t.n[c].key
		if strings.HasSuffix(key, "Stmt") {
			w.subs = append(w.subs, ruleset.Statement{Kind: w.kindOf(key, c), HasWhere: w.t.get(c, "whereClause") >= 0})
		}
		w.bodyKinds(c)
	}
}
