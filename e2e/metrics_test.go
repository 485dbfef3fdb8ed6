package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// series is one scraped sample: metric name, labels and value.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads the Prometheus text exposition at url.
func scrape(t *testing.T, url string) []series {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: %s\n%s", url, resp.Status, b)
	}
	var out []series
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("scrape: bad sample %q", line)
		}
		s := series{name: line[:sp], labels: map[string]string{}, value: v}
		if i := strings.IndexByte(line[:sp], '{'); i >= 0 {
			s.name = line[:i]
			for _, kv := range strings.Split(strings.TrimSuffix(line[i+1:sp], "}"), ",") {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
		}
		out = append(out, s)
	}
	return out
}

// value sums the samples of name whose labels include want.
func value(ss []series, name string, want map[string]string) (float64, bool) {
	sum, found := 0.0, false
	for _, s := range ss {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
			}
		}
		if match {
			sum, found = sum+s.value, true
		}
	}
	return sum, found
}

// TestMetrics: with metrics_addr set, an allowed and a denied statement
// through the proxy move the flow, verdict-by-rule, identity and latency
// metrics, and the recording writes bytes. Needs root (cgroup, eBPF, a
// private PostgreSQL).
func TestMetrics(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	rules := strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"commands\"", 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules, Body: fmt.Sprintf("metrics_addr = %q\n", addr)})
	url := "http://" + addr + "/metrics"

	before := scrape(t, url)
	for _, name := range []string{"sluice_holds_pending", "sluice_recording_queue_depth", "sluice_recording_bytes_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := value(before, name, nil); !ok {
			t.Errorf("%s is not exported", name)
		}
	}
	if v, _ := value(before, "sluice_flows_total", nil); v != 0 {
		t.Errorf("flows before any connection = %v", v)
	}

	if out, err := cg.Run(t, pg.PsqlArgs("", 0, "SELECT 41 + 1")[0], pg.PsqlArgs("", 0, "SELECT 41 + 1")[1:]...); err != nil || strings.TrimSpace(out) != "42" {
		t.Fatalf("allowed statement: %v\n%s", err, out)
	}
	if out, _ := cg.Run(t, pg.PsqlArgs("", 0, "DROP TABLE pg_class")[0], pg.PsqlArgs("", 0, "DROP TABLE pg_class")[1:]...); !strings.Contains(out, `denied by rule "ci/deny/no-drop"`) {
		t.Fatalf("DROP was not denied:\n%s", out)
	}
	d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("denied") == "1" })

	after := scrape(t, url)
	check := func(name string, labels map[string]string, want float64) {
		t.Helper()
		if v, _ := value(after, name, labels); v != want {
			t.Errorf("%s%v = %v, want %v", name, labels, v, want)
		}
	}
	check("sluice_flows_total", map[string]string{"target": "pg", "protocol": "postgres", "outcome": "served"}, 2)
	check("sluice_verdicts_total", map[string]string{"rule": "ci/deny/no-drop", "verdict": "deny"}, 1)
	// The allowed SELECT matched no rule of the policy: its verdict is
	// the policy's allow.
	if v, _ := value(after, "sluice_verdicts_total", map[string]string{"verdict": "allow"}); v != 1 {
		t.Errorf("allow verdicts = %v, want 1 (the SELECT)", v)
	}
	// psql in the test cgroup has no CI job above it.
	check("sluice_identity_resolutions_total", map[string]string{"level": "none", "result": "no_job"}, 2)
	check("sluice_statement_latency_seconds_count", nil, 1)
	check("sluice_holds_pending", nil, 0)
	if v, _ := value(after, "sluice_recording_bytes_total", nil); v <= 0 {
		t.Errorf("sluice_recording_bytes_total = %v after two recorded sessions", v)
	}
	if v, _ := value(after, "sluice_statement_latency_seconds_sum", nil); v <= 0 || v > 10 {
		t.Errorf("statement latency sum = %vs for one SELECT", v)
	}
}
