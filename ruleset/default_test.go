package ruleset_test

import (
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/decoder"
	_ "github.com/sluicehq/sluice/decoder/all"
	"github.com/sluicehq/sluice/ruleset"
)

// TestDefaultRuleset runs the default ruleset's test blocks, the ones
// with a query through the target protocol's classifier from the
// registry (as sluice rules test does).
func TestDefaultRuleset(t *testing.T) {
	rs := ruleset.Default()
	if got := len(rs.Targets()); got != 4 {
		t.Fatalf("default has %d targets, want 4", got)
	}
	classify := func(protocol, text string) (ruleset.Statement, error) {
		p, _ := decoder.Lookup(protocol)
		if p.Classify == nil {
			t.Fatalf("no classifier for %s", protocol)
		}
		return p.Classify(text)
	}
	for _, r := range rs.RunTests(classify) {
		if !r.Passed {
			t.Errorf("%s: %s", r.Name, r.Message)
		}
	}
	if rs.Tests() == 0 {
		t.Fatal("default ruleset has no tests")
	}
}

// TestDefaultRulesetSSH: the default's own ssh target is relayed (no
// credentials, so never decoded: git over ssh keeps working), and its ssh
// rules, on the requests a decoder would report, refuse tunnels and
// dumps, allow the rest, and never mask an ssh byte stream.
func TestDefaultRulesetSSH(t *testing.T) {
	rs := ruleset.Default()
	tg := rs.Target("ssh")
	if len(tg.Credentials) != 0 || tg.KnownHosts != "" || tg.Undecoded != ruleset.UndecodedRelay {
		t.Fatalf("default ssh target: %d credentials, known_hosts %q, undecoded %q; want none, none, relay", len(tg.Credentials), tg.KnownHosts, tg.Undecoded)
	}
	ssh, _ := decoder.Lookup(ruleset.ProtoSSH)
	if ssh.Classify == nil {
		t.Fatal("the ssh decoder registers no classifier")
	}
	flow := ruleset.Flow{Target: ruleset.Endpoint{Name: "ssh", Protocol: ruleset.ProtoSSH}}
	decide := func(st ruleset.Statement) ruleset.Decision {
		return rs.Evaluate(&ruleset.Input{Flow: flow, Statement: st})
	}
	request := func(r ruleset.SSHRequest) ruleset.Statement {
		st := ruleset.Statement{Kind: r.Kind, SSH: &r}
		if r.SFTPOp != "" {
			st.Kind = ruleset.KindSFTP
		}
		return st
	}
	for _, tc := range []struct {
		req  ruleset.SSHRequest
		rule string // "" when allowed
	}{
		{ruleset.SSHRequest{Kind: ruleset.SSHDirectTCPIP, ForwardHost: "db", ForwardPort: 5432}, "baseline/deny/ssh-tunnels"},
		{ruleset.SSHRequest{Kind: ruleset.SSHDirectTCPIP, ForwardHost: "/run/docker.sock"}, "baseline/deny/ssh-tunnels"},
		{ruleset.SSHRequest{Kind: ruleset.SSHTCPIPForward, ForwardHost: "0.0.0.0", ForwardPort: 80}, "baseline/deny/ssh-tunnels"},
		{ruleset.SSHRequest{Kind: ruleset.SSHAgentForward}, "baseline/deny/ssh-tunnels"},
		{ruleset.SSHRequest{Kind: ruleset.SSHX11}, "baseline/deny/ssh-tunnels"},
		{ruleset.SSHRequest{Kind: ruleset.SSHShell, Pty: true, Term: "xterm"}, ""},
		{ruleset.SSHRequest{Kind: ruleset.SSHSubsystem, Subsystem: "sftp"}, ""},
		{ruleset.SSHRequest{Kind: ruleset.SSHSubsystem, Subsystem: "sftp", SFTPOp: "read", SFTPPath: "/etc/app.conf"}, ""},
		{ruleset.SSHRequest{Kind: ruleset.SSHSubsystem, Subsystem: "sftp", SFTPOp: "remove", SFTPPath: "/srv/x"}, ""},
	} {
		d := decide(request(tc.req))
		if tc.rule == "" && (d.Action != ruleset.Allow || len(d.Masks) > 0) || tc.rule != "" && (d.Action != ruleset.Deny || d.Rule.ID != tc.rule) {
			t.Errorf("%+v: %s by %s, masks %d; want rule %q", tc.req, d.Action, d.Rule.ID, len(d.Masks), tc.rule)
		}
	}
	for _, tc := range []struct {
		command string
		denied  bool
	}{
		{"pg_dump prod", true},
		{"pg_dumpall --globals-only", true},
		{"mysqldump --all-databases", true},
		{"mariadb-dump shop", true},
		{"sudo -u postgres /usr/lib/postgresql/16/bin/pg_dump prod | gzip > /tmp/prod.sql.gz", true},
		{"env PGPASSWORD=x pg_dump -h db prod", true},
		{"sh -c 'pg_dump prod'", true},
		{"cat /etc/app.conf", false},
		{"git-upload-pack '/srv/git/app.git'", false},
		{"scp -t /srv/app", false},
		{"psql -c 'select 1'", false},
	} {
		st, err := ssh.Classify(tc.command)
		if err != nil {
			t.Fatalf("classify %q: %v", tc.command, err)
		}
		d := decide(st)
		if denied := d.Action == ruleset.Deny && d.Rule.ID == "baseline/deny/ssh-database-dumps"; denied != tc.denied || len(d.Masks) > 0 {
			t.Errorf("ssh host %q: %s by %s, masks %d; want denied %t by baseline/deny/ssh-database-dumps", tc.command, d.Action, d.Rule.ID, len(d.Masks), tc.denied)
		}
	}
}

// TestDefaultRulesetK8s: the default's Kubernetes rules, on the requests
// the k8s decoder reports: exec, attach and port-forward are held as
// bulk exports are, secrets across all namespaces and namespace deletion
// are refused with reasons that read well after "by rule ID: ", Secret
// values are masked with the database mask's detectors (never on the
// streams), and every k8s flow is recorded in full, as database flows
// are.
func TestDefaultRulesetK8s(t *testing.T) {
	rs := ruleset.Default()
	flow := ruleset.Flow{Target: ruleset.Endpoint{Name: "kubernetes", Protocol: ruleset.ProtoK8s}}
	decide := func(r ruleset.K8sRequest) ruleset.Decision {
		return rs.Evaluate(&ruleset.Input{Flow: flow, Statement: ruleset.Statement{Kind: r.Verb, K8s: &r}})
	}
	pod := func(verb, sub string) ruleset.K8sRequest {
		return ruleset.K8sRequest{Verb: verb, IsResource: true, Version: "v1", Resource: "pods", Subresource: sub, Namespace: "ci", Name: "web-0"}
	}
	all := func(verb, resource string) ruleset.K8sRequest {
		return ruleset.K8sRequest{Verb: verb, IsResource: true, Version: "v1", Resource: resource}
	}
	in := func(ns string, r ruleset.K8sRequest) ruleset.K8sRequest { r.Namespace = ns; return r }
	const (
		hold   = "baseline/hold/k8s-exec"
		secret = "baseline/deny/k8s-secrets-all-namespaces"
		nsDel  = "baseline/deny/k8s-namespace-deletion"
		mask   = "baseline/mask/k8s-secrets-and-personal-data"
	)
	for _, tc := range []struct {
		req    ruleset.K8sRequest
		action ruleset.Action
		rule   string
	}{
		{pod(ruleset.K8sCreate, "exec"), ruleset.Hold, hold},
		{pod(ruleset.K8sGet, "exec"), ruleset.Hold, hold}, // the websocket upgrade is a GET
		{pod(ruleset.K8sCreate, "attach"), ruleset.Hold, hold},
		{pod(ruleset.K8sGet, "portforward"), ruleset.Hold, hold},
		{pod(ruleset.K8sGet, "log"), ruleset.Mask, mask},
		{pod(ruleset.K8sList, ""), ruleset.Mask, mask},
		{pod(ruleset.K8sGet, "proxy"), ruleset.Allow, "baseline/default"},
		{ruleset.K8sRequest{Verb: "proxy", IsResource: true, Version: "v1", Resource: "services", Namespace: "ci", Name: "web"}, ruleset.Allow, "baseline/default"},
		{all(ruleset.K8sList, "secrets"), ruleset.Deny, secret},
		{all(ruleset.K8sWatch, "secrets"), ruleset.Deny, secret},
		{all(ruleset.K8sGet, "secrets"), ruleset.Deny, secret},
		{in("ci", all(ruleset.K8sList, "secrets")), ruleset.Mask, mask},
		{in("ci", all(ruleset.K8sDeleteCollection, "secrets")), ruleset.Mask, mask},
		{ruleset.K8sRequest{Verb: ruleset.K8sList, IsResource: true, Group: "example.com", Version: "v1", Resource: "secrets"}, ruleset.Mask, mask},
		{all(ruleset.K8sDelete, "namespaces"), ruleset.Deny, nsDel},
		{all(ruleset.K8sDeleteCollection, "namespaces"), ruleset.Deny, nsDel},
		{all(ruleset.K8sCreate, "namespaces"), ruleset.Mask, mask},
		{in("ci", all(ruleset.K8sDelete, "pods")), ruleset.Mask, mask},
		{ruleset.K8sRequest{Verb: "get", Path: "/apis"}, ruleset.Allow, "baseline/default"},
	} {
		d := decide(tc.req)
		if d.Action != tc.action || d.Rule.ID != tc.rule || d.Record != ruleset.RecordFull {
			t.Errorf("%+v: %s by %s, record %s; want %s by %s, record full", tc.req, d.Action, d.Rule.ID, d.Record, tc.action, tc.rule)
		}
	}

	// The reasons, as a denial shows them.
	for id, want := range map[string]string{
		hold:   "exec, attach and port-forward into a pod need a security approver",
		secret: "reading secrets across all namespaces is not allowed from CI; name the namespace (kubectl -n NAMESPACE)",
		nsDel:  "deleting namespaces, and everything in them, is not allowed from CI",
	} {
		if got := rs.Rule(id).Reason; got != want {
			t.Errorf("%s: reason %q, want %q", id, got, want)
		}
	}

	// Holds as the bulk export hold does; masks with its detectors.
	h, bulk := rs.Rule(hold).Hold, rs.Rule("baseline/hold/bulk-export").Hold
	if !reflect.DeepEqual(h, bulk) {
		t.Errorf("k8s-exec hold %+v, bulk-export hold %+v: want the same approval", h, bulk)
	}
	m, db := rs.Rule(mask).Mask, rs.Rule("baseline/mask/secrets-and-personal-data").Mask
	if !reflect.DeepEqual(m.Detect, db.Detect) || m.Using != db.Using {
		t.Errorf("k8s mask detects %v using %s, the database mask %v using %s", m.Detect, m.Using, db.Detect, db.Using)
	}
	if want := []string{"secrets.data", "secrets.stringData"}; !reflect.DeepEqual(m.Columns, want) {
		t.Errorf("k8s mask columns %v, want %v", m.Columns, want)
	}

	// The connection is recorded as a database one is.
	k8sConn := rs.Evaluate(&ruleset.Input{Flow: flow, Statement: ruleset.Statement{Kind: ruleset.KindConnect}})
	pgConn := rs.Evaluate(&ruleset.Input{Flow: ruleset.Flow{Target: ruleset.Endpoint{Name: "postgres", Protocol: ruleset.ProtoPostgres}},
		Statement: ruleset.Statement{Kind: ruleset.KindConnect}})
	if k8sConn.Record < pgConn.Record || k8sConn.Action != ruleset.Allow {
		t.Errorf("k8s connection: %s, record %s; postgres record %s", k8sConn.Action, k8sConn.Record, pgConn.Record)
	}
}
