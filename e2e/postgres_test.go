package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
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

// helperBinary builds the e2e helper program e2e/<name> once per test
// binary and returns its path.
func helperBinary(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(testenv.Binaries(t), name)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	out, err := exec.Command("go", "build", "-o", bin, "github.com/sluicehq/sluice/e2e/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// pgxclient builds the pgx test client once.
func pgxclient(t *testing.T) string { return helperBinary(t, "pgxclient") }

func runPgx(t *testing.T, cg *testenv.Cgroup, dsn, scenario string) map[string]string {
	t.Helper()
	out, err := cg.Run(t, pgxclient(t), dsn, scenario)
	if err != nil {
		t.Fatalf("pgxclient %s: %v\n%s", scenario, err, out)
	}
	steps := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		name, rest, _ := strings.Cut(line, " ")
		steps[name] = rest
	}
	t.Logf("pgxclient %s:\n%s", scenario, out)
	return steps
}

// TestPostgresDenyExtended: a Go program using pgx gets 42501 for DROP in
// every query mode, inside a transaction block and in a pipelined batch,
// and its connection stays usable.
func TestPostgresDenyExtended(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr())})
	admin(t, pg, "create table t(id int); insert into t values (1), (2)")

	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())
	steps := runPgx(t, cg, dsn, "deny")
	want := map[string]string{
		"drop-prepared":           "err 42501",
		"count-after-drop":        "ok 2",
		"drop-exec-mode":          "err 42501",
		"drop-simple-protocol":    "err 42501",
		"insert-in-tx":            "ok",
		"drop-in-tx":              "err 42501",
		"select-after-deny-in-tx": "err 25P02",
		"rollback":                "ok",
		"count-after-rollback":    "ok 2",
		"batch-1":                 "err 42501",
		"count-final":             "ok 2",
	}
	for step, prefix := range want {
		if !strings.HasPrefix(steps[step], prefix) {
			t.Errorf("step %s = %q, want %q...", step, steps[step], prefix)
		}
	}
	if !strings.Contains(steps["drop-prepared"], `ci/deny/no-drop`) {
		t.Errorf("the denial does not name the rule: %q", steps["drop-prepared"])
	}
	if n := admin(t, pg, "select count(*) from t"); n != "2" {
		t.Errorf("t has %s rows, want 2", n)
	}
}

// TestPostgresCancel: a CancelRequest from inside the cgroup (itself an
// intercepted connection) reaches the backend running the query, and
// psql's Ctrl-C (SIGINT) does too.
func TestPostgresCancel(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr())})

	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())
	steps := runPgx(t, cg, dsn, "cancel")
	if !strings.HasPrefix(steps["sleep"], "err 57014") {
		t.Errorf("pg_sleep after a cancel request: %q, want 57014 (query_canceled)", steps["sleep"])
	}
	if ms, _ := strconv.Atoi(strings.TrimPrefix(steps["elapsed-ms"], "ok ")); ms > 5000 {
		t.Errorf("the cancel took %d ms to land", ms)
	}
	if steps["after-cancel"] != "ok 1" {
		t.Errorf("connection after the cancel: %q", steps["after-cancel"])
	}
	l := d.WaitLog(t, "cancel request", nil)
	if l.String("known_session") != "true" {
		t.Errorf("cancel request line %v, want a known session", l)
	}

	// psql: SIGINT while a query runs sends a CancelRequest.
	cmd, done := cg.Command(t.Context(), "psql", pg.PsqlArgs("", 0, "select pg_sleep(20)")[1:]...)
	defer done()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if !strings.Contains(out.String(), "canceling statement due to user request") || time.Since(start) > 5*time.Second {
		t.Errorf("psql after SIGINT (%s):\n%s", time.Since(start), out.String())
	}
}

// TestPostgresPgbench: pgbench through Sluice. With the embedded default
// ruleset (its postgres target pointed at the test server), pgbench -i is
// refused at its first DROP TABLE, as that ruleset says, and a 10-second
// TPC-B-like run completes without failures. With a ruleset that allows
// schema changes, pgbench -i completes through Sluice too.
func TestPostgresPgbench(t *testing.T) {
	if testing.Short() {
		t.Skip("10-second pgbench run")
	}
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	def := strings.Replace(string(ruleset.DefaultSource()), `address  = ["*:5432"]`, fmt.Sprintf("address  = [%q]", pg.Addr()), 1)
	if !strings.Contains(def, pg.Addr()) {
		t.Fatal("could not point the default ruleset's postgres target at the test server")
	}
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: def})
	conn := []string{"-h", pg.Host, "-p", strconv.Itoa(pg.Port), "-U", "postgres"}

	out, err := cg.Run(t, "pgbench", append([]string{"-i", "-s", "1"}, append(conn, "postgres")...)...)
	if err == nil || !strings.Contains(out, "baseline/deny/destructive-sql") {
		t.Fatalf("pgbench -i under the default ruleset: %v\n%s\nwant it refused at DROP TABLE", err, out)
	}
	t.Logf("pgbench -i under the default ruleset:\n%s", out)

	// Initialise directly, then run through Sluice.
	if out, err := exec.Command("pgbench", "-i", "-s", "1", "-q", "-h", pg.Socket(), "-p", strconv.Itoa(pg.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i directly: %v\n%s", err, out)
	}
	out, err = cg.Run(t, "pgbench", append([]string{"-T", "10", "-c", "2", "-j", "2"}, append(conn, "postgres")...)...)
	if err != nil || !strings.Contains(out, "number of failed transactions: 0") {
		t.Fatalf("pgbench -T 10 through Sluice: %v\n%s", err, out)
	}
	t.Logf("pgbench through Sluice, default ruleset:\n%s", out)

	// A migration-style ruleset lets pgbench -i through.
	allow := fmt.Sprintf("target \"pg\" {\n  protocol = \"postgres\"\n  address  = [%q]\n}\npolicy \"migrations\" {\n  targets = [\"pg\"]\n}\n", pg.Addr())
	if err := os.WriteFile(filepath.Join(d.RulesDir, "rules.hcl"), []byte(allow), 0o600); err != nil {
		t.Fatal(err)
	}
	waitGeneration(t, d, 2, 2*time.Second)
	out, err = cg.Run(t, "pgbench", append([]string{"-i", "-s", "1", "-q"}, append(conn, "postgres")...)...)
	if err != nil || !strings.Contains(out, "done in") {
		t.Fatalf("pgbench -i through Sluice with schema changes allowed: %v\n%s", err, out)
	}
}

// TestPostgresProtocolViolation: an oversized message and one with an
// invalid length end the session with 08P01, and nothing of either reaches
// the server.
func TestPostgresProtocolViolation(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()), Body: "max_message_bytes = 1048576\n"})
	admin(t, pg, "create table t(id int)")
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())

	steps := runPgx(t, cg, dsn, "oversize")
	if !strings.HasPrefix(steps["oversize"], "err 08P01") || !strings.Contains(steps["oversize"], "exceeds the 1048576-byte limit") {
		t.Errorf("oversized statement: %q, want 08P01 naming the limit", steps["oversize"])
	}
	if steps["closed"] != "ok true" {
		t.Errorf("connection after the violation: %q, want closed", steps["closed"])
	}
	steps = runPgx(t, cg, dsn, "malformed")
	if !strings.HasPrefix(steps["malformed"], "err 08P01") {
		t.Errorf("invalid length: %q, want 08P01", steps["malformed"])
	}
	if n := admin(t, pg, "select count(*) from t"); n != "0" {
		t.Errorf("t has %s rows: part of a refused message reached the server", n)
	}
}

// TestPostgresFlowDenied: a connection no policy covers is refused with a
// PostgreSQL FATAL error naming the rule, not a dropped connection.
func TestPostgresFlowDenied(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	rules := strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  when    = process.uid == 0", 1) +
		"default {\n  action = \"deny\"\n  reason = \"no policy for this job\"\n}\n"
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	out, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "select 1"))
	if err == nil || !strings.Contains(out, `FATAL:  sluice: connection denied by rule "default"`) || !strings.Contains(out, "no policy for this job") {
		t.Errorf("psql as nobody: %v:\n%s\nwant a FATAL naming the default rule", err, out)
	}
}

// TestPostgresCopyNoticesNotifications: COPY in both directions, notices
// and notifications pass through the decoder intact.
func TestPostgresCopyNoticesNotifications(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr())})
	admin(t, pg, "create table t(id int, note text)")

	script := "\\copy t from stdin\n1\tone\n2\ttwo\n\\.\n" +
		"COPY t TO STDOUT;\n" +
		"DO $$BEGIN RAISE NOTICE 'hello from the server'; END$$;\n" +
		"LISTEN ch;\nNOTIFY ch, 'payload';\n"
	args := pg.PsqlArgs("", 0, "")
	args = args[:len(args)-2] // drop -Atc ""
	cmd, done := cg.Command(t.Context(), args[0], append(args[1:], "-At")...)
	defer done()
	cmd.Stdin = strings.NewReader(script)
	b, err := cmd.CombinedOutput()
	out := string(b)
	for _, want := range []string{"1\tone\n2\ttwo", "NOTICE:  hello from the server", `Asynchronous notification "ch" with payload "payload" received`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if err != nil {
		t.Errorf("psql: %v\n%s", err, out)
	}
	if n := admin(t, pg, "select count(*) from t"); n != "2" {
		t.Errorf("COPY FROM STDIN stored %s rows, want 2", n)
	}
}

// TestPostgresMonitorMode: in monitor mode a denied statement runs, and
// the verdict it would have had is logged.
func TestPostgresMonitorMode(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: "mode = \"monitor\"\n" + pgRules(pg.Addr())})
	admin(t, pg, "create table t(id int)")
	if out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "DROP TABLE t")); err != nil {
		t.Fatalf("DROP in monitor mode: %v: %s", err, out)
	}
	if n := admin(t, pg, "select count(*) from pg_tables where tablename = 't'"); n != "0" {
		t.Errorf("monitor mode: the table is still there")
	}
	l := d.WaitLog(t, "statement would be deny (monitor mode)", nil)
	if l.String("rule") != "ci/deny/no-drop" {
		t.Errorf("monitor line %v", l)
	}
}
