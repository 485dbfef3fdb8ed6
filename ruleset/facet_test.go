package ruleset

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// facetTargets has one target of every protocol.
const facetTargets = `
target "pg" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
target "my" {
  protocol = "mysql"
  address  = ["10.0.0.6:3306"]
}
target "git" {
  protocol = "ssh"
  address  = ["10.0.0.7:22"]
}
target "kube" {
  protocol = "k8s"
  address  = ["10.0.0.8:6443"]
}
target "raw" {
  protocol = "tcp"
  address  = ["10.0.0.9:9000"]
}
`

// aliasConditions are when expressions written with statement.*; the
// differential test also runs each with sql.* in its place. They cover
// every attribute and both evaluation paths: the compiled one and HCL's,
// for the constructs the compiler leaves to it (for expressions, splats,
// functions it does not compile, the whole object, computed indexes).
var aliasConditions = []struct {
	cond string
	fast bool // compiled into the fast path
}{
	{`statement.kind == "drop"`, true},
	{`contains(["delete", "update"], statement.kind) && !statement.has_where`, true},
	{`statement.kind == "select" && !statement.has_limit && result.rows > 100`, true},
	{`any_glob(["billing.*", "users"], statement.tables)`, true},
	{`contains(statement.functions, "pg_sleep") || contains(statement.flags, "search_path")`, true},
	{`length(statement.flags) > 1 && statement.kind != "select"`, true},
	{`regex("(?i)secret", statement.text)`, true},
	{`statement["kind"] == "copy_out" || result.bytes > 1000`, true},
	{`upper(statement.kind) == "SHOW" || statement.has_limit`, true},
	{`anytrue([for f in statement.functions : glob("pg_*", f)])`, false},
	{`strlen(statement.text) > 10`, false},
	{`join(",", statement.tables) == "public.users,events"`, false},
	{`(statement.has_where ? statement : statement).kind == "delete"`, false},
	{`[statement][0].text != "" && result.rows == 50`, false},
	{`contains([for t in statement.tables : lower(t)], "billing.invoices") || result.rows > 5`, false},
	{`statement.tables == []`, false},
}

// TestSQLAliasDifferential: a ruleset written with sql.* decides exactly
// as the same ruleset written with statement.* (compiled or not, pending
// on the result or not, reading the text or not), and every condition
// decides the same compiled and through HCL.
func TestSQLAliasDifferential(t *testing.T) {
	ruleset := func(root string) *Ruleset {
		var sb strings.Builder
		sb.WriteString(facetTargets)
		sb.WriteString("policy \"sqldb\" {\n  targets = [\"pg\", \"my\"]\n")
		kinds := []string{"deny", "hold", "mask"}
		for i, c := range aliasConditions {
			kind := kinds[i%len(kinds)]
			cond := strings.ReplaceAll(c.cond, "statement", root)
			switch kind {
			case "hold":
				fmt.Fprintf(&sb, "  hold \"r%d\" {\n    when = %s\n    approvers = [\"group:x\"]\n  }\n", i, cond)
			case "mask":
				fmt.Fprintf(&sb, "  mask \"r%d\" {\n    when = %s\n    columns = [\"users.email\"]\n  }\n", i, cond)
			default:
				fmt.Fprintf(&sb, "  deny \"r%d\" { when = %s }\n", i, cond)
			}
		}
		fmt.Fprintf(&sb, "  allow \"reads\" { when = contains([\"select\", \"show\"], %s.kind) }\n}\n", root)
		return mustParse(t, map[string]string{"r.hcl": sb.String()})
	}
	old, nu := ruleset("statement"), ruleset("sql")
	if !old.readsText || !nu.readsText {
		t.Errorf("readsText: statement %t, sql %t; want both true", old.readsText, nu.readsText)
	}

	// The conditions one by one, compiled and with HCL, under both names.
	for i, c := range aliasConditions {
		xo, xn := ruleExpr(t, old, i), ruleExpr(t, nu, i)
		if (xo.fast != nil) != c.fast || (xn.fast != nil) != c.fast {
			t.Errorf("%s: compiled statement %t, sql %t; want %t", c.cond, xo.fast != nil, xn.fast != nil, c.fast)
		}
		if xo.stage != xn.stage {
			t.Errorf("%s: stage statement %d, sql %d", c.cond, xo.stage, xn.stage)
		}
		for _, in := range facetInputs() {
			ref := referenceEval(t, old, xo, in)
			want := [2]string{ref, ref}
			if got := evalBoth(old, xo, in); got != want {
				t.Errorf("%s: statement.* gives (compiled, HCL) %v, the reference %s for %+v", c.cond, got, ref, in)
			}
			if got := evalBoth(nu, xn, in); got != want {
				t.Errorf("%s: sql.* gives (compiled, HCL) %v, the reference %s for %+v", c.cond, got, ref, in)
			}
		}
	}

	// Whole decisions.
	for _, in := range facetInputs() {
		do, dn := old.Evaluate(in), nu.Evaluate(in)
		if got, want := decisionString(dn), decisionString(do); got != want {
			t.Errorf("sql.* decides %s, statement.* %s for %+v", got, want, in)
		}
	}
}

// ruleExpr is the when of the i'th rule of the first policy, in source
// order across deny, hold and mask (as the differential test writes them).
func ruleExpr(t *testing.T, rs *Ruleset, i int) *expr {
	t.Helper()
	want := fmt.Sprintf("r%d", i)
	p := rs.policies[0]
	for _, list := range [][]*Rule{p.deny, p.hold, p.mask} {
		for _, r := range list {
			if r.Label == want {
				return r.when
			}
		}
	}
	t.Fatalf("no rule %s", want)
	return nil
}

// evalBoth evaluates x compiled (when it is) and with HCL, and returns
// both outcomes.
func evalBoth(rs *Ruleset, x *expr, in *Input) [2]string {
	m := &Match{rs: rs, flow: in.Flow}
	if in.Target.Addr.IsValid() {
		m.addr, m.ip = in.Target.Addr.String(), in.Target.Addr.Addr().Unmap().String()
	}
	run := func(x *expr) string {
		ev := &evaluator{m: m, env: env{flow: &m.flow, addr: m.addr, ip: m.ip, st: &in.Statement, res: in.Result}}
		fired, pending, err := ev.eval(x)
		return fmt.Sprintf("fired %t pending %t err %t", fired, pending, err != nil)
	}
	slow := run(&expr{e: x.e, stage: x.stage})
	fast := slow
	if x.fast != nil {
		fast = run(x)
	}
	return [2]string{fast, slow}
}

// referenceEval evaluates x with HCL in a context built here, field by
// field from the Statement, as the evaluator built statement before
// facets: an oracle independent of the facet table.
func referenceEval(t *testing.T, rs *Ruleset, x *expr, in *Input) string {
	t.Helper()
	st := &in.Statement
	list := refList
	vars := referenceVars(rs, in)
	vars["statement"] = cty.ObjectVal(map[string]cty.Value{
		"kind": cty.StringVal(st.Kind), "tables": list(st.Tables), "functions": list(st.Functions),
		"flags": list(st.Flags), "has_where": cty.BoolVal(st.HasWhere), "has_limit": cty.BoolVal(st.HasLimit), "text": cty.StringVal(st.Text),
	})
	return referenceOutcome(t, x, &hcl.EvalContext{Variables: vars, Functions: rs.funcs})
}

func decisionString(d Decision) string {
	masks := make([]string, len(d.Masks))
	for i, r := range d.Masks {
		masks[i] = r.ID
	}
	return fmt.Sprintf("%s by %s (reason %q, masks %v, record %s, await %t, err %t)",
		d.Action, d.Rule.ID, d.Reason, masks, d.Record, d.AwaitResult, d.Err != nil)
}

func facetInputs() []*Input {
	stmts := []Statement{
		{Kind: "select", Tables: []string{"public.users", "events"}, Text: "SELECT * FROM users -- secret"},
		{Kind: "select", Tables: []string{"public.users"}, HasWhere: true, HasLimit: true, Text: "SELECT 1"},
		{Kind: "drop", Tables: []string{"users"}},
		{Kind: "copy_out", Tables: []string{"sales.customers"}, Flags: []string{"copy_file"}},
		{Kind: "set", Flags: []string{"search_path"}},
		{Kind: "select", Functions: []string{"dblink", "pg_sleep"}, Flags: []string{"dangerous_function", "search_path"}},
		{Kind: "delete", Tables: []string{"Billing.Invoices"}},
		{Kind: "update", HasWhere: true, Functions: []string{"pg_catalog.pg_read_file"}},
		{Kind: "show", HasLimit: true},
		{Kind: "transaction"},
		{Kind: "connect"},
		{},
	}
	results := []Result{{}, {Known: true}, {Known: true, Rows: 20000, Bytes: 1 << 20}, {Known: true, Rows: 50, Bytes: 10}}
	targets := []Endpoint{
		{Name: "pg", Protocol: ProtoPostgres, Addr: netip.MustParseAddrPort("10.0.0.5:5432")},
		{Name: "my", Protocol: ProtoMySQL},
	}
	var out []*Input
	for _, tg := range targets {
		for _, st := range stmts {
			for _, res := range results {
				in := &Input{Statement: st, Result: res}
				in.Target = tg
				in.Identity = Identity{Level: LevelOIDC, Claims: map[string]string{"repository": "acme/api"}}
				out = append(out, in)
			}
		}
	}
	return out
}

// sshConditions cover every ssh and sftp attribute, on both evaluation
// paths.
var sshConditions = []struct {
	cond string
	fast bool
}{
	{`ssh.kind == "exec" && contains(ssh.programs, "pg_dump")`, true},
	{`contains(["direct_tcpip", "tcpip_forward"], ssh.kind) && ssh.forward_port == 5432`, true},
	{`glob("*.internal", ssh.forward_host) || ssh.forward_port >= 6000`, true},
	{`ssh.user == "root" || upper(ssh.user) == "DEPLOY"`, true},
	{`regex("^sudo ", ssh.command) || ssh["subsystem"] == "sftp"`, true},
	{`length(ssh.argv) == 2 && any_glob(["/etc/*"], ssh.argv)`, true},
	{`contains(ssh.env, "LD_PRELOAD") || length(ssh.env) > 2`, true},
	{`ssh.pty && ssh.term != "dumb"`, true},
	{`!ssh.pty && ssh.kind == "shell"`, true},
	{`sftp.op == "remove" && glob("/srv/*", sftp.path)`, true},
	{`sftp.op == "rename" && sftp.target == "/etc/passwd"`, true},
	{`ssh.kind == "exec" && result.bytes > 100`, true},
	{`anytrue([for p in ssh.programs : glob("mysql*", p)])`, false},
	{`strlen(ssh.command) > 20 || strlen(sftp.path) > 10`, false},
	{`join(" ", ssh.argv) == "cat /etc/app.conf"`, false},
	{`[ssh][0].forward_port == 22 || [sftp][0].op == "write"`, false},
	{`(ssh.pty ? ssh.term : ssh.kind) == "xterm"`, true},
	{`ssh.argv == [] || sftp.path == "/srv/a-long-path"`, false},
}

// sshInputs are ssh requests, and statements without one.
func sshInputs() []*Input {
	reqs := []*SSHRequest{
		nil,
		{User: "deploy", Kind: SSHExec, Command: "cat /etc/app.conf", Argv: []string{"cat", "/etc/app.conf"}, Programs: []string{"cat"}},
		{User: "root", Kind: SSHExec, Command: "sudo -u postgres pg_dump prod | gzip", Programs: []string{"sudo", "pg_dump", "gzip"}, Env: []string{"LANG", "LC_ALL", "LD_PRELOAD"}},
		{User: "git", Kind: SSHExec, Command: "mysqldump shop", Argv: []string{"mysqldump", "shop"}, Programs: []string{"mysqldump"}},
		{User: "Deploy", Kind: SSHShell, Pty: true, Term: "xterm"},
		{Kind: SSHShell, Pty: true, Term: "dumb", Env: []string{"LANG"}},
		{Kind: SSHShell},
		{Kind: SSHSubsystem, Subsystem: "sftp"},
		{Kind: SSHSubsystem, Subsystem: "sftp", SFTPOp: "remove", SFTPPath: "/srv/releases/1"},
		{Kind: SSHSubsystem, Subsystem: "sftp", SFTPOp: "rename", SFTPPath: "/tmp/x", SFTPTarget: "/etc/passwd"},
		{Kind: SSHSubsystem, Subsystem: "sftp", SFTPOp: "write", SFTPPath: "/srv/a-long-path"},
		{Kind: SSHDirectTCPIP, ForwardHost: "db.internal", ForwardPort: 5432},
		{Kind: SSHDirectTCPIP, ForwardHost: "/run/docker.sock"},
		{Kind: SSHTCPIPForward, ForwardHost: "localhost", ForwardPort: 22},
		{Kind: SSHTCPIPForward, ForwardHost: "0.0.0.0", ForwardPort: 6001},
		{Kind: SSHAgentForward},
		{Kind: SSHX11},
	}
	results := []Result{{}, {Known: true, Bytes: 1000}}
	var out []*Input
	for _, r := range reqs {
		for _, res := range results {
			in := &Input{Result: res}
			in.Target = Endpoint{Name: "git", Protocol: ProtoSSH, Addr: netip.MustParseAddrPort("10.0.0.7:22")}
			in.Identity = Identity{Level: LevelOIDC, Claims: map[string]string{"repository": "acme/api"}}
			if r != nil {
				in.Statement = Statement{Kind: r.Kind, Text: r.Command, SSH: r}
				if r.SFTPOp != "" {
					in.Statement.Kind = KindSFTP
				}
			} else {
				// A SQL statement on a target the same policy covers:
				// both facets are empty.
				in.Target = Endpoint{Name: "pg", Protocol: ProtoPostgres}
				in.Statement = Statement{Kind: "select", Tables: []string{"users"}}
			}
			out = append(out, in)
		}
	}
	return out
}

// sshReference evaluates x with HCL in a context built here, field by
// field from the SSHRequest: an oracle independent of the facet table.
func sshReference(t *testing.T, rs *Ruleset, x *expr, in *Input) string {
	t.Helper()
	r := in.Statement.SSH
	if r == nil {
		r = &SSHRequest{}
	}
	list := refList
	vars := referenceVars(rs, in)
	vars["ssh"] = cty.ObjectVal(map[string]cty.Value{
		"user": cty.StringVal(r.User), "kind": cty.StringVal(r.Kind), "command": cty.StringVal(r.Command),
		"argv": list(r.Argv), "programs": list(r.Programs), "subsystem": cty.StringVal(r.Subsystem),
		"forward_host": cty.StringVal(r.ForwardHost), "forward_port": cty.NumberIntVal(int64(r.ForwardPort)),
		"env": list(r.Env), "pty": cty.BoolVal(r.Pty), "term": cty.StringVal(r.Term),
	})
	vars["sftp"] = cty.ObjectVal(map[string]cty.Value{
		"op": cty.StringVal(r.SFTPOp), "path": cty.StringVal(r.SFTPPath), "target": cty.StringVal(r.SFTPTarget),
	})
	return referenceOutcome(t, x, &hcl.EvalContext{Variables: vars, Functions: rs.funcs})
}

// referenceVars are the variables every protocol shares (identity,
// process, target, result) for a reference evaluation.
func referenceVars(rs *Ruleset, in *Input) map[string]cty.Value {
	id, proc, tgt := rs.flowValues(&in.Flow)
	res := cty.UnknownVal(cty.Object(map[string]cty.Type{"rows": cty.Number, "bytes": cty.Number}))
	if in.Result.Known {
		res = cty.ObjectVal(map[string]cty.Value{"rows": cty.NumberIntVal(in.Result.Rows), "bytes": cty.NumberIntVal(in.Result.Bytes)})
	}
	return map[string]cty.Value{"identity": id, "process": proc, "target": tgt, "result": res}
}

// refList is a list of strings as HCL sees it.
func refList(l []string) cty.Value {
	if len(l) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	vals := make([]cty.Value, len(l))
	for i, s := range l {
		vals[i] = cty.StringVal(s)
	}
	return cty.ListVal(vals)
}

// referenceOutcome evaluates x in ctx and says whether it fired, is
// pending on the result, or failed.
func referenceOutcome(t *testing.T, x *expr, ctx *hcl.EvalContext) string {
	t.Helper()
	v, diags := x.e.Value(ctx)
	fired, pending := false, false
	switch {
	case diags.HasErrors():
	case v.Type() == cty.Bool && !v.IsKnown():
		pending = true
	case v.Type() == cty.Bool && !v.IsNull():
		fired = v.True()
	default:
		t.Fatalf("%#v is not a boolean", v)
	}
	return fmt.Sprintf("fired %t pending %t err %t", fired, pending, diags.HasErrors())
}

// TestSSHFacets: every ssh.* and sftp.* condition decides the same
// compiled, through HCL and in a reference context built field by field,
// for ssh requests of every kind and for SQL statements (no SSHRequest,
// so empty facets, never a panic).
func TestSSHFacets(t *testing.T) {
	var sb strings.Builder
	sb.WriteString(facetTargets)
	sb.WriteString("policy \"mixed\" {\n  targets = [\"pg\", \"git\"]\n")
	for i, c := range sshConditions {
		if i%2 == 0 {
			fmt.Fprintf(&sb, "  deny \"r%d\" { when = %s }\n", i, c.cond)
		} else {
			fmt.Fprintf(&sb, "  hold \"r%d\" {\n    when = %s\n    approvers = [\"group:x\"]\n  }\n", i, c.cond)
		}
	}
	sb.WriteString("}\n")
	rs := mustParse(t, map[string]string{"r.hcl": sb.String()})
	if rs.readsText {
		t.Error("reading ssh.command marks the ruleset as reading SQL text")
	}
	for i, c := range sshConditions {
		x := ruleExpr(t, rs, i)
		if (x.fast != nil) != c.fast {
			t.Errorf("%s: compiled %t, want %t", c.cond, x.fast != nil, c.fast)
		}
		fired := 0
		for _, in := range sshInputs() {
			ref := sshReference(t, rs, x, in)
			if got := evalBoth(rs, x, in); got != [2]string{ref, ref} {
				t.Errorf("%s: (compiled, HCL) %v, the reference %s for %+v %+v", c.cond, got, ref, in.Statement, in.Statement.SSH)
			}
			if strings.HasPrefix(ref, "fired true") {
				fired++
			}
		}
		if fired == 0 {
			t.Errorf("%s: fires on no input; the test does not exercise it", c.cond)
		}
	}
}

// TestFacetTargets: a rule may use sql.* (or statement.*) only in a
// policy covering at least one postgres or mysql target; "*" covers
// every target of the ruleset.
func TestFacetTargets(t *testing.T) {
	tests := []struct {
		name    string
		targets string // defaults to facetTargets
		src     string
		summary string // "" when the ruleset loads
		detail  []string
		line    int
		col     int
	}{
		{name: "postgres", src: `policy "p" {
  targets = ["pg"]
  deny { when = sql.kind == "drop" }
}`},
		{name: "mysql with the older name", src: `policy "p" {
  targets = ["my"]
  deny { when = statement.kind == "drop" }
}`},
		{name: "mixed targets", src: `policy "p" {
  targets = ["git", "raw", "pg"]
  deny { when = sql.kind == "drop" }
}`},
		{name: "every target", src: `policy "p" {
  targets = ["*"]
  hold {
    when      = sql.kind == "copy_out" || result.rows > 10
    approvers = ["group:x"]
  }
}`},
		{name: "flow variables anywhere", src: `policy "p" {
  targets = ["git", "raw"]
  deny { when = process.uid == 0 && target.protocol == "ssh" && identity.ref != "main" }
}`},
		{name: "ssh only", src: `policy "p" {
  targets = ["git"]
  deny { when = sql.kind == "drop" }
}`, summary: "sql used on a policy without postgres or mysql targets",
			detail: []string{`Policy "p" covers target git (ssh).`, "filled only on postgres and mysql flows", "Move the rule to a policy for the postgres or mysql targets"},
			line:   3, col: 17},
		{name: "older name on tcp", src: `policy "p" {
  targets = ["raw"]
  deny {
    when = statement.kind == "connect" && process.uid == 0
  }
}`, summary: "statement used on a policy without postgres or mysql targets",
			detail: []string{"covers target raw (tcp)", "statement is the older name of sql", "tcp flows are never decoded"},
			line:   4, col: 12},
		{name: "k8s and tcp, in a mask, reported once", src: `policy "p" {
  targets = ["kube", "raw"]
  mask {
    when    = contains(sql.tables, "users") || sql.kind == "select"
    columns = ["users.email"]
  }
}`, summary: "sql used on a policy without postgres or mysql targets",
			detail: []string{"covers targets kube (k8s) and raw (tcp)"}, line: 4, col: 24},
		{name: "ssh on ssh", src: `policy "p" {
  targets = ["git"]
  deny { when = ssh.kind == "exec" && contains(ssh.programs, "pg_dump") }
  deny { when = sftp.op == "remove" }
}`},
		{name: "ssh on every target", src: `policy "p" {
  targets = ["*"]
  hold {
    when      = target.protocol == "ssh" && ssh.kind == "shell"
    approvers = ["group:x"]
  }
}`},
		{name: "ssh without an ssh target", src: `policy "p" {
  targets = ["pg", "raw"]
  deny { when = target.protocol == "ssh" && ssh.kind == "direct_tcpip" }
}`, summary: "ssh used on a policy without ssh targets",
			detail: []string{"covers targets pg (postgres) and raw (tcp)", "ssh.* is filled only on ssh flows", `target.protocol == "ssh" does not change that`, "Move the rule to a policy for the ssh targets"},
			line:   3, col: 45},
		{name: "sftp without an ssh target, in an allow", src: `policy "p" {
  targets = ["my"]
  allow { when = glob("/srv/*", sftp.path) }
}`, summary: "sftp used on a policy without ssh targets",
			detail: []string{"covers target my (mysql)", "sftp.* is filled only on ssh flows"}, line: 3, col: 33},
		{name: "unknown target: only that is reported", src: `policy "p" {
  targets = ["gti"]
  deny { when = sql.kind == "drop" }
}`, summary: "Unknown target", line: 2, col: 14},
		{name: "every target but none speaks SQL", targets: `
target "git" {
  protocol = "ssh"
  address  = ["*:22"]
}
target "raw" {
  protocol = "tcp"
  address  = ["*:9000"]
}`, src: `policy "p" {
  targets = ["*"]
  allow { when = sql.has_where }
}`, summary: "sql used on a policy without postgres or mysql targets",
			detail: []string{`covers every target ("*"): git (ssh) and raw (tcp)`}, line: 3, col: 18},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			targets := tt.targets
			if targets == "" {
				targets = facetTargets
			}
			rs, diags := Parse(map[string][]byte{"t.hcl": []byte(targets), "x.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if tt.summary == "" {
				if len(errs) > 0 || rs == nil {
					t.Fatalf("want the ruleset to load: %v", diags)
				}
				return
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || d.Subject == nil || d.Subject.Filename != "x.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q at %v, want %q at x.hcl:%d:%d", d.Summary, d.Subject, tt.summary, tt.line, tt.col)
			}
			for _, s := range tt.detail {
				if !strings.Contains(d.Detail, s) {
					t.Errorf("detail %q does not say %q", d.Detail, s)
				}
			}
		})
	}
}

// TestFacetDiagnostics: the diagnostics about a variable name the root
// the rule wrote, whichever of sql and statement it is.
func TestFacetDiagnostics(t *testing.T) {
	tests := []struct {
		src, summary, detail string
		line, col            int
	}{
		{`policy "p" {
  targets = ["pg"]
  deny { when = sql.knd == "drop" }
}`, "Unsupported attribute", `sql has no attribute "knd". Did you mean "kind"?`, 3, 20},
		{`policy "p" {
  targets = ["pg"]
  deny { when = statement.knd == "drop" }
}`, "Unsupported attribute", `statement has no attribute "knd". Did you mean "kind"?`, 3, 26},
		{`policy "p" {
  targets = ["pg"]
  deny { when = sql.nothing_like_it == "drop" }
}`, "Unsupported attribute", "Its attributes are flags, functions, has_limit, has_where, kind, tables, text.", 3, 20},
		{`policy "p" {
  targets = ["pg"]
  when    = sql.kind == "select"
}`, "Statement variables not allowed here", "but not sql", 3, 13},
		{`policy "p" {
  targets = ["pg"]
  deny { when = sq.kind == "drop" }
}`, "Unknown variable", `Did you mean "sql"?`, 3, 17},
		{`policy "p" {
  targets = ["pg"]
  deny { when = protocol.kind == "drop" }
}`, "Unknown variable", "protocol facets sql (older name statement), ssh, sftp and k8s", 3, 17},
		{`policy "p" {
  targets = ["git"]
  deny { when = ssh.comand == "x" }
}`, "Unsupported attribute", `ssh has no attribute "comand". Did you mean "command"?`, 3, 20},
		{`policy "p" {
  targets = ["git"]
  deny { when = ssh.nothing_like_it == "x" }
}`, "Unsupported attribute", "Its attributes are argv, command, env, forward_host, forward_port, kind, programs, pty, subsystem, term, user.", 3, 20},
		{`policy "p" {
  targets = ["git"]
  deny { when = sftp.pth == "/" }
}`, "Unsupported attribute", `sftp has no attribute "pth". Did you mean "path"?`, 3, 21},
		{`policy "p" {
  targets = ["git"]
  when    = ssh.user == "git"
}`, "Statement variables not allowed here", "but not ssh", 3, 13},
		{`policy "p" {
  targets = ["git"]
  deny { when = ssh.programs == "pg_dump" }
}`, "List compared with a single value", "write contains(list, value)", 3, 17},
		{`policy "p" {
  targets = ["git"]
  deny { when = ssh.forward_port == 5432 && ssh.pty && ssh.term != "dumb" }
}`, "", "", 0, 0},
		{`policy "p" {
  targets = ["git"]
  deny { when = ssh.forward_port > "x" }
}`, "Invalid operand", "a number is required", 3, 36},
		{`policy "p" {
  targets = ["git"]
  allow { when = ssh.env }
}`, "Condition is not a boolean", "", 3, 18},
		{`policy "p" {
  targets = ["pg"]
  allow { when = sql.kind }
}`, "Condition is not a boolean", `for example sql.kind == "select"`, 3, 18},
	}
	for _, tt := range tests {
		_, diags := Parse(map[string][]byte{"t.hcl": []byte(facetTargets), "x.hcl": []byte(tt.src)})
		errs := errorsOf(diags)
		if tt.summary == "" {
			if len(errs) > 0 {
				t.Errorf("%s: want the ruleset to load: %v", tt.src, diags)
			}
			continue
		}
		if len(errs) != 1 {
			t.Errorf("%s: got %d errors, want 1: %v", tt.src, len(errs), diags)
			continue
		}
		d := errs[0]
		if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
			t.Errorf("got %q (%s) at %v, want %q containing %q at %d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
		}
	}
}

// TestFacetTestBlocks: a test's query must be for a target whose
// commands are classified (postgres, mysql, ssh, k8s); a statement stays
// accepted on any target.
func TestFacetTestBlocks(t *testing.T) {
	tests := []struct {
		name, src, summary string
		line, col          int
	}{
		{"query for ssh", `test "t" {
  target = "git"
  query  = "rm -rf /"
  expect = "deny"
}`, "", 0, 0},
		{"query for k8s", `test "t" {
  target = "kube"
  query  = "GET /api/v1/secrets"
  expect = "deny"
}`, "", 0, 0},
		{"query for tcp", `test "t" {
  target = "raw"
  query  = "SELECT 1"
  expect = "deny"
}`, "Query for a target without a classifier", 3, 12},
		{"query for mysql", `test "t" {
  target = "my"
  query  = "SELECT 1"
  expect = "deny"
}`, "", 0, 0},
		{"statement for k8s", `test "t" {
  target    = "kube"
  statement = { kind = "get", tables = ["secrets"] }
  expect    = "deny"
}`, "", 0, 0},
		{"statement for ssh", `test "t" {
  target    = "git"
  statement = { kind = "exec" }
  expect    = "deny"
}`, "", 0, 0},
		{"connection of ssh", `test "t" {
  target = "git"
  expect = "deny"
}`, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"t.hcl": []byte(facetTargets), "x.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if tt.summary == "" {
				if len(errs) > 0 {
					t.Fatalf("want the ruleset to load: %v", diags)
				}
				return
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || d.Subject.Filename != "x.hcl" || d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col ||
				!strings.Contains(d.Detail, "cannot be classified") || !strings.Contains(d.Detail, "postgres, mysql, ssh and k8s") {
				t.Errorf("got %q (%s) at %v, want %q at x.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.line, tt.col)
			}
		})
	}
}

// TestFacetTable: the table's invariants that the rest of the package
// relies on.
func TestFacetTable(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range facets {
		for _, n := range append([]string{f.name}, f.aliases...) {
			if seen[n] || slices.Contains([]string{varIdentity, varProcess, varTarget, varResult}, n) {
				t.Errorf("facet name %q is used twice", n)
			}
			seen[n] = true
		}
		if len(f.protocols) == 0 {
			t.Errorf("facet %s applies to no protocol", f.name)
		}
		for _, p := range f.protocols {
			if !slices.Contains(protocols, p) {
				t.Errorf("facet %s names protocol %q, which no target can have", f.name, p)
			}
		}
		if (f.reserved == "") == (f.attrs == nil) {
			t.Errorf("facet %s must have either attributes or a reserved message", f.name)
		}
		if f.text != "" && f.attr(f.text) == nil {
			t.Errorf("facet %s: text attribute %q is not one of its attributes", f.name, f.text)
		}
	}
	for _, name := range []string{"sql", "statement", "ssh", "sftp", "k8s"} {
		if !seen[name] {
			t.Errorf("no facet is called %s", name)
		}
	}
}

func errorsOf(diags hcl.Diagnostics) hcl.Diagnostics {
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	return errs
}

// TestDefaultRulesetFacetNames: the embedded default ruleset, written
// with sql.*, decides every input as the same ruleset written with
// statement.* does.
func TestDefaultRulesetFacetNames(t *testing.T) {
	src := string(DefaultSource())
	if !strings.Contains(src, "sql.kind") {
		t.Fatal("the default ruleset does not use sql.*")
	}
	old := mustParse(t, map[string]string{"default.hcl": strings.ReplaceAll(src, "sql.", "statement.")})
	nu := Default()
	n := 0
	for _, in := range facetInputs() {
		for _, tg := range nu.Targets() {
			in := *in
			in.Target = Endpoint{Name: tg.Name, Protocol: tg.Protocol}
			if got, want := decisionString(nu.Evaluate(&in)), decisionString(old.Evaluate(&in)); got != want {
				t.Errorf("sql.* decides %s, statement.* %s for %+v", got, want, in)
			}
			n++
		}
	}
	if n < 100 {
		t.Fatalf("only %d inputs", n)
	}
}

// TestFacetByClassification: reading sql.text, under either name and in
// any form, means decisions depend on more than the classification.
func TestFacetByClassification(t *testing.T) {
	tests := []struct {
		cond   string
		byText bool
	}{
		{`sql.kind == "select" && contains(sql.tables, "users")`, false},
		{`statement.has_where || length(statement.flags) > 0`, false},
		{`regex("x", sql.text)`, true},
		{`regex("x", statement.text)`, true},
		{`sql["text"] == ""`, true},
		{`statement["kind"] == "select"`, false},
		{`length([sql][0].tables) > 0`, true},
		// ssh requests are never decided by classification (the
		// enforcer decides each alone), so reading their command line
		// does not stop SQL statements from being.
		{`ssh.command == "x" || length(ssh.argv) > 0`, false},
		{`[ssh][0].command == "x" || sftp["path"] == "/"`, false},
	}
	for _, tt := range tests {
		rs := mustParse(t, map[string]string{"t.hcl": facetTargets, "x.hcl": fmt.Sprintf("policy \"p\" {\n  targets = [\"pg\", \"git\"]\n  deny { when = %s }\n}\n", tt.cond)})
		if got := !rs.Match(Flow{Target: Endpoint{Name: "pg", Protocol: ProtoPostgres}}).ByClassification(); got != tt.byText {
			t.Errorf("%s: reads the text %t, want %t", tt.cond, got, tt.byText)
		}
		// Flows whose commands have a facet of their own are never
		// decided by SQL's classification.
		for _, tg := range []Endpoint{{Name: "git", Protocol: ProtoSSH}, {Name: "kube", Protocol: ProtoK8s}} {
			if rs.Match(Flow{Target: tg}).ByClassification() {
				t.Errorf("%s: a %s flow is decided by classification", tt.cond, tg.Protocol)
			}
		}
	}
}
