package ruleset

import (
	"net/netip"
	"path/filepath"
	"testing"
)

// TestCompiledMatchesHCL evaluates every when expression of every example
// ruleset both compiled and with HCL's evaluator, over varied inputs, and
// requires the same outcome.
func TestCompiledMatchesHCL(t *testing.T) {
	dirs, _ := filepath.Glob("../testdata/rulesets/*")
	var sets []*Ruleset
	for _, d := range dirs {
		if filepath.Base(d) == "invalid" {
			continue
		}
		rs, _, diags := Load(d)
		if diags.HasErrors() {
			t.Fatalf("%s: %v", d, diags)
		}
		sets = append(sets, rs)
	}
	sets = append(sets, Default(), benchRuleset(t), mustParse(t, map[string]string{"t.hcl": testTargets, "x.hcl": `
policy "ops" {
  targets = ["*"]
  when    = (process.uid + 1) * 2 - 2 >= 2 || process.pid % 7 == 3 || -process.gid < -5
  deny "a" { when = (identity.team != "" ? length(statement.tables) : 0) > 1 }
  deny "b" { when = [statement.kind, lower(identity.team)] == ["select", "payments"] }
  deny "c" { when = statement.tables == [] && upper(statement.kind) == "SHOW" }
  deny "d" { when = all_glob(["public.*"], statement.tables) && !statement.has_where }
  deny "e" { when = result.bytes / 2 > 100 || statement.has_limit && result.rows == 0 }
  deny "f" { when = regex(identity.pattern, statement.text) }
  deny "g" { when = cidr_contains(identity.net, target.ip) && target.address != "" && target.port > 0 }
  deny "h" { when = contains(statement.functions, "pg_sleep") || target.name == "db2" && target.protocol == "postgres" }
  deny "i" { when = contains(statement.flags, "search_path") || any_glob(["copy_*"], statement.flags) }
  deny "j" { when = length(statement.flags) > 1 && statement.kind != "select" }
}`}))

	var inputs []*Input
	claims := []map[string]string{
		{"repository": "acme/api", "ref": "refs/heads/main", "team": "payments", "environment": "migrate", "pattern": "^SELECT", "net": "10.0.0.0/8"},
		{"repository": "acme/reports", "ref": "refs/pull/42/merge", "team": "", "pattern": "([", "net": "bad"},
		{},
	}
	stmts := []Statement{
		{Kind: "select", Tables: []string{"public.users", "events"}, Text: "SELECT * FROM users"},
		{Kind: "select", Tables: []string{"public.users"}, HasWhere: true, HasLimit: true},
		{Kind: "drop", Tables: []string{"users"}},
		{Kind: "copy_out", Tables: []string{"sales.customers"}, Flags: []string{"copy_file"}},
		{Kind: "set", Flags: []string{"search_path"}},
		{Kind: "select", Functions: []string{"dblink"}, Flags: []string{"dangerous_function", "search_path"}},
		{Kind: "delete", Tables: []string{"billing.invoices"}},
		{Kind: "update", HasWhere: true, Functions: []string{"pg_sleep", "pg_catalog.pg_read_file"}},
		{Kind: "show"},
		{Kind: "connect"},
		{Kind: SSHExec, Text: "pg_dump prod", SSH: &SSHRequest{Kind: SSHExec, Command: "pg_dump prod", Argv: []string{"pg_dump", "prod"}, Programs: []string{"pg_dump"}}},
		{Kind: SSHDirectTCPIP, SSH: &SSHRequest{Kind: SSHDirectTCPIP, ForwardHost: "db", ForwardPort: 5432}},
		{Kind: SSHShell, SSH: &SSHRequest{Kind: SSHShell, User: "deploy", Pty: true, Term: "xterm", Env: []string{"LANG"}}},
		{Kind: KindSFTP, SSH: &SSHRequest{Kind: SSHSubsystem, Subsystem: "sftp", SFTPOp: "remove", SFTPPath: "/srv/x"}},
	}
	results := []Result{{}, {Known: true}, {Known: true, Rows: 20000, Bytes: 1 << 20}}
	for i, c := range claims {
		for j, st := range stmts {
			for k, res := range results {
				in := &Input{Statement: st, Result: res}
				in.Identity = Identity{Level: []string{LevelOIDC, LevelUnverified, ""}[i], Claims: c}
				in.Process = Process{PID: int64(j), UID: int64(k * 1000), GID: int64(i * 3), Comm: []string{"psql", "migrate", "flyway"}[k]}
				in.Target = Endpoint{Name: []string{"db", "db2", "prod-db", "replica", "app-db", "warehouse", "orders-mysql", "cluster"}[j%8], Protocol: []string{"postgres", "mysql", "k8s", "ssh"}[(j+k)%4]}
				if j%2 == 0 {
					in.Target.Addr = netip.MustParseAddrPort("10.30.0.9:5432")
				}
				inputs = append(inputs, in)
			}
		}
	}

	compiled := 0
	for _, rs := range sets {
		var exprs []*expr
		for _, p := range rs.policies {
			if p.when != nil {
				exprs = append(exprs, p.when)
			}
			for _, list := range [][]*Rule{p.deny, p.hold, p.allow, p.mask} {
				for _, r := range list {
					if r.when != nil {
						exprs = append(exprs, r.when)
					}
				}
			}
		}
		for _, x := range exprs {
			if x.fast == nil {
				continue
			}
			compiled++
			slow := &expr{e: x.e, stage: x.stage}
			for _, in := range inputs {
				m := &Match{rs: rs, flow: in.Flow}
				if in.Target.Addr.IsValid() {
					m.addr, m.ip = in.Target.Addr.String(), in.Target.Addr.Addr().Unmap().String()
				}
				mk := func() *evaluator {
					return &evaluator{m: m, env: env{flow: &m.flow, addr: m.addr, ip: m.ip, st: &in.Statement, res: in.Result}}
				}
				f1, p1, e1 := mk().eval(x)
				f2, p2, e2 := mk().eval(slow)
				if f1 != f2 || p1 != p2 || (e1 == nil) != (e2 == nil) {
					rng := x.e.Range()
					t.Errorf("%s:%d: compiled = (%t, pending %t, err %v), HCL = (%t, pending %t, err %v) for %+v",
						rng.Filename, rng.Start.Line, f1, p1, e1, f2, p2, e2, in)
				}
			}
		}
	}
	if compiled < 40 {
		t.Errorf("only %d expressions compiled; the fast path is not being exercised", compiled)
	}
}
