package postgres

import (
	"reflect"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"testing"

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
			ruleset.Statement{Kind: "select", Functions: []string{"count", "pg_catalog.pg_read_file"}}},
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
		{"set", "SET search_path = app", ruleset.Statement{Kind: "set"}},
		{"show", "SHOW server_version", ruleset.Statement{Kind: "show"}},
		{"begin", "BEGIN", ruleset.Statement{Kind: "transaction"}},
		{"commit", "COMMIT", ruleset.Statement{Kind: "transaction"}},
		{"explain", "EXPLAIN DELETE FROM users", ruleset.Statement{Kind: "explain", Tables: []string{"users"}}},
		{"explain analyze runs it", "EXPLAIN ANALYZE DELETE FROM users", ruleset.Statement{Kind: "delete", Tables: []string{"users"}}},
		{"explain analyze false", "EXPLAIN (ANALYZE false) DELETE FROM users", ruleset.Statement{Kind: "explain", Tables: []string{"users"}}},
		{"prepare", "PREPARE p AS DELETE FROM users", ruleset.Statement{Kind: "delete", Tables: []string{"users"}}},
		{"execute", "EXECUTE p", ruleset.Statement{Kind: "execute"}},
		{"call", "CALL app.refresh(1)", ruleset.Statement{Kind: "call", Functions: []string{"app.refresh"}}},
		{"do", "DO $$ BEGIN PERFORM 1; END $$", ruleset.Statement{Kind: "do"}},
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
		st, err := Classify(s)
		if err == nil && st.Kind == "" {
			t.Fatalf("Classify(%q) returned no kind", s)
		}
	})
}

var benchQueries = map[string]string{
	"pgbench-S": "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
	"join3": "SELECT u.id, o.total, p.name FROM users u JOIN orders o ON o.user_id = u.id " +
		"JOIN products p ON p.id = o.product_id WHERE u.created_at > now() - interval '1 day' ORDER BY o.total DESC LIMIT 50",
}

func BenchmarkClassify(b *testing.B) {
	for name, q := range benchQueries {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Classify(q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParser compares the two pg_query entry points Classify could
// build on: it uses ParseToJSON plus a JSON walk, because Parse's protobuf
// decoding alone costs more than both.
func BenchmarkParser(b *testing.B) {
	for name, q := range benchQueries {
		b.Run("ParseToJSON/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pg_query.ParseToJSON(q); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Parse/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pg_query.Parse(q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
