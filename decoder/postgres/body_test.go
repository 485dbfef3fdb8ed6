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
		{"CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()", "create", nil, []string{FlagCreateTrigger, FlagEventTrigger}},
		{"CREATE CONSTRAINT TRIGGER ct AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create", []string{"t"}, []string{FlagCreateTrigger}},
		{"DO $$ BEGIN EXECUTE $q$TRUNCATE audit$q$; END $$", "truncate", []string{"audit"}, []string{FlagDoBlock}},
		{"DO $$ BEGIN EXECUTE 'PREPARE p AS DELETE FROM t'; END $$", "delete", []string{"t"}, []string{FlagDoBlock, FlagPrepare}},
		{"DO $$ DECLARE q text := 'DROP TABLE t'; BEGIN EXECUTE q; END $$", "do", nil, []string{FlagDoBlock, FlagDynamicSQL}},
		{"DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT * FROM secret' LOOP END LOOP; END $$", "do", []string{"secret"}, []string{FlagDoBlock}},
		{"CREATE FUNCTION f() RETURNS SETOF int LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY EXECUTE 'DELETE FROM t RETURNING id'; END $$", "delete", []string{"t"}, []string{FlagCreateFunction}},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; DELETE FROM victim; END", "delete", []string{"victim"}, []string{FlagCreateFunction}},
		{"CREATE FUNCTION tf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.x := 1; DELETE FROM victim; RETURN NEW; END $$", "delete", []string{"victim"}, []string{FlagCreateFunction}},
		{"CREATE FUNCTION n() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT count(*) FROM t); END $$", "create", []string{"t"}, []string{FlagCreateFunction}},
		{"DO $$ BEGIN RAISE NOTICE 'hi'; END $$ LANGUAGE plpgsql", "do", nil, []string{FlagDoBlock}},
		{"CREATE FUNCTION inc(n int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN n := n + 1; DELETE FROM t WHERE id = n; RETURN n; END $$", "delete", []string{"t"}, []string{FlagCreateFunction}},
		{"CREATE PROCEDURE io(INOUT n int) LANGUAGE plpgsql AS $$ BEGIN n := 2; TRUNCATE t; END $$", "truncate", []string{"t"}, []string{FlagCreateProcedure}},
		{"DO $$ BEGIN EXECUTE 'CREATE FUNCTION inner_f(n int) RETURNS void LANGUAGE plpgsql AS $f$ BEGIN n := 1; DROP TABLE deep; END $f$'; END $$", "drop", []string{"deep"}, []string{FlagCreateFunction, FlagDoBlock}},
		{"CREATE FUNCTION cf() RETURNS void LANGUAGE c AS '/tmp/evil.so', 'cf'", "create", nil, []string{FlagCreateFunction, FlagDynamicSQL}},
		{"CREATE FUNCTION rf(text, bigint, bigint) RETURNS text LANGUAGE internal AS 'pg_read_file_off_len'", "create", nil, []string{FlagCreateFunction, FlagDynamicSQL}},
		{"DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP DELETE FROM victim; END LOOP; END $$", "delete", []string{"victim"}, []string{FlagDoBlock}},
		{"DO $$ BEGIN EXECUTE 'SELECT $1' USING pg_read_file('/etc/passwd'); END $$", "do", nil, []string{FlagDangerousFunction, FlagDoBlock}},
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT 1; DROP TABLE victim $$", "drop", []string{"victim"}, []string{FlagCreateFunction}},
		{"DO $$ BEGIN DO $i$ BEGIN EXECUTE 'DROP TABLE deep'; END $i$; END $$", "drop", []string{"deep"}, []string{FlagDoBlock}},
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
