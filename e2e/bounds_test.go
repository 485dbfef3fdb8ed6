package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestSessionCap: with max_sessions = 5, five open sessions fill the
// daemon; a sixth connect gets PostgreSQL's own "too many connections"
// (SQLSTATE 53300) naming the cap, is counted, and never reaches the
// server; once the five close, connects work again.
func TestSessionCap(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()), Body: "max_sessions = 5\n"})
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())

	cmd, done := cg.Command(t.Context(), pgxclient(t), dsn, "idle", "5")
	defer done()
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready 5") {
		t.Fatalf("idle sessions: %q %v", line, err)
	}
	before := pg.Admin(t, "select count(*) from pg_stat_activity where backend_type = 'client backend'")

	out, err := cg.Run(t, "psql", "-X", "-w", "-Atc", "select 1", "host=127.0.0.2 port="+strconv.Itoa(pg.Port)+" user=postgres dbname=postgres sslmode=disable")
	if err == nil || !strings.Contains(out, "too many sessions through the proxy (max_sessions = 5)") {
		t.Fatalf("sixth session: %v: %s", err, out)
	}
	if out, _ := cg.Run(t, pgxclient(t), dsn, "ssl"); !strings.Contains(out, "connect err 53300") {
		t.Errorf("pgx past the cap: %q, want SQLSTATE 53300", out)
	}
	if after := pg.Admin(t, "select count(*) from pg_stat_activity where backend_type = 'client backend'"); after != before {
		t.Errorf("client backends %s -> %s: a refused connect reached the server", before, after)
	}
	st, err := d.Status()
	if err != nil || st.Flows.TooMany != 2 {
		t.Errorf("status too_many_sessions = %d (%v), want 2", st.Flows.TooMany, err)
	}
	d.WaitLog(t, "flow refused: too many sessions", nil)

	stdin.Close()
	cmd.Wait()
	// The five end; a new session gets in (wait until they are gone).
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = cg.Run(t, "psql", "-X", "-w", "-Atc", "select 'back'", "host=127.0.0.2 port="+strconv.Itoa(pg.Port)+" user=postgres dbname=postgres sslmode=disable")
		if err == nil && strings.TrimSpace(out) == "back" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the idle sessions closed: %v: %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// floodStatements is how many distinct 1 MiB statements
// TestMemoryBounded sends.
var floodStatements = 10000

// maxRSS is the documented bound on sluiced's resident memory under that
// flood (README, Limits).
const maxRSS = 400 << 20

// TestMemoryBounded: 10,000 distinct statements of 1 MiB each through one
// session (each read, classified and denied by the proxy) leave sluiced's peak resident memory under maxRSS: the
// classification cache is bounded in bytes and skips texts over 64 KiB,
// and message buffers are not kept.
func TestMemoryBounded(t *testing.T) {
	if s := os.Getenv("SLUICE_FLOOD_N"); s != "" {
		floodStatements, _ = strconv.Atoi(s)
	}
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	// Recording at metadata level: 10 GiB of statement text is not what
	// this test is about (the recording queue has its own bound).
	rules := strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"metadata\"", 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())
	start := time.Now()
	cmd, done := cg.Command(t.Context(), pgxclient(t), dsn, "flood", strconv.Itoa(floodStatements))
	defer done()
	o, err := cmd.CombinedOutput()
	out := string(o)
	if err != nil || !strings.Contains(out, "flood ok "+strconv.Itoa(floodStatements)) {
		t.Fatalf("flood: %v: %s", err, out)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.PID()))
	if err != nil {
		t.Fatal(err)
	}
	var hwm int
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			hwm, _ = strconv.Atoi(f[1])
		}
	}
	t.Logf("%d statements of 1 MiB in %v; sluiced peak RSS %d MiB", floodStatements, time.Since(start).Round(time.Millisecond), hwm>>10)
	if hwm == 0 || hwm<<10 > maxRSS {
		t.Fatalf("sluiced peak RSS %d KiB, bound %d MiB", hwm, maxRSS>>20)
	}
}
