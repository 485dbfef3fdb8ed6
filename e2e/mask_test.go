package e2e

import (
	"encoding/base64"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/testenv"
)

func maskRules(addr string) string {
	return fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "ci" {
  targets = ["pg"]
  record  = "full"

  mask "pii" {
    columns = ["users.email", "users.ssn"]
    using   = "hash"
  }

  mask "detected" {
    detect = ["email"]
    using  = "redact"
  }
}
`, addr)
}

var hashed = regexp.MustCompile(`^h:[0-9a-f]{16}$`)

// TestMasking: masked columns reach psql and pgx masked on every path a
// value leaves the database, and nothing else changes.
func TestMasking(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: maskRules(pg.Addr())})
	admin(t, pg, `create table users(id int primary key, name text, email text unique, ssn text);
insert into users select i, 'Person '||i, 'person'||i||'@example.com', lpad((100 + i % 800)::text, 3, '0')||'-45-'||lpad((1000 + i % 9000)::text, 4, '0') from generate_series(1, 100000) i;
create table orders(id int, user_id int); insert into orders values (1, 7);
create view people as select id, email from users;`)

	run := func(sql string) []string {
		t.Helper()
		out, _, err := psqlIn(t, cg, 0, append(pg.PsqlArgs("", 0, sql), "-F", "|"))
		if err != nil {
			t.Fatalf("psql %q: %v\n%s", sql, err, out)
		}
		return strings.Split(out, "\n")
	}

	// SELECT *: every row, exactly email and ssn masked.
	rows := run("SELECT * FROM users ORDER BY id")
	if len(rows) != 100000 {
		t.Fatalf("SELECT * returned %d rows, want 100000", len(rows))
	}
	for i, row := range []string{rows[0], rows[99999]} {
		f := strings.Split(row, "|")
		id := []int{1, 100000}[i]
		if len(f) != 4 || f[0] != strconv.Itoa(id) || f[1] != "Person "+strconv.Itoa(id) || !hashed.MatchString(f[2]) || !hashed.MatchString(f[3]) {
			t.Errorf("row %d = %q, want id and name intact, email and ssn hashed", id, row)
		}
	}
	// The same person hashes the same way in another session (joins line up).
	again := run("SELECT email FROM users WHERE id = 1")
	if again[0] != strings.Split(rows[0], "|")[2] {
		t.Errorf("hash not stable across sessions: %q vs %q", again[0], rows[0])
	}
	// An alias keeps the column masked; an expression is caught by the
	// email detector; a view of the table keeps it masked.
	for sql, check := range map[string]func(string) bool{
		"SELECT email AS e FROM users WHERE id = 2":   hashed.MatchString,
		"SELECT lower(email) FROM users WHERE id = 2": func(s string) bool { return s == "[REDACTED]" },
		"SELECT email FROM people WHERE id = 2":       func(s string) bool { return hashed.MatchString(s) || s == "[REDACTED]" },
		"SELECT name FROM users WHERE id = 2":         func(s string) bool { return s == "Person 2" },
		"SELECT 'contact: bob@example.org' AS note":   func(s string) bool { return s == "contact: [REDACTED]" },
	} {
		if got := run(sql)[0]; !check(got) {
			t.Errorf("%s -> %q", sql, got)
		}
	}

	// Extended protocol through pgx: binary and text formats, a join.
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())
	steps := runPgx(t, cg, dsn, "mask")
	if f := strings.Split(strings.TrimPrefix(steps["row"], "ok "), "|"); len(f) != 3 || !hashed.MatchString(f[0]) || f[1] != "Person 1" || !hashed.MatchString(f[2]) {
		t.Errorf("pgx row = %q", steps["row"])
	}
	if !hashed.MatchString(strings.TrimPrefix(steps["join"], "ok ")) {
		t.Errorf("pgx join = %q", steps["join"])
	}
	// The first statement of a transaction pipelined behind its BEGIN:
	// as a pgx batch, and byte for byte as the report that found the
	// leak sent it (Parse/Bind/Execute BEGIN, then the SELECT with a
	// binary parameter and Describe of the portal, one Sync).
	if v := strings.TrimPrefix(steps["batch"], "ok "); !hashed.MatchString(v) {
		t.Errorf("pgx batch = %q", steps["batch"])
	}
	if v := strings.TrimPrefix(steps["pipelined"], "ok "); !hashed.MatchString(v) {
		t.Errorf("pipelined BEGIN + SELECT = %q", steps["pipelined"])
	}

	// COPY ... TO STDOUT in csv, text and binary.
	csv := run("COPY (SELECT 1) TO STDOUT")
	_ = csv
	out := run("COPY users TO STDOUT WITH (FORMAT csv)")
	if len(out) != 100000 || !strings.HasPrefix(out[0], "1,Person 1,h:") || strings.Contains(strings.Join(out[:100], "\n"), "@example.com") {
		t.Errorf("COPY csv: %d rows, first %q", len(out), out[0])
	}
	out = run("COPY users TO STDOUT")
	if !strings.HasPrefix(out[0], "1\tPerson 1\th:") {
		t.Errorf("COPY text first row %q", out[0])
	}

	// A unique violation must not echo the email back.
	bad, _, _ := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "INSERT INTO users VALUES (100001, 'x', 'person5@example.com', '')"))
	if !strings.Contains(bad, "duplicate key") || strings.Contains(bad, "person5@example.com") {
		t.Errorf("unique violation through Sluice:\n%s", bad)
	}

	// The recordings hold what the clients saw: no email returned by the
	// server appears in them.
	var sessions []store.Session
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		sessions = listSessions(t, d)
		done := true
		for _, s := range sessions {
			done = done && s.Status != store.StatusActive
		}
		if done {
			break
		}
	}
	for _, s := range sessions {
		b, err := os.ReadFile(s.Path)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, m := range regexp.MustCompile(`"data":"([A-Za-z0-9+/=]+)"`).FindAllStringSubmatch(text, -1) {
			raw, _ := base64.StdEncoding.DecodeString(m[1])
			text += string(raw)
		}
		for _, leaked := range []string{"person1@example.com", "person100000@example.com", "person7@example.com", "person2@example.com"} {
			if strings.Contains(text, leaked) {
				t.Errorf("recording %s holds the raw value %s", s.ID, leaked)
			}
		}
	}
}
