// Command pgxclient is a real pgx client for the end-to-end tests: it runs
// a named scenario against a DSN and prints one line per step, "name ok
// VALUE" or "name err SQLSTATE MESSAGE", so tests assert what a Go program
// using pgx would see. It is built and run by e2e tests inside the test
// cgroup.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: pgxclient DSN deny|cancel|oversize|malformed|mask|pipelined|keys|ssl|flood N [SESSIONS]|idle N")
		os.Exit(2)
	}
	ctx := context.Background()
	if os.Args[2] == "idle" {
		n := 1000
		if len(os.Args) > 3 {
			fmt.Sscan(os.Args[3], &n)
		}
		idle(ctx, os.Args[1], n)
		return
	}
	conn, err := pgx.Connect(ctx, os.Args[1])
	if err != nil {
		fmt.Println("connect err", code(err), err)
		if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Hint != "" {
			fmt.Println("connect hint", pe.Hint)
		}
		os.Exit(1)
	}
	defer conn.Close(ctx)
	switch os.Args[2] {
	case "deny":
		deny(ctx, conn)
	case "cancel":
		cancel(ctx, conn)
	case "oversize":
		oversize(ctx, conn)
	case "malformed":
		malformed(ctx, conn)
	case "mask":
		maskScenario(ctx, conn)
	case "pipelined":
		pipelined(ctx, conn, 1, 2)
		_, err := conn.Exec(ctx, "ROLLBACK")
		report("rollback", "", err)
	case "flood":
		// os.Args[3] distinct statements of 1 MiB each over os.Args[4]
		// sessions (default 1).
		n, sessions := 10000, 1
		if len(os.Args) > 3 {
			fmt.Sscan(os.Args[3], &n)
		}
		if len(os.Args) > 4 {
			fmt.Sscan(os.Args[4], &sessions)
		}
		denied, err := flood(ctx, os.Args[1], conn, n, sessions)
		report("flood", fmt.Sprint(denied), err)
	case "keys":
		// The backend's process ID, and the one in the cancel key the
		// client was given.
		var pid uint32
		err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid)
		report("keys", fmt.Sprint(pid, " ", conn.PgConn().PID()), err)
	case "ssl":
		// Whether the server hop of this session is encrypted.
		var ssl bool
		err := conn.QueryRow(ctx, "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)").Scan(&ssl)
		report("ssl", fmt.Sprint(ssl), err)
	default:
		fmt.Fprintln(os.Stderr, "unknown scenario")
		os.Exit(2)
	}
}

func code(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return "-"
}

func report(step string, v any, err error) {
	if err != nil {
		fmt.Printf("%s err %s %v\n", step, code(err), err)
		return
	}
	fmt.Printf("%s ok %v\n", step, v)
}

func count(ctx context.Context, conn *pgx.Conn, step string) {
	var n int
	err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
	report(step, n, err)
}

func deny(ctx context.Context, conn *pgx.Conn) {
	// Extended protocol with a prepared, cached statement.
	_, err := conn.Exec(ctx, "DROP TABLE t")
	report("drop-prepared", nil, err)
	count(ctx, conn, "count-after-drop")

	// Unnamed statement: Parse, Bind, Describe, Execute, Sync at once.
	_, err = conn.Exec(ctx, "DROP TABLE t", pgx.QueryExecModeExec)
	report("drop-exec-mode", nil, err)
	_, err = conn.Exec(ctx, "DROP TABLE t", pgx.QueryExecModeSimpleProtocol)
	report("drop-simple-protocol", nil, err)

	// Inside a transaction block.
	tx, err := conn.Begin(ctx)
	report("begin", nil, err)
	_, err = tx.Exec(ctx, "INSERT INTO t VALUES (3)")
	report("insert-in-tx", nil, err)
	_, err = tx.Exec(ctx, "DROP TABLE t")
	report("drop-in-tx", nil, err)
	var one int
	err = tx.QueryRow(ctx, "SELECT 1").Scan(&one)
	report("select-after-deny-in-tx", one, err)
	report("rollback", nil, tx.Rollback(ctx))
	count(ctx, conn, "count-after-rollback")

	// A pipelined batch: one round trip, the denied statement in the middle.
	b := &pgx.Batch{}
	b.Queue("SELECT 10")
	b.Queue("DELETE FROM t")
	b.Queue("SELECT 30")
	br := conn.SendBatch(ctx, b)
	for i := 0; i < 3; i++ {
		var v int
		err := br.QueryRow().Scan(&v)
		report(fmt.Sprintf("batch-%d", i), v, err)
	}
	report("batch-close", nil, br.Close())
	count(ctx, conn, "count-final")
}

// cancel sends a CancelRequest (on a new connection, as libpq and pgx do)
// while a query runs.
func cancel(ctx context.Context, conn *pgx.Conn) {
	start := time.Now()
	go func() {
		time.Sleep(500 * time.Millisecond)
		report("cancel-request", nil, conn.PgConn().CancelRequest(ctx))
	}()
	_, err := conn.Exec(ctx, "SELECT pg_sleep(20)")
	report("sleep", nil, err)
	fmt.Printf("elapsed-ms ok %d\n", time.Since(start).Milliseconds())
	var one int
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	report("after-cancel", one, err)
}

// oversize sends a 2 MB statement (the test daemon's limit is 1 MiB).
func oversize(ctx context.Context, conn *pgx.Conn) {
	q := "INSERT INTO t VALUES (42) /* " + strings.Repeat("x", 2<<20) + " */"
	_, err := conn.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol)
	report("oversize", nil, err)
	report("closed", conn.IsClosed(), nil)
}

// malformed writes a Query message whose length field is invalid.
func malformed(ctx context.Context, conn *pgx.Conn) {
	raw := conn.PgConn().Conn()
	raw.Write([]byte{'Q', 0, 0, 0, 2})
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(raw)
	if err != nil {
		report("malformed", nil, err)
		return
	}
	// The answer is an ErrorResponse; pull out its SQLSTATE.
	i := bytes.Index(b, []byte("\x00C"))
	if len(b) == 0 || b[0] != 'E' || i < 0 {
		fmt.Printf("malformed ok unexpected %q\n", b)
		return
	}
	code := b[i+2 : i+7]
	fmt.Printf("malformed err %s %q\n", code, b)
}

// maskScenario reads masked columns through the extended protocol, in
// binary and text formats.
func maskScenario(ctx context.Context, conn *pgx.Conn) {
	var email, name, ssn string
	err := conn.QueryRow(ctx, "SELECT email, name, ssn FROM users WHERE id = $1", 1).Scan(&email, &name, &ssn)
	report("row", email+"|"+name+"|"+ssn, err)
	var e2 string
	err = conn.QueryRow(ctx, "SELECT u.email FROM users u JOIN orders o ON o.user_id = u.id WHERE o.id = 1").Scan(&e2)
	report("join", e2, err)

	pipelined(ctx, conn, 3, 4)
	_, err = conn.Exec(ctx, "ROLLBACK")
	report("rollback", "", err)
}

// pipelined reads users.email the way drivers pipeline a transaction's
// first statement behind its BEGIN: a pgx batch (row a), and byte for byte
// as a Java-style driver sends it (row b), leaving the transaction open.
func pipelined(ctx context.Context, conn *pgx.Conn, a, b int) {
	var err error
	// A transaction's first statement pipelined behind its BEGIN, as a
	// pgx batch: one Sync for the lot.
	bt := &pgx.Batch{}
	bt.Queue("BEGIN")
	bt.Queue("SELECT email FROM users WHERE id = $1", a)
	bt.Queue("COMMIT")
	br := conn.SendBatch(ctx, bt)
	_, err = br.Exec()
	var e3 string
	if err == nil {
		err = br.QueryRow().Scan(&e3)
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	report("batch", e3, err)

	// The same, byte for byte as a Java-style driver sends it: unnamed
	// statements, the parameter in binary, Describe of the portal, one
	// Sync.
	fe := conn.PgConn().Frontend()
	fe.Send(&pgproto3.Parse{Query: "BEGIN"})
	fe.Send(&pgproto3.Bind{})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Parse{Query: "SELECT email FROM users WHERE id = $1"})
	fe.Send(&pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, byte(b)}}})
	fe.Send(&pgproto3.Describe{ObjectType: 'P'})
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	var raw []string
	err = fe.Flush()
	for err == nil {
		var m pgproto3.BackendMessage
		if m, err = fe.Receive(); err != nil {
			break
		}
		if d, ok := m.(*pgproto3.DataRow); ok {
			raw = append(raw, string(d.Values[0]))
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			err = fmt.Errorf("%s %s", e.Code, e.Message)
		}
		if _, ok := m.(*pgproto3.ReadyForQuery); ok {
			break
		}
	}
	report("pipelined", strings.Join(raw, ","), err)
}

// idle opens n connections (os.Args[3]) and holds them until stdin closes,
// printing "ready" once all are open.
func idle(ctx context.Context, dsn string, n int) {
	conns := make([]*pgx.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			fmt.Println("idle err", code(err), err)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready", len(conns))
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close(ctx)
	}
}

// flood sends n distinct statements of 1 MiB each, simple protocol, spread
// over conn and sessions-1 more connections to dsn: DROPs the test's
// ruleset denies, so the proxy reads, classifies and decides each one and
// the server parses none. It returns how many were denied (42501) and the
// first other error.
func flood(ctx context.Context, dsn string, conn *pgx.Conn, n, sessions int) (int, error) {
	pad := strings.Repeat("x", 1<<20)
	type result struct {
		denied int
		err    error
	}
	results := make(chan result, sessions)
	for s := 0; s < sessions; s++ {
		go func() {
			c := conn
			if s > 0 {
				var err error
				if c, err = pgx.Connect(ctx, dsn); err != nil {
					results <- result{err: err}
					return
				}
				defer c.Close(ctx)
			}
			var r result
			for i := s; i < n && r.err == nil; i += sessions {
				_, r.err = c.Exec(ctx, fmt.Sprintf("DROP TABLE t%d /* %s */", i, pad), pgx.QueryExecModeSimpleProtocol)
				if code(r.err) == "42501" {
					r.denied, r.err = r.denied+1, nil
				}
			}
			results <- r
		}()
	}
	denied := 0
	var err error
	for s := 0; s < sessions; s++ {
		r := <-results
		denied += r.denied
		if err == nil {
			err = r.err
		}
	}
	return denied, err
}
