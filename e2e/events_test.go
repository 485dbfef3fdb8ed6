package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestEventsToJetStream: a denial in a job's psql session on daemon A is
// published to a real nats-server's JetStream stream (created by A), with
// the session's start and end, and sluice events tail reads it back with
// no daemon; sluice status reports the publisher. Then nats-server is
// killed with SIGKILL: a second session's events wait in A's buffer
// (pending in sluice status) and arrive, once each, after the server is
// back on the same store.
func TestEventsToJetStream(t *testing.T) {
	cg := testenv.NewCgroup(t)
	n := testenv.StartNATS(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg,
		Rules: strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"commands\"", 1),
		Body: `events {
  nats_url = "` + n.URL + `"
  vm       = "vm-a"
}
`})
	admin(t, pg, "create table t(id int)")

	// Watch the subjects to time the delay from the decision to the
	// stream's copy (a JetStream publish is acknowledged after it is
	// stored; core subscribers see it as it is stored).
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	type arrival struct {
		e  events.Event
		at time.Time
	}
	got := make(chan arrival, 100)
	sub, err := nc.Subscribe("sluice.events.vm-a.>", func(m *nats.Msg) {
		var e events.Event
		if json.Unmarshal(m.Data, &e) == nil {
			got <- arrival{e, time.Now()}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	nc.Flush()

	out, _, _ := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT 1; DROP TABLE t;"))
	if !strings.Contains(out, "denied") {
		t.Fatalf("psql: %s", out)
	}
	var deny arrival
	timeout := time.After(15 * time.Second)
	for deny.e.ID == "" {
		select {
		case a := <-got:
			if a.e.Type == "statement" && a.e.Verdict == "deny" {
				deny = a
			}
		case <-timeout:
			t.Fatal("no denial event on sluice.events.vm-a.> within 15 s")
		}
	}
	t.Logf("denial event reached the stream %v after the decision", deny.at.Sub(deny.e.Time).Round(time.Microsecond))
	if !strings.Contains(deny.e.Text, "DROP TABLE t") || deny.e.Rule != "ci/deny/no-drop" || deny.e.Target != "pg" || deny.e.VM != "vm-a" {
		t.Errorf("denial event %+v", deny.e)
	}
	testenv.WaitFor(t, 15*time.Second, "the session's end event sent", func() bool {
		st, err := d.Status()
		return err == nil && st.Events != nil && st.Events.Sent >= 3 && st.Events.Pending == 0
	})
	if out, err := d.Sluice(t, "status", "--socket", d.Socket); err != nil || !strings.Contains(out, "events:      stream SLUICE_EVENTS at "+n.URL+" (connected)") {
		t.Errorf("sluice status: %v\n%s", err, out)
	}

	// The server goes away mid-stream (kill -9) and comes back.
	n.Kill(t)
	out, _, _ = psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "DELETE FROM t;"))
	if !strings.Contains(out, "denied") {
		t.Fatalf("psql with NATS down: %s", out)
	}
	testenv.WaitFor(t, 15*time.Second, "the second session's events buffered", func() bool {
		st, err := d.Status()
		return err == nil && st.Events != nil && st.Events.Pending >= 3
	})
	n.Start(t)
	back := time.Now()
	testenv.WaitFor(t, 30*time.Second, "the buffered events sent once NATS is back", func() bool {
		st, err := d.Status()
		return err == nil && st.Events != nil && st.Events.Pending == 0 && st.Events.Sent >= 6
	})
	t.Logf("the buffered events were sent %v after nats-server came back", time.Since(back).Round(time.Millisecond))

	start := time.Now()
	cmd := exec.Command(filepath.Join(testenv.Binaries(t), "sluice"), "events", "tail", "--nats", n.URL, "--since", "1h")
	cmd.Env = os.Environ()
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sluice events tail: %v\n%s", err, b)
	}
	t.Logf("sluice events tail took %v", time.Since(start).Round(time.Millisecond))
	var types []string
	ids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events tail line %q: %v", line, err)
		}
		types = append(types, e.Type+"/"+e.Verdict)
		if ids[e.ID] {
			t.Errorf("event %s in the stream twice", e.ID)
		}
		ids[e.ID] = true
		if e.Type == "statement" && e.ID != deny.e.ID && !strings.Contains(e.Text, "DELETE FROM t") {
			t.Errorf("a statement event %+v (only the denials are published; the allowed SELECT is not)", e)
		}
	}
	if want := "session_start/allow statement/deny session_end/ session_start/allow statement/deny session_end/"; strings.Join(types, " ") != want {
		t.Errorf("events tail gave %q, want %q:\n%s", strings.Join(types, " "), want, b)
	}
}
