// Command connloop connects to a PostgreSQL DSN over and over for a given
// time, runs SELECT 1 on each connection, and prints one line per attempt:
// "ok LOCALPORT" (the client end's port, which the proxy logs as the flow's
// client) or "err MESSAGE". e2e/upgrade_test.go runs it inside the test
// cgroup while it replaces the daemon.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: connloop DSN DURATION")
		os.Exit(2)
	}
	d, err := time.ParseDuration(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "connloop:", err)
		os.Exit(2)
	}
	cfg, err := pgx.ParseConfig(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "connloop:", err)
		os.Exit(2)
	}
	cfg.Fallbacks = nil // one attempt per connection, no retries behind our back
	for end := time.Now().Add(d); time.Now().Before(end); {
		fmt.Println(attempt(cfg))
	}
}

func attempt(cfg *pgx.ConnConfig) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		time.Sleep(5 * time.Millisecond)
		return "err " + oneLine(err)
	}
	defer conn.Close(ctx)
	port := conn.PgConn().Conn().LocalAddr().(*net.TCPAddr).Port
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		return fmt.Sprintf("err %d %s", port, oneLine(err))
	}
	return fmt.Sprintf("ok %d", port)
}

func oneLine(err error) string {
	if err == nil {
		return "wrong answer"
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
