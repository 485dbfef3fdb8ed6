package postgres

import (
	"slices"
	"testing"
)

// TestBodies: SQL inside DO blocks, functions, procedures and rules is
// classified with the statement that carries it, and what cannot be read
// is flagged; none of it is cached under the normalised text.
func TestBodies(t *testing.T) {
	for _, tt := range []struct {
		sql, kind string
		tables    []string
		flags     []string
	}{
		{"DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", "drop", []string{"users"}, []string{FlagDoBlock}},
		{"DO $$ BEGIN EXECUTE format('DROP TABLE %I', 'users'); END $$", "do", nil, []string{FlagDoBlock, FlagDynamicSQL}},
		{"DO $$ DECLARE n int; BEGIN n := (SELECT count(*) FROM secret); END $$", "do", []string{"secret"}, []string{FlagDoBlock}},
		{"DO LANGUAGE plpython3u $$ plpy.execute('DROP TABLE t') $$", "do", nil, []string{FlagDoBlock, FlagDynamicSQL}},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE victim'", "drop", []string{"victim"}, []string{FlagCreateFunction}},
		{"CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $b$ BEGIN DELETE FROM t; END $b$", "delete", []string{"t"}, []string{FlagCreateFunction}},
		{"CREATE PROCEDURE p() BEGIN ATOMIC DELETE FROM t; END", "delete", []string{"t"}, []string{FlagCreateProcedure}},
		{"CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_read_file('/etc/passwd'); END $$", "create", nil, []string{FlagCreateProcedure, FlagDangerousFunction}},
		{"CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM victim", "delete", []string{"t", "victim"}, []string{FlagCreateRule}},
		{"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create", []string{"t"}, []string{FlagCreateTrigger}},
		{"CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()", "create", nil, []string{FlagCreateTrigger}},
		{"CREATE FUNCTION g() RETURNS int LANGUAGE plpython3u AS 'return 1'", "create", nil, []string{FlagCreateFunction, FlagDynamicSQL}},
	} {
		st, literalFree, err := ClassifyForCache(tt.sql)
		if err != nil {
			t.Errorf("%s: %v", tt.sql, err)
			continue
		}
		if st.Kind != tt.kind || !slices.Equal(st.Tables, tt.tables) || !slices.Equal(st.Flags, tt.flags) {
			t.Errorf("%s:\n got kind %s tables %v flags %v\nwant kind %s tables %v flags %v", tt.sql, st.Kind, st.Tables, st.Flags, tt.kind, tt.tables, tt.flags)
		}
		if literalFree && !slices.Contains(tt.flags, FlagCreateTrigger) && !slices.Contains(tt.flags, FlagCreateRule) && tt.kind != "delete" {
			t.Errorf("%s: a body's classification must not be shared through the normalised text", tt.sql)
		}
	}
	// Two functions that differ only in their body text never share a
	// cached classification.
	c := NewCache(0)
	c.Classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'SELECT 1'")
	if st, _ := c.Classify("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE victim'"); st.Kind != "drop" {
		t.Fatalf("cached body classification reused: %+v", st)
	}
}

// TestSQLPrepared: EXECUTE is decided as what the session prepared;
// unknown names are flagged; DEALLOCATE and DISCARD ALL forget.
func TestSQLPrepared(t *testing.T) {
	var p sqlPrepared
	run := func(text string) (string, []string, []string) {
		st, err := Classify(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		st = p.apply(st, text)
		return st.Kind, st.Tables, st.Flags
	}
	if k, tb, _ := run("PREPARE del AS DELETE FROM victims"); k != "delete" || !slices.Equal(tb, []string{"victims"}) {
		t.Fatalf("PREPARE: %s %v", k, tb)
	}
	if k, tb, _ := run("EXECUTE del"); k != "delete" || !slices.Equal(tb, []string{"victims"}) {
		t.Fatalf("EXECUTE del: %s %v", k, tb)
	}
	if k, _, fl := run("execute nope"); k != "execute" || !slices.Contains(fl, FlagUnknownPrepared) {
		t.Fatalf("EXECUTE of an unknown name: %s %v", k, fl)
	}
	if k, _, _ := run("PREPARE s AS SELECT 1; EXECUTE s; EXECUTE del"); k != "delete" {
		t.Fatalf("several in one query: %s", k)
	}
	run("DEALLOCATE del")
	if _, _, fl := run("EXECUTE del"); !slices.Contains(fl, FlagUnknownPrepared) {
		t.Fatalf("after DEALLOCATE: %v", fl)
	}
	run("DISCARD ALL")
	if _, _, fl := run("EXECUTE s"); !slices.Contains(fl, FlagUnknownPrepared) {
		t.Fatalf("after DISCARD ALL: %v", fl)
	}
	if st, _ := Classify("SELECT 1"); !mayPrepare("x Execute y") || mayPrepare(st.Text) {
		t.Fatal("mayPrepare")
	}
}

func TestContainsFold(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool
	}{{"EXECUTE p", true}, {"x eXeCuTe", true}, {"execut", false}, {"", false}, {"SELECT 1", false}, {"EEEXECUTE", true}} {
		if got := containsFold(tt.s, "execute"); got != tt.want {
			t.Errorf("containsFold(%q) = %v", tt.s, got)
		}
	}
}
