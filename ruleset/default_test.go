package ruleset_test

import (
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
