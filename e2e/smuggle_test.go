package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// smugglingPaths are the ways to run SQL the classifier never saw before:
// each would drop or empty victims. name -> statements run in one psql.
var smugglingPaths = []struct{ name, sql string }{
	{"DO with EXECUTE", "DO $$ BEGIN EXECUTE 'DROP TABLE victims'; END $$"},
	{"DO with computed EXECUTE", "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'victims'; END $$"},
	{"SQL function", "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM victims'; SELECT f();"},
	{"PL/pgSQL procedure", "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DROP TABLE victims; END $$; CALL p();"},
	{"BEGIN ATOMIC procedure", "CREATE PROCEDURE q() BEGIN ATOMIC DELETE FROM victims; END; CALL q();"},
	{"PREPARE and EXECUTE", "PREPARE del AS DELETE FROM victims;\nEXECUTE del;"},
	{"rule", "CREATE RULE r AS ON INSERT TO bait DO INSTEAD DELETE FROM victims; INSERT INTO bait VALUES (1);"},
	{"trigger", "CREATE TRIGGER tr BEFORE INSERT ON bait FOR EACH ROW EXECUTE FUNCTION existing_wiper(); INSERT INTO bait VALUES (1);"},
}

// TestSmuggledSQLRefused: under the default ruleset every smuggling path
// is refused with 42501 and victims keeps its rows; psql's separate
// statements each get their own answer.
func TestSmuggledSQLRefused(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	def := strings.Replace(string(ruleset.DefaultSource()), `address  = ["*:5432"]`, fmt.Sprintf("address  = [%q]", pg.Addr()), 1)
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: def})
	admin(t, pg, `create table victims(id int); insert into victims values (1), (2);
create table bait(id int);
create function existing_wiper() returns trigger language plpgsql as $$ begin delete from victims; return new; end $$;`)

	for _, p := range smugglingPaths {
		out, _, _ := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, p.sql))
		if !strings.Contains(out, "42501") && !strings.Contains(out, "denied by rule") {
			t.Errorf("%s: not refused:\n%s", p.name, out)
		}
		if got := pg.Admin(t, "select count(*) from victims"); got != "2" {
			t.Fatalf("%s: victims has %q rows, want 2:\n%s", p.name, got, out)
		}
	}
}

// TestSmuggledSQLAllowedDeliberately: a ruleset that allows DO blocks and
// functions runs a harmless body, while a DROP inside one is still
// refused by the rule on DROP.
func TestSmuggledSQLAllowedDeliberately(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	rules := fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "ci" {
  targets = ["pg"]

  deny "no-drop" {
    when   = statement.kind == "drop"
    reason = "no DROP, wherever it is written"
  }
  deny "no-dynamic-sql" {
    when   = contains(statement.flags, "dynamic_sql")
    reason = "SQL built at run time cannot be decided"
  }
}
`, pg.Addr())
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	admin(t, pg, "create table victims(id int); insert into victims values (1), (2)")

	out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "DO $$ BEGIN INSERT INTO victims VALUES (3); END $$"))
	if err != nil || strings.Contains(out, "denied") {
		t.Fatalf("harmless DO refused: %v\n%s", err, out)
	}
	out, _, err = psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "CREATE FUNCTION n() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM victims'; SELECT n();"))
	if err != nil || !strings.Contains(out, "3") {
		t.Fatalf("harmless function: %v\n%s", err, out)
	}
	for _, sql := range []string{
		"DO $$ BEGIN EXECUTE 'DROP TABLE victims'; END $$",
		"CREATE FUNCTION w() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE victims; END $$",
		"DO $$ BEGIN EXECUTE 'DROP ' || 'TABLE victims'; END $$",
	} {
		out, _, _ = psqlIn(t, cg, 0, pg.PsqlArgs("", 0, sql))
		if !strings.Contains(out, "denied by rule") {
			t.Errorf("%s: not refused:\n%s", sql, out)
		}
	}
	if got := pg.Admin(t, "select count(*) from victims"); got != "3" {
		t.Fatalf("victims has %q rows, want 3", got)
	}
}
