package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/approve/fleet"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestFleetApproval: a job's held COPY is listed from the fleet's NATS
// bucket with no daemon (sluice approvals list --nats) and decided through
// it (sluice approve --nats --token-file): a token signed by another key
// and a valid token outside the rule's approvers are refused by the
// holding daemon (the statement keeps waiting); the rule's approver lets
// it run. Measures the delay from the decision's put in the bucket to the
// statement running in PostgreSQL. Needs root (cgroup, eBPF, a private
// PostgreSQL).
func TestFleetApproval(t *testing.T) {
	cg := testenv.NewCgroup(t)
	n := testenv.StartNATS(t)
	is := testenv.NewIssuer(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	rules := strings.Replace(holdRules(pg.Addr()), `approvers = ["local-admin"]
    timeout   = "4s"`, `approvers = ["group:security"]
    timeout   = "60s"`, 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules, Body: fmt.Sprintf(`approvals {
  nats_url       = %q
  vm             = "vm-e2e"
  issuer         = %q
  issuer_ca_file = %q
  allow_claims   = { org = "acme" }
}
`, n.URL, is.URL, is.CAFile)})
	admin(t, pg, "create table users(id int); insert into users select generate_series(1, 3)")

	dir := t.TempDir()
	token := func(name, tok string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(tok+"\n"), 0o600)
		return p
	}
	claims := func(sub string, groups ...string) map[string]any {
		return map[string]any{"sub": sub, "aud": "sluice", "org": "acme", "email": sub + "@example.com", "email_verified": true, "groups": groups}
	}
	forger := testenv.NewIssuer(t)
	forgedClaims := claims("alice", "security")
	forgedClaims["iss"] = is.URL
	forged := token("forged", forger.Sign(t, forgedClaims))
	bob := token("bob", is.Sign(t, claims("bob", "dev")))
	alice := token("alice", is.Sign(t, claims("alice", "security")))

	// The statement reports when it ran, by PostgreSQL's clock.
	wait := background(t, cg, nobody(t), pg.PsqlArgs("", 0,
		`COPY (SELECT id, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') FROM users ORDER BY id) TO STDOUT`))

	var hold fleet.Hold
	testenv.WaitFor(t, 15*time.Second, "the held COPY in sluice approvals list --nats", func() bool {
		out, err := d.Sluice(t, "approvals", "list", "--nats", n.URL, "--json")
		if err != nil {
			return false
		}
		var l []fleet.Hold
		json.Unmarshal([]byte(out), &l)
		for _, h := range l {
			if h.VM == "vm-e2e" && h.Request.State == approve.StatePending {
				hold = h
				return true
			}
		}
		return false
	})
	id := hold.Request.ID
	if !strings.HasSuffix(hold.Request.Rule, "export") || !strings.Contains(hold.Request.Statement, "COPY") || hold.Request.Approvers[0] != "group:security" {
		t.Errorf("hold entry: %+v", hold.Request)
	}
	if out, err := d.Sluice(t, "approvals", "list", "--nats", n.URL); err != nil || !strings.Contains(out, "vm-e2e") || !strings.Contains(out, id) || !strings.Contains(out, "export") {
		t.Errorf("approvals list --nats: %v\n%s", err, out)
	}

	// Watch the decisions put in the bucket, for their server timestamps.
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), fleet.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(t.Context(), "decision."+id+".*", jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	approveWith := func(tok string) (string, error) {
		return d.Sluice(t, "approve", id, "--nats", n.URL, "--token-file", tok, "--comment", "from the fleet test")
	}
	stillPending := func(who string) {
		t.Helper()
		if r := pendingHold(t, d); r.ID != id {
			t.Errorf("after %s, the pending hold is %s, not %s", who, r.ID, id)
		}
	}
	if out, err := approveWith(forged); err == nil || !strings.Contains(out, "refused") || !strings.Contains(out, "invalid token") {
		t.Errorf("a forged token approved, or was refused without the reason: %v\n%s", err, out)
	}
	stillPending("the forged token")
	if out, err := approveWith(bob); err == nil || !strings.Contains(out, "not an approver") {
		t.Errorf("bob (group dev) approved, or was refused without the reason: %v\n%s", err, out)
	}
	stillPending("bob's token")
	if out, err := d.Sluice(t, "approve", id, "--nats", n.URL); err == nil || !strings.Contains(out, "--token-file") {
		t.Errorf("approve --nats without --token-file: %v\n%s", err, out)
	}

	out, err := approveWith(alice)
	if err != nil || !strings.Contains(out, id+": approved") {
		t.Fatalf("alice's approve --nats: %v\n%s", err, out)
	}
	var put time.Time
	for i := 0; i < 3; i++ { // the forged, bob's and alice's decisions
		select {
		case e := <-w.Updates():
			if e == nil {
				i--
				continue
			}
			put = e.Created()
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d decision puts seen", i)
		}
	}
	got, err := wait()
	if err != nil || !strings.Contains(got, "1\t") || !strings.Contains(got, "3\t") {
		t.Fatalf("the approved COPY: %v\n%s", err, got)
	}
	var ran time.Time
	for _, line := range strings.Split(got, "\n") {
		if id, ts, ok := strings.Cut(line, "\t"); ok && id == "1" {
			ran, err = time.Parse(time.RFC3339Nano, strings.TrimSpace(ts))
		}
	}
	if ran.IsZero() {
		t.Fatalf("no timestamp in the COPY's output (%v):\n%q", err, got)
	}
	delay := ran.Sub(put)
	t.Logf("delay from the decision's put in the bucket to the statement running: %v", delay)
	if delay < 0 || delay > time.Second {
		t.Errorf("the statement ran %v after the decision was put; want under a second", delay)
	}
	d.WaitLog(t, "fleet decision accepted", func(l testenv.LogLine) bool { return l.String("id") == id && l.String("approver") == "alice" })
	d.WaitLog(t, "fleet decision refused", func(l testenv.LogLine) bool { return l.String("id") == id && l.String("approver") == "bob" })

	// The entry shows the final state; sluice status shows the connection.
	testenv.WaitFor(t, 10*time.Second, "the hold approved in the bucket", func() bool {
		e, err := kv.Get(context.Background(), "hold."+id)
		if err != nil {
			return false
		}
		var h fleet.Hold
		return json.Unmarshal(e.Value(), &h) == nil && h.Request.State == approve.StateApproved
	})
	if st, err := d.Status(); err != nil || st.FleetApprovals == nil || !st.FleetApprovals.Connected || st.FleetApprovals.Accepted != 1 || st.FleetApprovals.Refused != 2 {
		t.Errorf("status fleet approvals: %v %+v", err, st.FleetApprovals)
	}
	if out, err := d.Sluice(t, "status", "--socket", d.Socket); err != nil || !strings.Contains(out, "approvals:   shared as vm vm-e2e in bucket SLUICE_HOLDS") ||
		!strings.Contains(out, "1 decisions accepted, 2 refused") {
		t.Errorf("sluice status: %v\n%s", err, out)
	}
}
