package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/testenv"
)

// tamperer builds the tamper helper once.
func tamperer(t *testing.T) string { return helperBinary(t, "tamperer") }

// rootJob is a runner host whose jobs run as root: a scope cgroup the test
// made, holding the runner's cgroup and the places a job may flee to, and
// sluiced with the scope set (its connect programs on the scope, acting
// for job tasks only).
type rootJob struct {
	scope, runner, flee *testenv.Cgroup
	pg                  *testenv.Postgres
	d                   *testenv.Daemon
	metrics             string
}

func startRootJob(t *testing.T, body string) *rootJob {
	t.Helper()
	j := &rootJob{scope: testenv.NewCgroup(t), metrics: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t, "127.0.0.1"))}
	j.runner = j.scope.Child(t, "runner")
	j.flee = j.scope.Child(t, "flee")
	j.pg = testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	admin(t, j.pg, "create table t(i int); create table other(i int);")
	j.d = testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: j.runner, Rules: pgRules(j.pg.Addr()),
		Body: fmt.Sprintf("scope = %q\nmetrics_addr = %q\n", j.scope.Rel, j.metrics) + body})
	return j
}

// job runs script with sh as a root job process: started in the runner's
// cgroup. PSQL in the script is psql against the protected server.
func (j *rootJob) job(t *testing.T, script string) (string, error) {
	t.Helper()
	psql := strings.Join(j.pg.PsqlArgs("", 0, ""), " ")
	psql = strings.TrimSuffix(psql, " -Atc ")
	script = strings.ReplaceAll(script, "PSQL", psql+" -v VERBOSITY=verbose -Atc")
	out, err := j.runner.Run(t, "sh", "-c", script)
	return strings.TrimSpace(out), err
}

// denied reports whether out is the DROP refused by Sluice.
func denied(out string) bool {
	return strings.Contains(out, "42501") && strings.Contains(out, "no-drop")
}

// TestEscapeMatrix: a root job that leaves its cgroup every way it can
// stays intercepted (its DROP is refused by the rule, the table stays) or
// is refused, never direct; a process that never was a job's, in the same
// places, is left alone.
func TestEscapeMatrix(t *testing.T) {
	j := startRootJob(t, "")
	procs := func(cg *testenv.Cgroup) string { return filepath.Join(cg.Path, "cgroup.procs") }
	for _, tc := range []struct {
		name, script string
		refused      bool // refused (unreachable) rather than intercepted
	}{
		{"stay", `PSQL 'drop table t'`, false},
		{"move-to-sibling", `echo $$ > ` + procs(j.flee) + ` && PSQL 'drop table t'`, false},
		{"move-to-scope", `echo $$ > ` + procs(j.scope) + ` && PSQL 'drop table t'`, false},
		// The grandchild outlives both its parents; the job waits (10 s at
		// most) for the line it writes last.
		{"move-then-double-fork", `f=$(mktemp) && echo $$ > ` + procs(j.flee) + ` && setsid sh -c "(PSQL 'drop table t' > $f 2>&1; echo finished >> $f) &" && ` +
			`for i in $(seq 100); do grep -q finished $f && break; sleep 0.1; done; cat $f; rm -f $f`, false},
		{"new-child-cgroup-of-sibling", `mkdir -p ` + filepath.Join(j.flee.Path, "deeper") + ` && echo $$ > ` + filepath.Join(j.flee.Path, "deeper", "cgroup.procs") + ` && PSQL 'drop table t'`, false},
		{"unshare-cgroup-namespace", `unshare -C sh -c "PSQL 'drop table t'"`, false},
		{"unshare-user-namespace", `unshare -U -r sh -c "PSQL 'drop table t'"`, false},
		{"move-then-unshare-all", `echo $$ > ` + procs(j.flee) + ` && unshare -U -r -C -p -f --mount-proc sh -c "PSQL 'drop table t'"`, false},
		{"unshare-net-namespace", `unshare -n sh -c "PSQL 'drop table t'"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := j.job(t, tc.script)
			switch {
			case tc.refused:
				if err == nil || denied(out) || !(strings.Contains(out, "Connection refused") || strings.Contains(out, "Network is unreachable") || strings.Contains(out, "Operation not permitted")) {
					t.Errorf("job %s: err %v, output %q; want the connection refused", tc.name, err, out)
				}
			case !denied(out):
				t.Errorf("job %s: err %v, output %q; want the DROP refused by no-drop (42501)", tc.name, err, out)
			}
			if n := admin(t, j.pg, "select count(*) from pg_tables where tablename = 't'"); n != "1" {
				t.Fatalf("after job %s, table t is gone: the DROP went direct", tc.name)
			}
		})
	}
	// Cleanup of the deeper cgroup the job made (the job is gone).
	os.Remove(filepath.Join(j.flee.Path, "deeper"))

	// A process that never was a job's, in the sibling cgroup, under the
	// same scope: untouched, its DROP goes to the server.
	args := j.pg.PsqlArgs("", 0, "drop table other")
	out, err := j.flee.Run(t, args[0], args[1:]...)
	if err != nil {
		t.Fatalf("psql outside any job: %v\n%s", err, out)
	}
	if n := admin(t, j.pg, "select count(*) from pg_tables where tablename = 'other'"); n != "0" {
		t.Errorf("a process that never was a job's was intercepted: table other still there")
	}

	// Each move out of the job cgroup is a tamper alert with the mover's
	// pid: log line, metric and recording.
	l := j.d.WaitLog(t, "tamper: a job process was moved out of its job cgroup", func(l testenv.LogLine) bool {
		return strings.HasSuffix(l.String("to_cgroup"), j.flee.Rel)
	})
	if l.String("pid") == "" || l.String("comm") != "sh" || l.String("job_cgroup") != j.runner.Rel || l.String("session") == "" {
		t.Errorf("tamper alert %v: want the mover's pid and comm, its job cgroup %s and a recording", l, j.runner.Rel)
	}
	st, err := j.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Scope != j.scope.Rel || len(st.JobCgroups) != 1 || st.JobCgroups[0].Path != j.runner.Rel || st.Tamper["cgroup_move"] != 5 {
		t.Errorf("status scope %q, job cgroups %v, tamper %v; want the scope, the runner's cgroup, 5 cgroup moves", st.Scope, st.JobCgroups, st.Tamper)
	}
	var moves int
	for _, s := range listSessions(t, j.d) {
		if s.Protocol == "tamper" && s.Target == "cgroup_move" {
			moves++
		}
	}
	if moves != 5 {
		t.Errorf("%d cgroup_move recordings, want 5 (sibling, scope, double fork's mover, deeper, unshare's mover)", moves)
	}
}

// TestTamperMatrix: each thing a root job does against Sluice produces
// exactly one alert of its kind, with the job's pid, in the log, the
// metric and a recording; killing sluiced is reported by the next one.
func TestTamperMatrix(t *testing.T) {
	// The approvals webhook and the live export hear of every alert.
	hookAddr, hooks := webhookReceiver(t, 64)
	liveFile := filepath.Join(t.TempDir(), "events.jsonl")
	j := startRootJob(t, fmt.Sprintf("approvals {\n  webhook = \"http://%s/hook\"\n}\nlive_export {\n  file = %q\n}\n", hookAddr, liveFile))
	bin := tamperer(t)
	pid := strconv.Itoa(j.d.PID())
	pinDir := "/sys/fs/bpf/sluice/" + j.d.Name
	cases := []struct{ kind, args string }{
		{"signal_sluiced", "signal " + pid + " 18"}, // SIGCONT: reported, harmless
		{"ptrace_sluiced", "ptrace " + pid},
		{"bpf", "bpf"},
		{"module_load", "module"},
		{"pin_removal", "unlink " + pinDir + "/sluice_stats"},
	}
	for _, tc := range cases {
		out, err := j.job(t, bin+" "+tc.args+"; echo job=$$")
		if err != nil {
			t.Fatalf("tamperer %s: %v\n%s", tc.args, err, out)
		}
		l := j.d.WaitLogMatch(t, func(l testenv.LogLine) bool {
			return strings.HasPrefix(l.Message(), "tamper: ") && l.String("kind") == tc.kind
		})
		if l.String("comm") != "tamperer" || l.String("identity") == "" || l.String("session") == "" {
			t.Errorf("%s alert %v: want the tamperer's pid, its identity level and a recording", tc.kind, l)
		}
	}
	// A job appends to the ruleset: config_change. The test (an operator,
	// no job) does the same: no alert.
	rules := filepath.Join(j.d.RulesDir, "rules.hcl")
	if out, err := j.job(t, "echo '# edited by a job' >> "+rules); err != nil {
		t.Fatalf("job edits the ruleset: %v %q", err, out)
	}
	l := j.d.WaitLogMatch(t, func(l testenv.LogLine) bool {
		return strings.HasPrefix(l.Message(), "tamper: ") && l.String("kind") == "config_change"
	})
	// The shell may be gone by the time sluiced reads the event: its pid
	// and its job cgroup (from the kernel's mark) are what is certain.
	gone := strings.Contains(l.String("comm"), "exited before sluiced could tell")
	if l.String("path") != rules || l.String("pid") == "" || (l.String("job_cgroup") != j.runner.Rel && !gone) || l.String("session") == "" {
		t.Errorf("config_change alert %v: want the rules file, the job's pid and job cgroup", l)
	}
	f, err := os.OpenFile(rules, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# edited by the operator\n")
	f.Close()
	j.d.WaitLog(t, "configuration file changed", func(l testenv.LogLine) bool { return l.String("pid") == strconv.Itoa(os.Getpid()) })
	cases = append(cases, struct{ kind, args string }{"config_change", ""})

	counts := map[string]int{}
	for _, l := range j.d.Logs(t) {
		if strings.HasPrefix(l.Message(), "tamper: ") {
			counts[l.String("kind")]++
		}
	}
	for _, tc := range cases {
		if counts[tc.kind] != 1 {
			t.Errorf("%d %s alerts, want exactly 1 (all: %v)", counts[tc.kind], tc.kind, counts)
		}
	}
	ss := scrape(t, "http://"+j.metrics+"/metrics")
	for _, tc := range cases {
		if v, _ := value(ss, "sluice_tamper_events_total", map[string]string{"kind": tc.kind}); v != 1 {
			t.Errorf("sluice_tamper_events_total{kind=%q} = %v, want 1", tc.kind, v)
		}
	}
	heard := map[string]int{}
	testenv.WaitFor(t, 10*time.Second, "the webhook to hear every alert", func() bool {
		for len(hooks) > 0 {
			m := <-hooks
			if a, ok := m["alert"].(map[string]any); ok && m["kind"] == "alert" {
				heard[fmt.Sprint(a["kind"])]++
			}
		}
		return len(heard) == len(cases)
	})
	testenv.WaitFor(t, 10*time.Second, "the live export to carry every alert", func() bool {
		b, _ := os.ReadFile(liveFile)
		for _, tc := range cases {
			if !strings.Contains(string(b), "tamper:"+tc.kind) {
				return false
			}
		}
		return true
	})

	// A job with a session open: the alert is also written into that
	// session's recording. The job is a Runner.Worker (GitHub's job
	// process), so both its psql and its tamperer belong to one job.
	flag := filepath.Join(t.TempDir(), "go")
	psql := strings.Join(j.pg.PsqlArgs("", 0, "select pg_sleep(3)"), " ")
	psql = strings.Replace(psql, "-Atc select pg_sleep(3)", "-Atc 'select pg_sleep(3)'", 1)
	job, done := j.runner.Command(t.Context(), runnerWorker(t), "-c",
		psql+" & while [ ! -e "+flag+" ]; do sleep 0.05; done; "+bin+" bpf; wait")
	defer done()
	if err := job.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the job's session to open", func() bool {
		st, err := j.d.Status()
		return err == nil && st.Flows.Active == 1
	})
	os.WriteFile(flag, nil, 0o644)
	if err := job.Wait(); err != nil {
		t.Fatalf("job with a session: %v", err)
	}
	l = j.d.WaitLogMatch(t, func(l testenv.LogLine) bool {
		return strings.HasPrefix(l.Message(), "tamper: ") && l.String("kind") == "bpf" && strings.HasPrefix(l.String("job"), "github:")
	})
	if l.String("job_sessions") != "1" {
		t.Errorf("alert %v: want it written into the job's one open session", l)
	}
	var noted bool
	for _, s := range listSessions(t, j.d) {
		if s.Protocol == "postgres" {
			show, _ := j.d.Sluice(t, "sessions", "show", "--socket", j.d.Socket, s.ID)
			noted = noted || strings.Contains(show, "-- note: a job process called bpf()")
		}
	}
	if !noted {
		t.Errorf("no PostgreSQL session's recording holds the tamper note")
	}

	// kill -9 of sluiced by the job: the kernel writes the alert while no
	// daemon runs; the next daemon reports it.
	out, err := j.job(t, "kill -9 "+pid+"; echo killed")
	if err != nil || !strings.Contains(out, "killed") {
		t.Fatalf("kill -9 sluiced: %v %q", err, out)
	}
	j.d.WaitExit(t)
	j.d.Start(t)
	l = j.d.WaitLog(t, "tamper: a job process sent a signal to sluiced", func(l testenv.LogLine) bool { return l.String("signal") == "9" })
	if l.String("target_pid") != pid || l.String("comm") != "kill" && l.String("comm") != "sh" {
		t.Errorf("kill alert %v: want the old sluiced %s as the target, from the job's kill", l, pid)
	}
	var found bool
	for _, s := range listSessions(t, j.d) {
		found = found || (s.Protocol == "tamper" && s.Target == "signal_sluiced" && s.Status == store.StatusSealed && s.Start.Before(time.Now()))
	}
	if !found {
		t.Errorf("no recording of the signal alert")
	}
}
