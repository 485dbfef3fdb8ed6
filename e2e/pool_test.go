package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

const poolSecret = "P00l-5e1c7a-secret"

// TestUpstreamPool: a target with upstream_pool and an injected
// credential serves a job's sessions one after another on one server
// connection, each starting clean (settings, prepared statements,
// temporary tables, advisory locks are gone); a session that ends inside
// a transaction does not give its connection back; another job never
// gets it; a connection the server ended while pooled is not used; cancel
// works on a reused connection with a key of Sluice's own; and the flow
// log says how each session got and left its connection.
func TestUpstreamPool(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2", Auth: "scram-sha-256", Password: "admin-only"})
	pg.Admin(t, fmt.Sprintf("CREATE ROLE app LOGIN PASSWORD '%s'", poolSecret))
	is := testenv.NewIssuer(t)
	secretFile := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(secretFile, []byte(poolSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf(`target "pg" {
  protocol      = "postgres"
  address       = [%q]
  upstream_tls  = "disable"
  upstream_pool = 2

  credential "app" {
    user          = "app"
    password_file = %q
    policies      = ["*"]
  }
}

policy "ci" {
  targets = ["pg"]
  credential "app" {}
}
`, pg.Addr(), secretFile)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules, Body: identityBlock(is, "")})
	worker := runnerWorker(t)

	// job runs steps, shell commands, in one CI job of repo (one
	// Runner.Worker: one identity, so one pool key per startup packet).
	// Ahead of each step after the first, the job waits on a FIFO while
	// the test runs before(i). It returns each step's output.
	job := func(repo string, steps []string, before func(i int)) []string {
		t.Helper()
		is.SetClaims(map[string]any{"sub": "repo:" + repo + ":ref:refs/heads/main", "repository": repo, "ref": "refs/heads/main", "run_id": "42"})
		dir := t.TempDir()
		os.Chmod(dir, 0o755)
		var script strings.Builder
		for i, step := range steps {
			if i > 0 {
				fifo := filepath.Join(dir, fmt.Sprint("go", i))
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&script, "cat %s >/dev/null\n", fifo)
			}
			fmt.Fprintf(&script, "echo @@%d\n%s || exit 1\n", i, step)
		}
		cmd, done := cg.Command(t.Context(), worker, "-c", script.String())
		defer done()
		cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+is.TokenURL(),
			"ACTIONS_ID_TOKEN_REQUEST_TOKEN="+is.RequestToken, "PGCONNECT_TIMEOUT=10")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(steps); i++ {
			if before != nil {
				before(i)
			}
			// Opening the FIFO blocks until the job reads it.
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprint("go", i)), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("job: %v\n%s", err, out.String())
		}
		res := make([]string, len(steps))
		for _, part := range strings.Split(out.String(), "@@")[1:] {
			var i int
			fmt.Sscanf(part, "%d", &i)
			if nl := strings.IndexByte(part, '\n'); nl >= 0 && i < len(res) {
				res[i] = strings.TrimSpace(part[nl+1:])
			}
		}
		return res
	}
	psqlSSL := func(sslmode string, queries ...string) string {
		cmd := fmt.Sprintf("psql -X -w -v ON_ERROR_STOP=1 'host=%s port=%d user=whoever dbname=postgres sslmode=%s' -At", pg.Host, pg.Port, sslmode)
		for _, q := range queries {
			cmd += fmt.Sprintf(" -c %q", q)
		}
		return cmd
	}
	psql := func(queries ...string) string { return psqlSSL("disable", queries...) }
	// pooled waits until n connections have been reset and pooled since
	// the daemon started.
	pooled := func(n int) {
		t.Helper()
		testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("%d server connections pooled", n), func() bool {
			got := 0
			for _, l := range d.Logs(t) {
				if l.Message() == "server connection pooled" {
					got++
				}
			}
			return got >= n
		})
	}
	// flows are the flow log's upstream_pool fields, in order.
	flows := func() []string {
		var out []string
		for _, l := range d.Logs(t) {
			if l.Message() == "flow" && l.String("credential") == "app" {
				out = append(out, l.String("upstream_pool"))
			}
		}
		return out
	}

	const clean = "SELECT pg_backend_pid() || ' ' || current_setting('work_mem') || ' ' || (SELECT count(*) FROM pg_prepared_statements) || ' ' || " +
		"(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') || ' ' || (to_regclass('pg_temp.scratch') IS NULL) || ' ' || current_user"
	dsn := fmt.Sprintf("postgres://whoever:wrong@%s/postgres?sslmode=disable", pg.Addr())
	out := job("acme/api", []string{
		// 0: the first session logs in and leaves state behind.
		psql("SET work_mem = '7MB'", "PREPARE p AS SELECT 1", "CREATE TEMP TABLE scratch (x int)", "SELECT pg_advisory_lock(42)", "SELECT pg_backend_pid()"),
		// 1: the next session gets the same backend, clean; its client
		// asks for TLS (psql's default), which the target's upstream_tls
		// = "disable" answers without a new server connection.
		psqlSSL("prefer", clean),
		// 2, 3: pgx, whose startup parameters differ from psql's, gets a
		// connection of its own; on its reuse, the cancel key is
		// Sluice's own, and cancel stops the backend's query.
		pgxclient(t) + " '" + dsn + "' keys",
		pgxclient(t) + " '" + dsn + "' cancel",
		// 4: a session that ends inside a transaction closes its
		// connection, so 5 logs in anew.
		psql("BEGIN", "SELECT 1"),
		psql("SELECT pg_backend_pid()"),
		// 6: the server ended the pooled backend: a new login.
		psql("SELECT pg_backend_pid()"),
	}, func(i int) {
		switch i {
		case 1, 2, 3, 4:
			pooled(i)
		case 5:
			// Session 4 closed its connection: nothing to wait for.
		case 6:
			pooled(5)
			// End every backend of the role (the pooled one alone), and
			// wait until the server has.
			pg.Admin(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'")
			testenv.WaitFor(t, 5*time.Second, "the pooled backend to end", func() bool {
				return pg.Admin(t, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'") == "0"
			})
		}
	})
	pid1 := lastLine(out[0])
	if want := pid1 + " 4MB 0 0 true app"; out[1] != want {
		t.Errorf("second session: %q, want %q (same backend, reset)", out[1], want)
	}
	var backend, clientPID string
	if _, err := fmt.Sscanf(out[2], "keys ok %s %s", &backend, &clientPID); err != nil || backend == pid1 || clientPID == backend {
		t.Errorf("keys of pgx: %q, want a backend other than psql's %s and a cancel key of Sluice's own", out[2], pid1)
	}
	if !strings.Contains(out[3], "sleep err 57014") || !strings.Contains(out[3], "after-cancel ok 1") {
		t.Errorf("cancel on a reused connection:\n%s", out[3])
	}
	if out[5] == pid1 {
		t.Errorf("the session after one that ended in a transaction got backend %s again", pid1)
	}
	if out[6] == out[5] || out[6] == "" {
		t.Errorf("after the server ended the pooled backend %s: got %q", out[5], out[6])
	}

	// Another job never gets this job's connections.
	if other := job("acme/web", []string{psql("SELECT pg_backend_pid()")}, nil); other[0] == out[6] {
		t.Errorf("a job of acme/web got acme/api's pooled backend %s", out[6])
	}

	want := []string{"new, released", "reused, released", "new, released", "reused, released",
		"reused, closed: the client ended in transaction status 'T'", "new, released", "new, released", "new, released"}
	testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("%d flow lines", len(want)), func() bool { return len(flows()) >= len(want) })
	if got := flows(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("flow log upstream_pool:\n got %q\nwant %q", got, want)
	}
}

// lastLine is the last line of s.
func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
