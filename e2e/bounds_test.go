package e2e

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// holdSessions opens n idle sessions through the proxy from one pgx
// client in the cgroup, and returns once they are all connected. The
// returned func closes them and waits for the client to exit.
func holdSessions(t *testing.T, cg *testenv.Cgroup, dsn string, n int) (closeAll func()) {
	t.Helper()
	cmd, done := cg.Command(t.Context(), pgxclient(t), dsn, "idle", strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	closeAll = func() {
		once.Do(func() {
			stdin.Close()
			cmd.Wait()
			done()
		})
	}
	t.Cleanup(closeAll)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != fmt.Sprintf("ready %d\n", n) {
		t.Fatalf("%d idle sessions: %q %v", n, line, err)
	}
	return closeAll
}

// TestSessionCap: with max_sessions = 5, five open sessions fill the
// daemon; a sixth connect, from psql and from pgx, gets PostgreSQL's own
// "too many connections" (SQLSTATE 53300) naming the cap, never reaches
// the server, and is counted (sluice status, sluice_sessions_refused_total,
// sluice_flows_total, a warn line). Once two of the five close, a new
// session gets in while the other three stay open.
func TestSessionCap(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	maddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: fmt.Sprintf("max_sessions = 5\nmetrics_addr = %q\n", maddr)})
	url := "http://" + maddr + "/metrics"
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())
	metric := func(ss []series, name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := value(ss, name, labels)
		if !ok {
			t.Fatalf("%s%v is not exported", name, labels)
		}
		return v
	}
	refusedLabels := map[string]string{"reason": "max_sessions"}

	closeStay := holdSessions(t, cg, dsn, 3)
	closeLeave := holdSessions(t, cg, dsn, 2)
	full := scrape(t, url)
	if a, m, r := metric(full, "sluice_sessions_active", nil), metric(full, "sluice_sessions_max", nil), metric(full, "sluice_sessions_refused_total", refusedLabels); a != 5 || m != 5 || r != 0 {
		t.Errorf("with five sessions open: active %v, max %v, refused %v; want 5, 5, 0", a, m, r)
	}
	backends := "select count(*) from pg_stat_activity where backend_type = 'client backend'"
	before := pg.Admin(t, backends)

	psql := func(sql string) (string, error) {
		return cg.Run(t, "psql", "-X", "-w", "-Atc", sql, "host=127.0.0.2 port="+strconv.Itoa(pg.Port)+" user=postgres dbname=postgres sslmode=disable")
	}
	out, err := psql("select 1")
	if err == nil || !strings.Contains(out, "FATAL:  sluice: too many sessions through the proxy (max_sessions = 5)") {
		t.Fatalf("sixth session (psql): %v: %s", err, out)
	}
	if out, _ := cg.Run(t, pgxclient(t), dsn, "ssl"); !strings.Contains(out, "connect err 53300") {
		t.Errorf("pgx past the cap: %q, want SQLSTATE 53300", out)
	}
	if after := pg.Admin(t, backends); after != before {
		t.Errorf("client backends %s -> %s: a refused connect reached the server", before, after)
	}
	st, err := d.Status()
	if err != nil || st.Flows.TooMany != 2 {
		t.Errorf("status too_many_sessions = %d (%v), want 2", st.Flows.TooMany, err)
	}
	refused := scrape(t, url)
	if r := metric(refused, "sluice_sessions_refused_total", refusedLabels); r != 2 {
		t.Errorf("sluice_sessions_refused_total{reason=max_sessions} = %v, want 2", r)
	}
	if f := metric(refused, "sluice_flows_total", map[string]string{"target": "pg", "protocol": "postgres", "outcome": "too_many_sessions"}); f != 2 {
		t.Errorf("sluice_flows_total{outcome=too_many_sessions} = %v, want 2", f)
	}
	d.WaitLog(t, "flow refused: too many sessions", func(l testenv.LogLine) bool {
		return l.String("max_sessions") == "5" && l.String("target") == "pg"
	})

	// Two leave; once the proxy has seen them go, a new session gets in
	// with the other three still open.
	closeLeave()
	testenv.WaitFor(t, 10*time.Second, "sluice_sessions_active to drop to 3", func() bool {
		v, _ := value(scrape(t, url), "sluice_sessions_active", nil)
		return v == 3
	})
	if out, err := psql("select 'back'"); err != nil || strings.TrimSpace(out) != "back" {
		t.Fatalf("a session after two of five closed: %v: %s", err, out)
	}
	if r := metric(scrape(t, url), "sluice_sessions_refused_total", refusedLabels); r != 2 {
		t.Errorf("sluice_sessions_refused_total = %v after a session under the cap, want still 2", r)
	}
	closeStay()
}

// TestMemoryBounded's parameters. CI runs the defaults; SLUICE_FLOOD_N
// and SLUICE_FLOOD_SESSIONS change them for a quicker or harder run.
var (
	// floodStatements is how many distinct 1 MiB statements are sent.
	floodStatements = 10000
	// floodSessions is how many sessions share them: with four, the
	// proxy's parsing and the client's sending overlap on two cores.
	floodSessions = 4
)

// maxRSS is the documented bound on sluiced's peak resident memory under
// that flood (README, PostgreSQL, Limits).
const maxRSS = 300 << 20

// procStatus returns fields of /proc/pid/status in KiB (VmRSS, VmHWM).
func procStatus(t *testing.T, pid int) map[string]int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "kB" {
			out[strings.TrimSuffix(f[0], ":")], _ = strconv.Atoi(f[1])
		}
	}
	return out
}

// procCPU returns the user and system CPU time pid has used.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command's closing parenthesis: state is the 3rd
	// field of stat, utime and stime the 14th and 15th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// TestMemoryBounded: 10,000 distinct statements of 1 MiB each (a DROP
// with a long comment, which the ruleset denies: the proxy reads,
// classifies and decides each one, the server parses none) over four
// sessions leave sluiced's peak resident memory (VmHWM) under maxRSS. The
// classification cache is bounded in bytes and a text over 64 KiB
// bypasses it; message buffers are not kept.
func TestMemoryBounded(t *testing.T) {
	for env, p := range map[string]*int{"SLUICE_FLOOD_N": &floodStatements, "SLUICE_FLOOD_SESSIONS": &floodSessions} {
		if s := os.Getenv(env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", env, s)
			}
			*p = n
		}
	}
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	// Recording at metadata level: 10 GiB of statement text is not what
	// this test is about (the recording queue has its own bound).
	rules := strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"metadata\"", 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", pg.Addr())
	rssBefore, cpuBefore := procStatus(t, d.PID())["VmRSS"], procCPU(t, d.PID())
	start := time.Now()
	cmd, done := cg.Command(t.Context(), pgxclient(t), dsn, "flood", strconv.Itoa(floodStatements), strconv.Itoa(floodSessions))
	defer done()
	o, err := cmd.CombinedOutput()
	out := string(o)
	if err != nil || !strings.Contains(out, "flood ok "+strconv.Itoa(floodStatements)) {
		t.Fatalf("flood: %v: %s", err, out)
	}
	took, cpu := time.Since(start), procCPU(t, d.PID())-cpuBefore
	st := procStatus(t, d.PID())
	client := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	t.Logf("%d statements of 1 MiB over %d sessions in %v; CPU: sluiced %v (%v a statement), client %v; sluiced RSS %d MiB before, %d MiB after, peak %d MiB (bound %d MiB)",
		floodStatements, floodSessions, took.Round(time.Millisecond), cpu, cpu/time.Duration(floodStatements), client.Round(10*time.Millisecond),
		rssBefore>>10, st["VmRSS"]>>10, st["VmHWM"]>>10, maxRSS>>20)
	if st["VmHWM"] == 0 || st["VmHWM"]<<10 > maxRSS {
		t.Fatalf("sluiced peak RSS %d KiB, bound %d MiB", st["VmHWM"], maxRSS>>20)
	}
}
