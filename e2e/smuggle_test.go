package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// smuggleStep is one statement of a smuggling path, sent as its own Query
// by psql; refused says whether Sluice must answer it with 42501.
type smuggleStep struct {
	sql     string
	refused bool
}

// smugglingPaths are the ways to run SQL the classifier never saw before
// issue 16: each would drop or empty victims. Each path runs in one psql
// session, statement by statement, so a later step (SELECT f(), CALL,
// EXECUTE, the INSERT that fires a rule or trigger) is decided on its own.
var smugglingPaths = []struct {
	name  string
	steps []smuggleStep
}{
	{"DO with EXECUTE", []smuggleStep{{"DO $$ BEGIN EXECUTE 'DROP TABLE victims'; END $$;", true}}},
	{"DO with computed EXECUTE", []smuggleStep{{"DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'victims'; END $$;", true}}},
	{"DO with plain DROP", []smuggleStep{{"DO $$ BEGIN DROP TABLE victims; END $$;", true}}},
	{"SQL function", []smuggleStep{
		{"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE victims';", true},
		{"SELECT f();", false}, // 42883: f does not exist
	}},
	{"SQL function emptying", []smuggleStep{
		{"CREATE FUNCTION g() RETURNS void LANGUAGE sql AS 'DELETE FROM victims';", true},
		{"SELECT g();", false},
	}},
	{"PL/pgSQL procedure", []smuggleStep{
		{"CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DROP TABLE victims; END $$;", true},
		{"CALL p();", false},
	}},
	{"BEGIN ATOMIC procedure", []smuggleStep{
		{"CREATE PROCEDURE q() BEGIN ATOMIC DELETE FROM victims; END;", true},
		{"CALL q();", false},
	}},
	{"PREPARE DROP and EXECUTE", []smuggleStep{
		{"PREPARE d AS DROP TABLE victims;", true}, // not preparable: refused as unparsable (sluice/unparsable)
		{"EXECUTE d;", true},                       // unknown_prepared
	}},
	{"PREPARE DELETE and EXECUTE", []smuggleStep{
		{"PREPARE del AS DELETE FROM victims;", true},
		{"EXECUTE del;", true},
	}},
	{"PREPARE and EXECUTE in one query", []smuggleStep{
		{"PREPARE del2 AS DELETE FROM victims \\; EXECUTE del2;", true},
	}},
	{"rule", []smuggleStep{
		{"CREATE RULE r AS ON INSERT TO bait DO INSTEAD DELETE FROM victims;", true},
		{"INSERT INTO bait VALUES (1);", false},
	}},
	{"trigger", []smuggleStep{
		{"CREATE TRIGGER tr BEFORE INSERT ON bait FOR EACH ROW EXECUTE FUNCTION existing_wiper();", true},
		{"INSERT INTO bait VALUES (2);", false},
	}},
	{"event trigger", []smuggleStep{
		{"CREATE EVENT TRIGGER et ON ddl_command_end EXECUTE FUNCTION existing_event_wiper();", true},
		{"CREATE TABLE bait2(id int);", false},
	}},
}

// psqlScript runs script through psql in cg, one Query per statement,
// with verbose errors (SQLSTATE shown).
func psqlScript(t *testing.T, cg *testenv.Cgroup, pg *testenv.Postgres, script string) string {
	t.Helper()
	args := pg.PsqlArgs("", 0, "")
	args = append(args[:len(args)-2], "-At", "-v", "VERBOSITY=verbose") // drop -Atc ""
	cmd, done := cg.Command(t.Context(), args[0], args[1:]...)
	defer done()
	cmd.Stdin = strings.NewReader(script)
	out, _ := cmd.CombinedOutput()
	return string(out)
}

// TestSmuggledSQLRefused: under the default ruleset every smuggling path
// is refused with 42501 and victims keeps its rows.
func TestSmuggledSQLRefused(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	def := strings.Replace(string(ruleset.DefaultSource()), `address  = ["*:5432"]`, fmt.Sprintf("address  = [%q]", pg.Addr()), 1)
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: def})
	admin(t, pg, `create table victims(id int); insert into victims values (1), (2);
create table bait(id int);
create function existing_wiper() returns trigger language plpgsql as $$ begin delete from victims; return new; end $$;
create function existing_event_wiper() returns event_trigger language plpgsql as $$ begin delete from victims; end $$;`)

	for _, p := range smugglingPaths {
		var script strings.Builder
		want := 0
		for _, s := range p.steps {
			script.WriteString(s.sql + "\n")
			if s.refused {
				want++
			}
		}
		out := psqlScript(t, cg, pg, script.String())
		if got := strings.Count(out, `ERROR:  42501: sluice: statement denied by rule "`); got != want {
			t.Errorf("%s: %d statements refused with 42501, want %d:\n%s", p.name, got, want, out)
		}
		if got := pg.Admin(t, "select count(*) from victims"); got != "2" {
			t.Fatalf("%s: victims has %q rows, want 2:\n%s", p.name, got, out)
		}
	}
	if got := pg.Admin(t, "select count(*) from pg_proc where proname in ('f', 'g', 'p', 'q')"); got != "0" {
		t.Errorf("%s smuggled functions or procedures exist", got)
	}
	if got := pg.Admin(t, "select (select count(*) from pg_rules where rulename = 'r') + (select count(*) from pg_trigger where tgname = 'tr') + (select count(*) from pg_event_trigger)"); got != "0" {
		t.Errorf("%s smuggled rules or triggers exist", got)
	}
}

// TestSmuggledSQLAllowedDeliberately: a ruleset that explicitly allows
// code in the database (DO, functions, procedures, rules, triggers) and
// SQL-level PREPARE runs each harmless path, while a destructive statement
// inside one is still refused by the rule on destructive statements, and
// SQL built at run time or EXECUTE of an unknown name by theirs.
func TestSmuggledSQLAllowedDeliberately(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	rules := fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "ci" {
  targets        = ["pg"]
  default_action = "deny"

  allow "code-in-the-database" {
    when = contains(statement.flags, "do_block") || contains(statement.flags, "create_function") || contains(statement.flags, "create_procedure") || contains(statement.flags, "create_rule") || contains(statement.flags, "create_trigger")
  }
  allow "work" {
    when = contains(["select", "insert", "create", "call", "other", "set", "show", "transaction"], statement.kind) || (
      contains(["delete", "update"], statement.kind) && statement.has_where
    )
  }
  deny "destructive" {
    when   = contains(["drop", "truncate"], statement.kind) || (contains(["delete", "update"], statement.kind) && !statement.has_where)
    reason = "no destructive statement, wherever it is written"
  }
  deny "unreadable" {
    when   = contains(statement.flags, "dynamic_sql") || contains(statement.flags, "unknown_prepared")
    reason = "SQL built at run time, or prepared where Sluice did not see it, cannot be decided"
  }
}
`, pg.Addr())
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	admin(t, pg, `create table victims(id int); insert into victims values (1), (2);
create table bait(id int); create table audit(id int);
create function audit_it() returns trigger language plpgsql as $$ begin insert into audit values (new.id); return new; end $$;`)

	// Harmless: every path runs.
	out := psqlScript(t, cg, pg, `DO $$ BEGIN INSERT INTO victims VALUES (3); END $$;
CREATE FUNCTION n() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM victims';
SELECT 'n=' || n();
CREATE PROCEDURE addone() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO victims VALUES (4); END $$;
CALL addone();
PREPARE c AS SELECT 'c=' || count(*) FROM victims;
EXECUTE c;
CREATE RULE r AS ON INSERT TO bait DO ALSO INSERT INTO audit VALUES (NEW.id + 100);
CREATE TRIGGER tr AFTER INSERT ON bait FOR EACH ROW EXECUTE FUNCTION audit_it();
INSERT INTO bait VALUES (1);
`)
	if strings.Contains(out, "ERROR") || !strings.Contains(out, "n=3") || !strings.Contains(out, "c=4") {
		t.Fatalf("harmless paths under an explicit allow:\n%s", out)
	}
	if got := pg.Admin(t, "select string_agg(id::text, ',' order by id) from audit"); got != "1,101" {
		t.Fatalf("the rule and the trigger did not run: audit = %q\n%s", got, out)
	}

	// Destructive inside: still refused, each by the rule that reads it.
	for _, tt := range []struct{ sql, rule string }{
		{"DO $$ BEGIN EXECUTE 'DROP TABLE victims'; END $$;", "destructive"},
		{"DO $$ BEGIN DELETE FROM victims; END $$;", "destructive"},
		{"CREATE FUNCTION w() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE victims; END $$;", "destructive"},
		{"CREATE FUNCTION w2() RETURNS void LANGUAGE sql AS 'DROP TABLE victims';", "destructive"},
		{"CREATE PROCEDURE w3() BEGIN ATOMIC DELETE FROM victims; END;", "destructive"},
		{"PREPARE w4 AS DELETE FROM victims;", "destructive"},
		{"EXECUTE w4;", "unreadable"},
		{"CREATE RULE r2 AS ON INSERT TO bait DO INSTEAD DELETE FROM victims;", "destructive"},
		{"DO $$ BEGIN EXECUTE 'DROP ' || 'TABLE victims'; END $$;", "unreadable"},
	} {
		out := psqlScript(t, cg, pg, tt.sql+"\n")
		if !strings.Contains(out, `ERROR:  42501: sluice: statement denied by rule "ci/deny/`+tt.rule+`"`) {
			t.Errorf("%s: not refused by ci/deny/%s:\n%s", tt.sql, tt.rule, out)
		}
	}
	if got := pg.Admin(t, "select count(*) from victims"); got != "4" {
		t.Fatalf("victims has %q rows, want 4", got)
	}
}
