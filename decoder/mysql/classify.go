package mysql

// This file classifies MySQL and MariaDB statement text into the
// ruleset's Statement vocabulary (sql.kind, tables, functions, flags,
// has_where, has_limit) with TiDB's MySQL parser, after applying the
// text's executable comments as the server would (comments.go).
//
// Kinds reuse PostgreSQL's words where the meaning is the same:
//
//	select       SELECT, TABLE, VALUES, a set operation (UNION ...), DO
//	             (evaluates expressions and drops the result)
//	copy_out     SELECT ... INTO OUTFILE: writes rows to a server file,
//	             as COPY ... TO a file does (flag into_outfile). INTO
//	             DUMPFILE does not parse (TiDB's parser lacks it): denied.
//	copy_in      LOAD DATA [LOCAL] INFILE (flag load_data or
//	             load_data_local)
//	insert       INSERT, INSERT ... SELECT, INSERT ... ON DUPLICATE KEY
//	             UPDATE (as INSERT ... ON CONFLICT is in PostgreSQL)
//	delete       DELETE, single or multi-table; also REPLACE (flag
//	             replace), which deletes every row whose key the new rows
//	             collide with; has_where is false for REPLACE, which has
//	             no WHERE
//	update       UPDATE, single or multi-table
//	create, alter, drop, truncate
//	             DDL; CREATE/ALTER/DROP/RENAME USER and ROLE, SET PASSWORD
//	             and SET DEFAULT ROLE are create, alter or drop with flag
//	             user_admin; RENAME TABLE is alter
//	grant, revoke
//	             GRANT and REVOKE of privileges, roles or proxy (flag
//	             user_admin)
//	set          SET of variables, SET NAMES, SET CHARACTER SET, SET ROLE,
//	             and USE (which changes what unqualified names mean)
//	show         SHOW, DESCRIBE
//	explain      EXPLAIN, EXPLAIN FOR CONNECTION; EXPLAIN ANALYZE runs its
//	             statement and takes that statement's classification
//	transaction  BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT,
//	             RELEASE SAVEPOINT
//	call         CALL (the procedure is listed in functions)
//	execute      EXECUTE of an SQL-level prepared statement (flag
//	             dynamic_sql): what it runs is not known from its text
//	lock         LOCK TABLES, UNLOCK TABLES
//	vacuum       ANALYZE TABLE, OPTIMIZE TABLE
//	other        DEALLOCATE PREPARE, PREPARE ... FROM @variable (flag
//	             dynamic_sql), KILL, FLUSH, SHUTDOWN, RESTART, BINLOG
//	             (flag server_admin), HELP
//	empty        no statement at all (";" or only comments)
//
// PREPARE name FROM 'text' takes the classification of text (classified
// under the same Dialect) and adds dynamic_sql.
//
// Tables are lower-cased, and schema-qualified when written so ("db.t"):
// MySQL compares table names case-sensitively on Linux by default
// (lower_case_table_names=0) but not with 1 or 2, and a rule naming a
// table must not be bypassed by writing it in capitals. CTE names are not
// tables where they are in scope. Functions are lower-cased too (they are
// case-insensitive), schema-qualified when written so. Unqualified names
// are as written: after USE other_db, "t" is other_db.t.
//
// A statement the parser rejects is an error and the caller denies it.
// That includes MariaDB syntax TiDB's parser lacks (RETURNING, FOR
// SYSTEM_TIME, EXECUTE IMMEDIATE, HANDLER, INSTALL PLUGIN, SET STATEMENT
// ... FOR, CREATE TRIGGER, ...) and MySQL syntax it lacks too (SELECT ...
// INTO @variable or DUMPFILE, CHECK TABLE, XA, SET PERSIST). Statements
// only TiDB has (BACKUP, IMPORT INTO, ADMIN, SPLIT, ...) parse, but this
// classifier refuses them.

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	pmysql "github.com/pingcap/tidb/pkg/parser/mysql"
	_ "github.com/pingcap/tidb/pkg/parser/test_driver" // value expressions for the parser

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

// Dialect is what changes how the server lexes and runs a statement's
// text. The zero Dialect is a MySQL server of unknown version, in which
// every versioned comment (/*!50000 ... */) is an error.
type Dialect struct {
	// MariaDB is set when the server is MariaDB: /*M! ... */ comments run.
	MariaDB bool
	// Version is the server's version as executable comments compare it:
	// 101119 for MariaDB 10.11.19 (the real version, not the "5.5.5-"
	// prefix of its greeting), 80036 for MySQL 8.0.36. Zero means unknown:
	// a versioned comment is then an error.
	Version int
	// NoBackslashEscapes is set when SERVER_STATUS_NO_BACKSLASH_ESCAPES
	// was set in the server's last status: a backslash in a string is then
	// an ordinary character.
	NoBackslashEscapes bool
	// ANSIQuotes is set when the session's sql_mode is known to hold
	// ANSI_QUOTES: "x" is then a name, in which a backslash does not
	// escape. The wire does not say, so it is usually unset; a text whose
	// lexing would differ with it (\" inside "...") is then an error.
	ANSIQuotes bool
	// Charset is the session's character_set_client when known (empty:
	// utf8mb4 or another character set in which every byte below 0x80 is
	// a character of its own). For big5, cp932, gbk, gb18030 and sjis, a
	// text with a byte of 0x80 or more before a backslash or backquote is
	// an error: that pair may be one character.
	Charset string
}

// DefaultDialect is what sluice rules test and explain classify with:
// MariaDB 10.11.
var DefaultDialect = Dialect{MariaDB: true, Version: 101100}

// Flags set by the MySQL classifier, in sql.flags.
const (
	// FlagIntoOutfile: SELECT ... INTO OUTFILE writes a file on the
	// server (INTO DUMPFILE does not parse, so it is denied).
	FlagIntoOutfile = "into_outfile"
	// FlagLoadFile: a LOAD_FILE call, which reads a file on the server.
	FlagLoadFile = "load_file"
	// FlagLoadDataLocal: LOAD DATA LOCAL INFILE, which makes the client
	// send a file of its own (the decoder must check the server's request
	// for it against the statement).
	FlagLoadDataLocal = "load_data_local"
	// FlagLoadData: LOAD DATA INFILE without LOCAL, which reads a file on
	// the server.
	FlagLoadData = "load_data"
	// FlagDangerousFunction: a call that reaches the server's files or
	// programs: load_file and the lib_mysqludf_sys functions (sys_exec,
	// sys_eval, sys_get, sys_set), as PostgreSQL's flag of that name.
	FlagDangerousFunction = "dangerous_function"
	// FlagSystemVariableWrite: a write to a system variable: any GLOBAL
	// one (SET PERSIST does not parse: denied), and any session one but
	// the few that drivers set
	// as housekeeping (autocommit, transaction isolation and read-only,
	// time_zone, timeouts, sql_select_limit, max_execution_time,
	// group_concat_max_len, and the character sets, which set
	// FlagLexingChange instead), whatever the spelling (SET x, SET SESSION
	// x, SET @@x, SET @@global.x) — so SET sql_mode is one. Also a MySQL
	// SET_VAR optimizer hint.
	FlagSystemVariableWrite = "system_variable_write"
	// FlagLexingChange: a statement that changes how the server lexes the
	// session's next statements: a write to sql_mode (NO_BACKSLASH_ESCAPES,
	// ANSI_QUOTES) or to character_set_client (SET NAMES, SET CHARACTER
	// SET). Such a statement followed by another in the same text is an
	// error, since the rest would be lexed under a mode the classifier
	// does not know.
	FlagLexingChange = "lexing_change"
	// FlagUserAdmin: CREATE/ALTER/DROP/RENAME USER, CREATE/DROP ROLE,
	// GRANT, REVOKE, SET PASSWORD, SET DEFAULT ROLE.
	FlagUserAdmin = "user_admin"
	// FlagDynamicSQL: PREPARE and EXECUTE of SQL-level prepared
	// statements. The text of PREPARE ... FROM @variable and what an
	// EXECUTE runs are not in the statement's text.
	FlagDynamicSQL = "dynamic_sql"
	// FlagReplace: REPLACE, classified as delete.
	FlagReplace = "replace"
	// FlagServerAdmin: KILL, FLUSH, SHUTDOWN, RESTART, BINLOG (which
	// applies raw replication events) and ALTER INSTANCE.
	FlagServerAdmin = "server_admin"
)

// ErrUnsupported is returned (wrapped) for a statement the parser accepts
// but the classifier does not know, such as TiDB's own statements. Callers
// deny it.
var ErrUnsupported = errors.New("statement not supported by the MySQL classifier")

// Classify classifies text under DefaultDialect; it is the classifier
// that sluice rules test and explain use.
func Classify(text string) (ruleset.Statement, error) {
	return ClassifyIn(DefaultDialect, text)
}

// ClassifyIn parses text, which may hold several statements, as the
// server of d would, and returns one Statement for it all: the kind,
// has_where and has_limit of its most dangerous statement
// (decoder.MergeStatements) and every table, function and flag of any of
// them, sorted. An error (a parse error, text the classifier cannot lex
// with certainty, an unsupported statement) means the caller denies it.
func ClassifyIn(d Dialect, text string) (ruleset.Statement, error) {
	st, _, err := ClassifyForCache(d, text)
	return st, err
}

// ClassifyForCache is ClassifyIn for a cache that also keys statements by
// their normalized text (see normalizer). literalFree is false when the
// classification looked at a literal's value (the text of PREPARE ...
// FROM 'text') or when the text kept an optimizer hint, which the
// normalized text drops; only a literal-free classification may be
// stored under the normalized text. On error literalFree is false.
func ClassifyForCache(d Dialect, text string) (st ruleset.Statement, literalFree bool, err error) {
	parts, literalFree, err := classifyAll(d, text, 0)
	if err != nil {
		return ruleset.Statement{}, false, err
	}
	return decoder.MergeStatements(parts, text), literalFree, nil
}

// maxPrepareDepth bounds PREPARE ... FROM 'PREPARE ...' nesting (which
// the server refuses anyway).
const maxPrepareDepth = 2

var parserPool = sync.Pool{New: func() any { return parser.New() }}

// sqlMode is the parser's mode for d: the server's lexing switches.
func (d Dialect) sqlMode() pmysql.SQLMode {
	var mode pmysql.SQLMode
	if d.NoBackslashEscapes {
		mode |= pmysql.ModeNoBackslashEscapes
	}
	if d.ANSIQuotes {
		mode |= pmysql.ModeANSIQuotes
	}
	return mode
}

func classifyAll(d Dialect, text string, depth int) (parts []ruleset.Statement, literalFree bool, err error) {
	expanded, hints, err := expand(d, text)
	if err != nil {
		return nil, false, err
	}
	// The statements live in the parser's memory until its next parse:
	// it goes back to the pool only when they have been walked.
	p := parserPool.Get().(*parser.Parser)
	defer func() {
		if r := recover(); r != nil {
			// TiDB's parser panics on some input (an integer literal of
			// 80 digits reaches its test driver's unimplemented decimal
			// code; found by FuzzClassify). Deny the statement and drop
			// the parser, whose state is unknown.
			parts, literalFree, err = nil, false, fmt.Errorf("%w: the parser failed: %v", ErrUnsupported, r)
			return
		}
		parserPool.Put(p)
	}()
	p.SetSQLMode(d.sqlMode())
	p.SetMariaDB(d.MariaDB)
	stmts, _, err := p.ParseSQL(expanded)
	if err != nil {
		return nil, false, fmt.Errorf("parse statement: %w", err)
	}
	if len(stmts) == 0 {
		return []ruleset.Statement{{Kind: decoder.KindEmpty, Text: text}}, !hints, nil
	}
	out := make([]ruleset.Statement, 0, len(stmts))
	literalFree = !hints
	for i, s := range stmts {
		w := walker{d: d, depth: depth}
		st, err := w.classify(s)
		if err != nil {
			return nil, false, err
		}
		if w.flags&fLexing != 0 && i < len(stmts)-1 {
			return nil, false, fmt.Errorf("%w: a change of sql_mode or character set followed by more statements", ErrUncertainLexing)
		}
		st.Text = strings.TrimSpace(s.Text())
		literalFree = literalFree && !w.valueDep
		out = append(out, st)
	}
	return out, literalFree, nil
}

// flag is a bit set of classifier flags.
type flag uint16

const (
	fIntoOutfile flag = 1 << iota
	fLoadFile
	fLoadDataLocal
	fLoadData
	fDangerous
	fSysVar
	fLexing
	fUserAdmin
	fDynamic
	fReplace
	fServerAdmin
)

// flagNames are the flags in sorted order of their names.
var flagNames = []struct {
	f    flag
	name string
}{
	{fDangerous, FlagDangerousFunction}, {fDynamic, FlagDynamicSQL}, {fIntoOutfile, FlagIntoOutfile},
	{fLexing, FlagLexingChange}, {fLoadData, FlagLoadData}, {fLoadDataLocal, FlagLoadDataLocal},
	{fLoadFile, FlagLoadFile}, {fReplace, FlagReplace}, {fServerAdmin, FlagServerAdmin},
	{fSysVar, FlagSystemVariableWrite}, {fUserAdmin, FlagUserAdmin},
}

func (f flag) names() []string {
	if f == 0 {
		return nil
	}
	var out []string
	for _, fn := range flagNames {
		if f&fn.f != 0 {
			out = append(out, fn.name)
		}
	}
	return out
}

// walker collects tables, functions and flags from one statement's tree.
type walker struct {
	d             Dialect
	depth         int // PREPARE nesting
	tables, funcs []string
	flags         flag
	more          []string // flags of a prepared text
	valueDep      bool     // the classification looked at a value
	scopes        []*cteScope
	skip          map[*ast.TableName]bool // names that are not tables (a multi-table DELETE's aliases)
	level         int                     // how deep walk is
}

// cteScope holds the CTE names visible under the node that owns a WITH.
type cteScope struct {
	owner ast.Node
	names []string
}

// classify classifies one top-level statement.
func (w *walker) classify(s ast.StmtNode) (ruleset.Statement, error) {
	st, err := w.stmt(s)
	if err != nil {
		return ruleset.Statement{}, err
	}
	st.Tables, st.Functions = decoder.SortedSet(w.tables), decoder.SortedSet(w.funcs)
	st.Flags = w.flags.names()
	if len(w.more) > 0 {
		st.Flags = decoder.SortedSet(append(st.Flags, w.more...))
	}
	return st, nil
}

// stmt classifies statement s and walks it.
func (w *walker) stmt(s ast.StmtNode) (ruleset.Statement, error) {
	var st ruleset.Statement
	switch n := s.(type) {
	case *ast.ExplainStmt:
		if n.Analyze && n.Stmt != nil {
			// EXPLAIN ANALYZE runs the statement: classify what it runs.
			return w.stmt(n.Stmt)
		}
		if n.Explore || n.SQLDigest != "" || n.PlanDigest != "" || n.Stmt == nil {
			return st, fmt.Errorf("%w: %T", ErrUnsupported, s) // TiDB's EXPLAIN EXPLORE and digests
		}
		st.Kind = "explain"
		if _, ok := n.Stmt.(*ast.ShowStmt); ok {
			st.Kind = "show" // DESCRIBE t
		}
	case *ast.PrepareStmt:
		w.flags |= fDynamic
		if n.SQLVar != nil {
			st.Kind = "other"
			break
		}
		// The server lexes the string's value as a statement of its own.
		if w.depth >= maxPrepareDepth {
			return st, fmt.Errorf("%w: PREPARE nested too deep", ErrUnsupported)
		}
		w.valueDep = true
		parts, _, err := classifyAll(w.d, n.SQLText, w.depth+1)
		if err != nil {
			return st, fmt.Errorf("prepared text: %w", err)
		}
		inner := decoder.MergeStatements(parts, n.SQLText)
		w.tables = append(w.tables, inner.Tables...)
		w.funcs = append(w.funcs, inner.Functions...)
		w.more = append(w.more, inner.Flags...)
		inner.Text, inner.Tables, inner.Functions, inner.Flags = "", nil, nil, nil
		return inner, nil
	default:
		kind, err := kindOf(s)
		if err != nil {
			return st, err
		}
		st.Kind = kind
	}
	switch n := s.(type) {
	case *ast.SelectStmt:
		st.HasWhere, st.HasLimit = n.Where != nil, n.Limit != nil
	case *ast.SetOprStmt:
		st.HasLimit = n.Limit != nil
	case *ast.UpdateStmt:
		st.HasWhere, st.HasLimit = n.Where != nil, n.Limit != nil
	case *ast.DeleteStmt:
		st.HasWhere, st.HasLimit = n.Where != nil, n.Limit != nil
	}
	if err := w.walk(s); err != nil {
		return st, err
	}
	if st.Kind == "select" && w.flags&fIntoOutfile != 0 {
		st.Kind = "copy_out"
	}
	return st, nil
}

// kindOf maps a statement to its kind; see the file comment.
func kindOf(s ast.StmtNode) (string, error) {
	switch n := s.(type) {
	case *ast.SelectStmt, *ast.SetOprStmt, *ast.DoStmt:
		return "select", nil
	case *ast.InsertStmt:
		if n.IsReplace {
			return "delete", nil
		}
		return "insert", nil
	case *ast.UpdateStmt:
		return "update", nil
	case *ast.DeleteStmt:
		return "delete", nil
	case *ast.LoadDataStmt:
		return "copy_in", nil
	case *ast.CreateDatabaseStmt, *ast.CreateTableStmt, *ast.CreateViewStmt, *ast.CreateIndexStmt,
		*ast.CreateSequenceStmt, *ast.ProcedureInfo, *ast.CreateUserStmt:
		return "create", nil
	case *ast.DropDatabaseStmt, *ast.DropTableStmt, *ast.DropIndexStmt, *ast.DropSequenceStmt,
		*ast.DropProcedureStmt, *ast.DropUserStmt:
		return "drop", nil
	case *ast.AlterDatabaseStmt, *ast.AlterTableStmt, *ast.AlterSequenceStmt, *ast.RenameTableStmt,
		*ast.AlterUserStmt, *ast.RenameUserStmt, *ast.SetPwdStmt, *ast.SetDefaultRoleStmt, *ast.AlterInstanceStmt:
		return "alter", nil
	case *ast.TruncateTableStmt:
		return "truncate", nil
	case *ast.GrantStmt, *ast.GrantRoleStmt, *ast.GrantProxyStmt:
		return "grant", nil
	case *ast.RevokeStmt, *ast.RevokeRoleStmt:
		return "revoke", nil
	case *ast.SetStmt, *ast.SetRoleStmt, *ast.UseStmt:
		return "set", nil
	case *ast.ShowStmt:
		return "show", nil
	case *ast.ExplainForStmt:
		return "explain", nil
	case *ast.BeginStmt, *ast.CommitStmt, *ast.RollbackStmt, *ast.SavepointStmt, *ast.ReleaseSavepointStmt:
		return ruleset.KindTransaction, nil
	case *ast.CallStmt:
		return "call", nil
	case *ast.ExecuteStmt:
		return "execute", nil
	case *ast.LockTablesStmt, *ast.UnlockTablesStmt:
		return "lock", nil
	case *ast.AnalyzeTableStmt, *ast.OptimizeTableStmt:
		return "vacuum", nil
	case *ast.DeallocateStmt, *ast.KillStmt, *ast.FlushStmt, *ast.ShutdownStmt, *ast.RestartStmt,
		*ast.BinlogStmt, *ast.HelpStmt:
		return "other", nil
	}
	return "", fmt.Errorf("%w: %T", ErrUnsupported, s)
}

// enter inspects node n before its children, and reports whether to skip
// them.
func (w *walker) enter(n ast.Node) (skip bool, err error) {
	switch n := n.(type) {
	case *ast.WithClause:
		return true, w.with(n)
	case *ast.TableName:
		w.table(n)
	case *ast.FuncCallExpr:
		w.call(n.Schema.L, n.FnName.L)
	case *ast.AggregateFuncExpr:
		w.call("", strings.ToLower(n.F))
	case *ast.WindowFuncExpr:
		w.call("", strings.ToLower(n.Name))
	case *ast.VariableExpr:
		if n.Value != nil && n.IsSystem {
			w.flags |= fSysVar
		}
	case *ast.TableOptimizerHint:
		if n.HintName.L == "set_var" {
			w.flags |= fSysVar
		}
	case *ast.SelectStmt:
		if n.SelectIntoOpt != nil && n.SelectIntoOpt.Tp != ast.SelectIntoVars {
			w.flags |= fIntoOutfile
		}
	case *ast.InsertStmt:
		if n.IsReplace {
			w.flags |= fReplace
		}
	case *ast.DeleteStmt:
		if n.IsMultiTable && n.Tables != nil && n.TableRefs != nil {
			w.deleteAliases(n)
		}
	case *ast.LoadDataStmt:
		if n.FileLocRef == ast.FileLocClient {
			w.flags |= fLoadDataLocal
		} else {
			w.flags |= fLoadData
		}
	case *ast.SetStmt:
		for _, v := range n.Variables {
			w.setVariable(v)
		}
	case *ast.CreateUserStmt, *ast.AlterUserStmt, *ast.DropUserStmt, *ast.RenameUserStmt, *ast.SetPwdStmt,
		*ast.SetDefaultRoleStmt, *ast.GrantRoleStmt, *ast.GrantProxyStmt, *ast.RevokeRoleStmt:
		w.flags |= fUserAdmin
	case *ast.GrantStmt:
		w.flags |= fUserAdmin
		w.grantLevel(n.Level)
	case *ast.RevokeStmt:
		w.flags |= fUserAdmin
		w.grantLevel(n.Level)
	case *ast.PrepareStmt:
		// Nested in a procedure body: its text is classified only at the
		// top level.
		w.flags |= fDynamic
	case *ast.ExecuteStmt:
		w.flags |= fDynamic
	case *ast.KillStmt, *ast.FlushStmt, *ast.ShutdownStmt, *ast.RestartStmt, *ast.BinlogStmt, *ast.AlterInstanceStmt:
		w.flags |= fServerAdmin
	case *ast.ProcedureInfo:
		// The name is a routine's, not a table's; the body is walked
		// like any statement (TiDB's own visitor skips it).
		if n.ProcedureName != nil {
			w.call(n.ProcedureName.Schema.L, n.ProcedureName.Name.L)
		}
		for _, p := range n.ProcedureParam {
			if err := w.walk(p); err != nil {
				return true, err
			}
		}
		return true, w.walk(n.ProcedureBody)
	case *ast.DropProcedureStmt:
		if n.ProcedureName != nil {
			w.call(n.ProcedureName.Schema.L, n.ProcedureName.Name.L)
		}
		return true, nil
	}
	return false, nil
}

// maxWalkDepth bounds how deep a tree is walked; deeper statements are
// errors (denied).
const maxWalkDepth = 10000

var (
	nodeType = reflect.TypeFor[ast.Node]()
	astPkg   = reflect.TypeFor[ast.TableName]().PkgPath()
)

// walk visits n and every node under it. It reaches children through
// reflection over every exported field, not through TiDB's Accept
// methods, some of which skip children that matter here (a stored
// procedure's statements, OPTIMIZE TABLE's tables): a child a method
// forgot would be a call or a table the rules never see.
func (w *walker) walk(n ast.Node) error {
	if n == nil {
		return nil
	}
	v := reflect.ValueOf(n)
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return nil
		}
		v = v.Elem()
	}
	w.level++
	defer func() { w.level-- }()
	if w.level > maxWalkDepth {
		return fmt.Errorf("%w: statement nested too deep", ErrUnsupported)
	}
	if with := withOf(n); with != nil {
		// The owner's WITH is walked first, whatever its field order:
		// its names are in scope for the rest of the statement.
		w.scopes = append(w.scopes, &cteScope{owner: n})
		defer func() { w.scopes = w.scopes[:len(w.scopes)-1] }()
		if err := w.walk(with); err != nil {
			return err
		}
	}
	skip, err := w.enter(n)
	if err != nil || skip || v.Kind() != reflect.Struct {
		return err
	}
	return w.structFields(v)
}

// structFields walks the nodes in a struct's exported fields.
func (w *walker) structFields(v reflect.Value) error {
	t := v.Type()
	for i := 0; i < v.NumField(); i++ {
		if !t.Field(i).IsExported() {
			continue
		}
		f := v.Field(i)
		if with, ok := f.Interface().(*ast.WithClause); ok && with != nil && w.owns(with) {
			continue // walked first, by walk
		}
		if err := w.value(f); err != nil {
			return err
		}
	}
	return nil
}

// value walks the nodes in v: a node, or the pointers, interfaces, slices,
// arrays and ast package structs that hold them.
func (w *walker) value(v reflect.Value) error {
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		if n, ok := v.Interface().(ast.Node); ok {
			return w.walk(n)
		}
		return w.value(v.Elem())
	case reflect.Struct:
		if v.Type().PkgPath() == astPkg {
			return w.structFields(v)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if err := w.value(v.Index(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// owns reports whether with is the WITH clause of the innermost scope's
// owner, which walk has already walked.
func (w *walker) owns(with *ast.WithClause) bool {
	k := len(w.scopes)
	return k > 0 && withOf(w.scopes[k-1].owner) == with
}

// withOf returns the WITH clause a node owns, if any.
func withOf(n ast.Node) *ast.WithClause {
	switch n := n.(type) {
	case *ast.SelectStmt:
		return n.With
	case *ast.SetOprStmt:
		return n.With
	case *ast.SetOprSelectList:
		return n.With
	case *ast.UpdateStmt:
		return n.With
	case *ast.DeleteStmt:
		return n.With
	}
	return nil
}

// with walks each CTE's query with the names it can see: those before it,
// or every one of the clause in a WITH RECURSIVE; then every name is in
// scope for the rest of the statement that owns the clause. Names compare
// case-insensitively, as MariaDB 10.11 compares them.
func (w *walker) with(n *ast.WithClause) error {
	if len(w.scopes) == 0 || !w.owns(n) {
		// A WITH no node withOf knows owns: its names shadow nothing,
		// so every reference is reported as a table.
		for _, cte := range n.CTEs {
			if err := w.walk(cte.Query); err != nil {
				return err
			}
		}
		return nil
	}
	scope := w.scopes[len(w.scopes)-1]
	for i, cte := range n.CTEs {
		visible := i
		if n.IsRecursive {
			visible = len(n.CTEs) // MariaDB 10.11: later ones too
		}
		scope.names = scope.names[:0]
		for _, c := range n.CTEs[:visible] {
			scope.names = append(scope.names, c.Name.L)
		}
		if err := w.walk(cte.Query); err != nil {
			return err
		}
	}
	scope.names = scope.names[:0]
	for _, c := range n.CTEs {
		scope.names = append(scope.names, c.Name.L)
	}
	return nil
}

// inCTEScope reports whether an unqualified name is a CTE's here.
func (w *walker) inCTEScope(name string) bool {
	for _, s := range w.scopes {
		for _, n := range s.names {
			if n == name {
				return true
			}
		}
	}
	return false
}

func (w *walker) table(n *ast.TableName) {
	if w.skip[n] || n.Name.L == "" {
		return
	}
	if n.Schema.L != "" {
		w.tables = append(w.tables, strings.Clone(n.Schema.L+"."+n.Name.L))
		return
	}
	if w.inCTEScope(n.Name.L) {
		return
	}
	w.tables = append(w.tables, strings.Clone(n.Name.L))
}

// deleteAliases marks the names in a multi-table DELETE's list that are
// aliases of its FROM tables, so they are not reported as tables.
func (w *walker) deleteAliases(n *ast.DeleteStmt) {
	aliases := map[string]bool{}
	n.TableRefs.Accept(aliasCollector(aliases))
	for _, t := range n.Tables.Tables {
		if t.Schema.L == "" && aliases[t.Name.L] {
			if w.skip == nil {
				w.skip = map[*ast.TableName]bool{}
			}
			w.skip[t] = true
		}
	}
}

// aliasCollector records the aliases of table sources.
type aliasCollector map[string]bool

func (a aliasCollector) Enter(n ast.Node) (ast.Node, bool) {
	if ts, ok := n.(*ast.TableSource); ok && ts.AsName.L != "" {
		a[ts.AsName.L] = true
	}
	return n, false
}

func (a aliasCollector) Leave(n ast.Node) (ast.Node, bool) { return n, true }

// grantLevel reports the table a GRANT or REVOKE is on.
func (w *walker) grantLevel(l *ast.GrantLevel) {
	if l == nil || l.Level != ast.GrantLevelTable || l.TableName == "" || l.TableName == "*" {
		return
	}
	name := strings.ToLower(l.TableName)
	if l.DBName != "" {
		name = strings.ToLower(l.DBName) + "." + name
	}
	w.tables = append(w.tables, name)
}

// call records a function call and flags the dangerous ones.
func (w *walker) call(schema, name string) {
	if name == "" {
		return
	}
	full := name
	if schema != "" {
		full = schema + "." + name
	}
	w.funcs = append(w.funcs, strings.Clone(full))
	switch name {
	case "load_file":
		w.flags |= fLoadFile | fDangerous
	case "sys_exec", "sys_eval", "sys_get", "sys_set":
		w.flags |= fDangerous
	}
}

// housekeeping are the session variables drivers set that do not count
// as system_variable_write (see FlagSystemVariableWrite).
var housekeeping = map[string]bool{
	"autocommit": true, "transaction_isolation": true, "tx_isolation": true, "tx_isolation_one_shot": true,
	"transaction_read_only": true, "tx_read_only": true, "time_zone": true, "wait_timeout": true,
	"interactive_timeout": true, "net_read_timeout": true, "net_write_timeout": true,
	"sql_select_limit": true, "max_execution_time": true, "max_statement_time": true,
	"group_concat_max_len": true,
	// Character sets: lexing_change instead.
	"character_set_client": true, "character_set_connection": true, "character_set_results": true,
	"collation_connection": true,
}

// lexing are the variables whose change alters how later statements are
// lexed.
var lexing = map[string]bool{"sql_mode": true, "character_set_client": true}

func (w *walker) setVariable(v *ast.VariableAssignment) {
	switch v.Name {
	case ast.SetNames, ast.SetCharset:
		w.flags |= fLexing
		return
	}
	if !v.IsSystem {
		return // a user variable
	}
	name := strings.ToLower(v.Name)
	if lexing[name] {
		w.flags |= fLexing
	}
	if v.IsGlobal || v.IsInstance || !housekeeping[name] {
		w.flags |= fSysVar
	}
}
