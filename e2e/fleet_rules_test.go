package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/rulesource"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestFleetRulesPulled: two real daemons A and B (own cgroups, data
// dirs, sockets, proxy ports) pull their ruleset from one NATS JetStream
// object store. Before anything is published both enforce the embedded
// default and say so; `sluice rules publish` once and both report the
// version in `sluice status --json` and deny a DELETE from a job's psql;
// a tampered bundle put straight into the store and an older bundle
// replayed are refused by both, which keep enforcing the version they
// had; `sluice events tail` shows each VM's version; B restarted with
// the store down enforces its last good bundle from disk.
func TestFleetRulesPulled(t *testing.T) {
	n := testenv.StartNATS(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	admin(t, pg, "create table t(id int)")
	bin := testenv.Binaries(t)
	sluice := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin, "sluice"), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("sluice %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	work := t.TempDir()
	sluice("rules", "keygen", "--out", filepath.Join(work, "fleet"))
	src := n.URL + "/SLUICE_RULES/fleet"
	body := func(vm string) string {
		return `rules_source     = "` + src + `"
rules_public_key = "` + filepath.Join(work, "fleet.pub") + `"
rules_pull {
  every = "1s"
}
events {
  nats_url = "` + n.URL + `"
  vm       = "` + vm + `"
}
`
	}
	type vm struct {
		name string
		cg   *testenv.Cgroup
		d    *testenv.Daemon
	}
	vms := []*vm{{name: "vm-a"}, {name: "vm-b"}}
	for _, v := range vms {
		v.cg = testenv.NewCgroup(t)
		v.d = testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: v.cg, Body: body(v.name)})
	}
	pulled := func(v *vm) *api.RulesPulled {
		t.Helper()
		out := sluice("status", "--json", "--socket", v.d.Socket)
		var js struct{ Daemon *api.Status }
		if err := json.Unmarshal([]byte(out), &js); err != nil || js.Daemon == nil {
			t.Fatalf("%s: status --json: %v\n%s", v.name, err, out)
		}
		st := js.Daemon
		if st.Ruleset.Pulled == nil {
			t.Fatalf("%s: status --json has no ruleset.pulled:\n%s", v.name, out)
		}
		return st.Ruleset.Pulled
	}
	psql := func(v *vm, sql string) string {
		t.Helper()
		out, _, _ := psqlIn(t, v.cg, nobody(t), pg.PsqlArgs("", 0, sql))
		return out
	}

	// Never had a bundle: the embedded default, said in status and log.
	for _, v := range vms {
		if p := pulled(v); p.From != "default" || p.Version != 0 {
			t.Errorf("%s before any publish: %+v", v.name, p)
		}
		if out := sluice("status", "--socket", v.d.Socket); !strings.Contains(out, "nothing pulled from "+src+" yet: the embedded default ruleset is enforced") {
			t.Errorf("%s: sluice status before any publish:\n%s", v.name, out)
		}
		v.d.WaitLog(t, "no ruleset was ever pulled from rules_source; enforcing the embedded default until it is reached", nil)
		if out := psql(v, "DELETE FROM t;"); strings.Contains(out, "denied") {
			t.Fatalf("%s: DELETE denied before any ruleset was published: %s", v.name, out)
		}
	}

	// Publish once; both apply it.
	rules := filepath.Join(work, "rules")
	os.Mkdir(rules, 0o700)
	if err := os.WriteFile(filepath.Join(rules, "pg.hcl"), []byte(pgRules(pg.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	published := time.Now()
	out := sluice("rules", "publish", rules, "--to", src, "--key", filepath.Join(work, "fleet.key"))
	publishTook := time.Since(published)
	m := regexp.MustCompile(`published version (\d+) `).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("rules publish: %s", out)
	}
	v1, _ := strconv.ParseInt(m[1], 10, 64)
	for _, v := range vms {
		testenv.WaitFor(t, 10*time.Second, v.name+" to apply version "+m[1], func() bool { return pulled(v).Version == v1 })
		p := pulled(v)
		t.Logf("%s applied version %d %v after sluice rules publish started, %v after it signed the bundle (publish took %v; watched %t)", v.name, v1,
			p.Applied.Sub(published).Round(time.Millisecond), p.Applied.Sub(time.Unix(0, v1)).Round(time.Millisecond), publishTook.Round(time.Millisecond), p.Watching)
		if p.From != "source" || p.LastError != "" {
			t.Errorf("%s after publish: %+v", v.name, p)
		}
		if out := psql(v, "DELETE FROM t;"); !strings.Contains(out, "CI never deletes") {
			t.Errorf("%s: DELETE after the publish was not denied by the pulled ruleset: %s", v.name, out)
		}
	}

	// A tampered bundle, put straight into the store: the deny rule cut
	// out and the version raised, the signature left as it was.
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	obs, err := js.ObjectStore(ctx, "SLUICE_RULES")
	if err != nil {
		t.Fatal(err)
	}
	good1, err := obs.GetBytes(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	b, err := rulesource.Decode(good1)
	if err != nil {
		t.Fatal(err)
	}
	b.Files["pg.hcl"] = []byte(strings.Replace(string(b.Files["pg.hcl"]), `statement.kind == "delete"`, `statement.kind == "nothing"`, 1))
	b.Version = time.Now().UnixNano()
	tampered, _ := b.Encode()
	if _, err := obs.PutBytes(ctx, "fleet", tampered); err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		testenv.WaitFor(t, 10*time.Second, v.name+" to refuse the tampered bundle", func() bool { return pulled(v).Refused == b.Version })
		p := pulled(v)
		if p.Version != v1 || !strings.Contains(p.LastError, "signature does not verify") {
			t.Errorf("%s after the tampered bundle: %+v", v.name, p)
		}
		if out := sluice("status", "--socket", v.d.Socket); !strings.Contains(out, "ruleset ERROR") || !strings.Contains(out, "signature does not verify") {
			t.Errorf("%s: sluice status after the tampered bundle:\n%s", v.name, out)
		}
		v.d.WaitLog(t, "pulled bundle refused; the current ruleset stays", nil)
		if out := psql(v, "DELETE FROM t;"); !strings.Contains(out, "CI never deletes") {
			t.Errorf("%s: DELETE after the tampered bundle was not denied: %s", v.name, out)
		}
	}

	// A second publish, then the first bundle replayed: a rollback.
	if err := os.WriteFile(filepath.Join(rules, "extra.hcl"), []byte("# v2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	published = time.Now()
	out = sluice("rules", "publish", rules, "--to", src, "--key", filepath.Join(work, "fleet.key"))
	publishTook = time.Since(published)
	m = regexp.MustCompile(`published version (\d+) `).FindStringSubmatch(out)
	v2, _ := strconv.ParseInt(m[1], 10, 64)
	for _, v := range vms {
		testenv.WaitFor(t, 10*time.Second, v.name+" to apply version 2", func() bool { return pulled(v).Version == v2 })
		// The bucket exists now, so the daemons' watch, not a poll,
		// brings this version.
		p := pulled(v)
		t.Logf("%s applied version 2 %v after sluice rules publish started, %v after it signed the bundle (publish took %v; watched %t)", v.name,
			p.Applied.Sub(published).Round(time.Millisecond), p.Applied.Sub(time.Unix(0, v2)).Round(time.Millisecond), publishTook.Round(time.Millisecond), p.Watching)
	}
	if _, err := obs.PutBytes(ctx, "fleet", good1); err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		testenv.WaitFor(t, 10*time.Second, v.name+" to refuse the replayed bundle", func() bool { return pulled(v).Refused == v1 })
		if p := pulled(v); p.Version != v2 || !strings.Contains(p.LastError, "older than the version already applied") {
			t.Errorf("%s after the replay: %+v", v.name, p)
		}
	}

	// Every VM's version from the events stream, with no daemon.
	testenv.WaitFor(t, 15*time.Second, "ruleset events sent", func() bool {
		for _, v := range vms {
			st, err := v.d.Status()
			if err != nil || st.Events == nil || st.Events.Pending != 0 {
				return false
			}
		}
		return true
	})
	tail := sluice("events", "tail", "--nats", n.URL, "--since", "1h")
	applied := map[string]string{}
	refused := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(tail), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Type != "ruleset" {
			continue
		}
		switch e.Kind {
		case "applied":
			applied[e.VM] = e.Fields["version"]
		case "refused":
			refused[e.VM]++
		}
	}
	for _, v := range vms {
		if applied[v.name] != strconv.FormatInt(v2, 10) || refused[v.name] != 2 {
			t.Errorf("events tail: %s applied %q (want %d), refused %d (want 2):\n%s", v.name, applied[v.name], v2, refused[v.name], tail)
		}
	}

	// B restarts while the store is down: its last good bundle from disk.
	b2 := vms[1]
	b2.d.Stop(t)
	n.Stop(t)
	b2.d.Start(t)
	if p := pulled(b2); p.From != "disk" || p.Version != v2 || p.LastError == "" {
		t.Errorf("vm-b restarted with the store down: %+v", p)
	}
	if out := psql(b2, "DELETE FROM t;"); !strings.Contains(out, "CI never deletes") {
		t.Errorf("vm-b restarted with the store down: DELETE not denied: %s", out)
	}
}
