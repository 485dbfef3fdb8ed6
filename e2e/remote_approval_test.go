package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestRemoteApproval: an approver decides a held statement from another
// machine's point of view: `sluice approvals list` and `sluice approve`
// with --server, the daemon's CA and an OIDC token. A token that passes
// the remote API's allow_claims but is not one of the rule's approvers
// cannot approve; the named approver can, and the COPY completes. Needs
// root (cgroup, eBPF, a private PostgreSQL).
func TestRemoteApproval(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	is := testenv.NewIssuer(t)
	port := testenv.FreePort(t, "127.0.0.1")
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	rules := strings.Replace(holdRules(pg.Addr()), `approvers = ["local-admin"]
    timeout   = "4s"`, `approvers = ["email:alice@example.com"]
    timeout   = "60s"`, 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules,
		Body: fmt.Sprintf("remote_api {\n  listen = \"127.0.0.1:%d\"\n  issuer = %q\n  allow_claims = { groups = \"security\" }\n  ca_file = %q\n}\n", port, is.URL, is.CAFile)})
	admin(t, pg, "create table users(id int, email text); insert into users select i, 'p'||i||'@example.com' from generate_series(1, 3) i")

	ca, token := remoteCredentials(t, d, is)
	alice := token("alice", map[string]any{"sub": "alice", "aud": "sluice", "email": "alice@example.com", "email_verified": true, "groups": []string{"security"}})
	bob := token("bob", map[string]any{"sub": "bob", "aud": "sluice", "email": "bob@example.com", "email_verified": true, "groups": []string{"security"}})
	remote := func(tok string, args ...string) (string, error) {
		return d.Sluice(t, append(args, "--server", server, "--ca", ca, "--token-file", tok)...)
	}

	wait := background(t, cg, nobody(t), pg.PsqlArgs("", 0, "COPY (SELECT id FROM users ORDER BY id) TO STDOUT"))
	req := pendingHold(t, d)
	if out, err := remote(bob, "approvals", "list"); err != nil || !strings.Contains(out, req.ID) {
		t.Errorf("remote approvals list: %v\n%s", err, out)
	}
	if out, err := remote(bob, "approve", req.ID); err == nil {
		t.Errorf("bob, not an approver of the rule, approved remotely:\n%s", out)
	}
	if out, err := remote(alice, "approve", req.ID, "--comment", "ok from the incident channel"); err != nil || !strings.Contains(out, "approved") {
		t.Fatalf("alice's remote approve: %v\n%s", err, out)
	}
	out, err := wait()
	if err != nil || !strings.Contains(out, "1\n2\n3") {
		t.Errorf("the COPY approved remotely: %v\n%s", err, out)
	}
	d.WaitLog(t, "decision refused", func(l testenv.LogLine) bool {
		return l.String("id") == req.ID && l.String("approver") == "bob@example.com"
	})
	d.WaitLog(t, "decision accepted", func(l testenv.LogLine) bool {
		return l.String("id") == req.ID && l.String("approver") == "alice@example.com"
	})
}
