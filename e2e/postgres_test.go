package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// pgRules is a ruleset with one postgres target whose policy denies DROP
// and any DELETE.
func pgRules(addr string) string {
	return fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "ci" {
  targets = ["pg"]

  deny "no-drop" {
    when   = statement.kind == "drop"
    reason = "schema changes go through migrations"
  }

  deny "no-delete" {
    when   = statement.kind == "delete"
    reason = "CI never deletes"
  }
}
`, addr)
}

// admin runs SQL on the server over its unix socket, never intercepted.
func admin(t *testing.T, pg *testenv.Postgres, sql string) string {
	t.Helper()
	out, err := exec.Command("psql", "-X", "-w", "-h", pg.Socket(), "-p", fmt.Sprint(pg.Port), "-U", "postgres", "-d", "postgres", "-Atc", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("admin %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestPostgresDenySimple: psql's DROP TABLE is refused with 42501 naming
// the rule, inside and outside a transaction block; the table survives;
// the session stays usable; a data-modifying CTE is seen as a delete.
func TestPostgresDenySimple(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr())})
	admin(t, pg, "create table t(id int); insert into t values (1), (2)")

	psql := func(script string) string {
		t.Helper()
		args := append(pg.PsqlArgs("", 0, ""), "-v", "VERBOSITY=verbose")
		args = args[:len(args)-4] // drop -Atc ""
		args = append(args, "-At", "-v", "VERBOSITY=verbose")
		cmd, done := cg.Command(t.Context(), args[0], args[1:]...)
		defer done()
		cmd.Stdin = strings.NewReader(script)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}

	out := psql("DROP TABLE t;\nSELECT count(*) FROM t;\n")
	if !strings.Contains(out, `ERROR:  42501: sluice: statement denied by rule "ci/deny/no-drop"`) ||
		!strings.Contains(out, "DETAIL:  schema changes go through migrations") {
		t.Errorf("DROP outside a transaction:\n%s", out)
	}
	if !strings.Contains(out, "\n2\n") {
		t.Errorf("the session is not usable after the denial:\n%s", out)
	}

	// Inside a transaction block the client sees what the server has: an
	// aborted transaction, until ROLLBACK.
	out = psql("BEGIN;\nINSERT INTO t VALUES (3);\nDROP TABLE t;\nSELECT 1;\nROLLBACK;\nSELECT count(*) FROM t;\n")
	for _, want := range []string{
		`ERROR:  42501: sluice: statement denied by rule "ci/deny/no-drop"`,
		"ERROR:  25P02: current transaction is aborted",
		"ROLLBACK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("DROP inside a transaction block: output lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(strings.TrimSpace(out), "2") {
		t.Errorf("after ROLLBACK the insert should be gone and t should have 2 rows:\n%s", out)
	}

	out = psql("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d;\n")
	if !strings.Contains(out, `denied by rule "ci/deny/no-delete"`) {
		t.Errorf("data-modifying CTE not seen as a delete:\n%s", out)
	}
	if n := admin(t, pg, "select count(*) from t"); n != "2" {
		t.Errorf("table t has %s rows after the denials, want 2 (nothing reached the server)", n)
	}
	if st, _ := d.Status(); st.Flows.Total != 3 {
		t.Errorf("flows = %d, want 3", st.Flows.Total)
	}
	l := d.WaitLog(t, "statement denied", nil)
	if l.String("rule") != "ci/deny/no-drop" || l.String("kind") != "drop" {
		t.Errorf("statement denied log line = %v", l)
	}
	fl := d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("protocol") == "postgres" })
	if fl.String("denied") != "1" || fl.String("db_user") != "postgres" {
		t.Errorf("postgres flow line = %v, want denied=1 db_user=postgres", fl)
	}
}
