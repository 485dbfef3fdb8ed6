package postgres

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/internal/testenv"
)

// poolLogin logs in to pg with pgconn and returns the connection as the
// pool keeps one, under key k.
func poolLogin(t *testing.T, pg *testenv.Postgres, k PoolKey) *serverConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable&application_name=pooltest", pg.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	hj, err := c.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hj.Conn.Close() })
	sc := &serverConn{key: k, conn: hj.Conn, plain: true, born: time.Now()}
	for name, value := range hj.ParameterStatuses {
		sc.params = append(sc.params, param{name, value})
	}
	return sc
}

// simple runs a simple Query on sc's connection and returns the rows'
// first values, or the error's SQLSTATE as "ERROR code".
func simple(t *testing.T, sc *serverConn, sql string) []string {
	t.Helper()
	sc.conn.SetDeadline(time.Now().Add(10 * time.Second))
	defer sc.conn.SetDeadline(time.Time{})
	fe := pgproto3.NewFrontend(sc.conn, sc.conn)
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			out = append(out, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			out = append(out, "ERROR "+m.Code)
		case *pgproto3.ReadyForQuery:
			return out
		}
	}
}

func paramOf(sc *serverConn, name string) string {
	for _, p := range sc.params {
		if p.name == name {
			return p.value
		}
	}
	return ""
}

// TestPoolReset: the reset leaves a connection as a new login would (the
// session's settings, prepared statements, temporary tables and advisory
// locks gone), keeps the parameters the server reports, and refuses a
// connection left inside a transaction.
func TestPoolReset(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	sc := poolLogin(t, pg, PoolKey{})
	pid := simple(t, sc, "SELECT pg_backend_pid()")[0]
	simple(t, sc, "SET work_mem = '7MB'; SET application_name = 'changed'; PREPARE p AS SELECT 1; "+
		"CREATE TEMP TABLE scratch (x int); SELECT pg_advisory_lock(7)")
	if err := sc.reset(); err != nil {
		t.Fatalf("reset: %v", err)
	}
	got := simple(t, sc, "SELECT pg_backend_pid() || ' ' || current_setting('work_mem') || ' ' || current_setting('application_name') || ' ' || "+
		"(SELECT count(*) FROM pg_prepared_statements) || ' ' || (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') || ' ' || "+
		"(to_regclass('pg_temp.scratch') IS NULL)")
	if want := pid + " 4MB pooltest 0 0 true"; len(got) != 1 || got[0] != want {
		t.Errorf("after the reset: %q, want %q", got, want)
	}
	// The server reported application_name when the session changed it
	// (the relay keeps those) and again when the reset restored it.
	if v := paramOf(sc, "application_name"); v != "pooltest" {
		t.Errorf("application_name kept as %q, want pooltest", v)
	}

	simple(t, sc, "BEGIN")
	if err := sc.reset(); err == nil || !strings.Contains(err.Error(), "transaction block") {
		t.Errorf("reset inside a transaction: %v, want DISCARD ALL's refusal", err)
	}
}

// TestPoolTake: a released connection serves its own key only, after its
// reset (a take waits for a reset in progress); a connection the server
// ended while pooled is not served; the bounds per key, the idle time and
// the lifetime hold.
func TestPoolTake(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	log := hclog.NewNullLogger()
	p := NewPool()
	k1 := p.key([]byte("job 1"))
	k2 := p.key([]byte("job 2"))

	sc := poolLogin(t, pg, k1)
	pid := simple(t, sc, "SELECT pg_backend_pid()")[0]
	p.release(sc, 2, log)
	if got := p.take(k2, false); got != nil {
		t.Fatal("another key got the connection")
	}
	got := p.take(k1, false) // waits for the reset
	if got == nil {
		t.Fatal("the released connection was not served")
	}
	if again := simple(t, got, "SELECT pg_backend_pid()"); len(again) != 1 || again[0] != pid {
		t.Errorf("served backend %q, want %s", again, pid)
	}

	// Ended by the server while pooled: closed, not served.
	p.release(got, 2, log)
	testenv.WaitFor(t, 5*time.Second, "the connection to be pooled", func() bool { return p.Idle() == 1 })
	pg.Admin(t, "SELECT pg_terminate_backend("+pid+")")
	testenv.WaitFor(t, 5*time.Second, "the backend to end", func() bool {
		return pg.Admin(t, "SELECT count(*) FROM pg_stat_activity WHERE pid = "+pid) == "0"
	})
	if got := p.take(k1, false); got != nil {
		t.Error("a connection the server ended was served")
	}
	if p.Idle() != 0 {
		t.Errorf("%d idle after the take, want 0", p.Idle())
	}

	// At most size idle per key: the third of three is closed.
	waitIdle := func(n int) {
		t.Helper()
		testenv.WaitFor(t, 5*time.Second, fmt.Sprintf("%d idle connections and no reset running", n), func() bool {
			p.mu.Lock()
			e := p.keys[k1]
			resetting := e != nil && e.resetting > 0
			p.mu.Unlock()
			return !resetting && p.Idle() == n
		})
	}
	for range 3 {
		p.release(poolLogin(t, pg, k1), 2, log)
	}
	waitIdle(2)

	// Idle too long: closed, and the key forgotten.
	p.mu.Lock()
	p.idleFor = 20 * time.Millisecond
	p.mu.Unlock()
	a, b := p.take(k1, false), p.take(k1, false)
	if a == nil || b == nil {
		t.Fatal("the two pooled connections were not served")
	}
	p.release(a, 2, log)
	p.release(b, 2, log)
	waitIdle(0)
	p.mu.Lock()
	keys := len(p.keys)
	p.idleFor = poolIdle
	p.mu.Unlock()
	if keys != 0 {
		t.Errorf("%d keys left after every connection expired", keys)
	}

	// Past its lifetime: not served.
	old := poolLogin(t, pg, k1)
	old.born = time.Now().Add(-poolLifetime)
	p.release(old, 2, log)
	if got := p.take(k1, false); got != nil {
		t.Error("a connection past its lifetime was served")
	}
}

// TestPoolKey: the key of a session does not depend on the order of its
// startup parameters, and does on each part.
func TestPoolKey(t *testing.T) {
	p := NewPool()
	startup := func(params ...string) []byte {
		m := pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{}}
		for i := 0; i < len(params); i += 2 {
			m.Parameters[params[i]] = params[i+1]
		}
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b[4:]
	}
	// key is the key of the session whose client sent startup s, as run
	// makes it: from the message rewriteStartup decoded and re-encoded.
	key := func(scope, secret string, s []byte) PoolKey {
		_, sm, err := rewriteStartup(s, "app")
		if err != nil {
			t.Fatal(err)
		}
		return p.keyFor(scope, "app", "app", []byte(secret), sm)
	}
	base := startup("user", "app", "database", "db", "application_name", "psql")
	k := key("job", "s3cret", base)
	for range 20 {
		// Encode writes a map: its order changes from call to call.
		if key("job", "s3cret", startup("user", "app", "database", "db", "application_name", "psql")) != k {
			t.Fatal("the same startup parameters gave another key")
		}
	}
	for name, other := range map[string]PoolKey{
		"scope":     key("job 2", "s3cret", base),
		"secret":    key("job", "rotated", base),
		"parameter": key("job", "s3cret", startup("user", "app", "database", "db", "application_name", "pgx")),
		"extra":     key("job", "s3cret", startup("user", "app", "database", "db", "application_name", "psql", "options", "-c x=1")),
	} {
		if other == k {
			t.Errorf("another %s gave the same key", name)
		}
	}
}
