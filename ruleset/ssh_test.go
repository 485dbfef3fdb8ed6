package ruleset

import (
	"reflect"
	"strings"
	"testing"
)

// sshRulesetForTests has an ssh target, a postgres one, and a policy
// deciding ssh requests.
const sshRulesetForTests = `
target "git" {
  protocol = "ssh"
  address  = ["10.0.0.7:22"]
}
target "pg" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["git", "pg"]
  deny "tunnels" { when = contains(["direct_tcpip", "tcpip_forward"], ssh.kind) && ssh.forward_port == 5432 }
  deny "dumps" { when = ssh.kind == "exec" && contains(ssh.programs, "pg_dump") }
  deny "releases" { when = sftp.op == "remove" && glob("/srv/releases/*", sftp.path) }
  deny "root" { when = ssh.user == "root" && ssh.pty && contains(ssh.env, "LD_PRELOAD") }
}
`

// TestSSHRuleTests: ssh and sftp objects in test blocks become the
// Statement (and SSHRequest) the SSH decoder would report, and a query on
// an ssh target goes through the classifier.
func TestSSHRuleTests(t *testing.T) {
	rs := mustParse(t, map[string]string{"r.hcl": sshRulesetForTests, "t.hcl": `
test "exec" {
  target = "git"
  ssh    = { kind = "exec", user = "deploy", command = "pg_dump prod", argv = ["pg_dump", "prod"], programs = ["pg_dump"] }
  expect = "deny"
  expect_rule = "p/deny/dumps"
}
test "forward" {
  target = "git"
  ssh    = { kind = "direct_tcpip", forward_host = "db.internal", forward_port = 5432 }
  expect = "deny"
  expect_rule = "p/deny/tunnels"
}
test "other forward" {
  target = "git"
  ssh    = { kind = "tcpip_forward", forward_host = "localhost", forward_port = 8080 }
  expect = "allow"
}
test "sftp" {
  target = "git"
  sftp   = { op = "remove", path = "/srv/releases/1" }
  expect = "deny"
  expect_rule = "p/deny/releases"
}
test "sftp as a user" {
  target = "git"
  ssh    = { user = "deploy", kind = "subsystem" }
  sftp   = { op = "rename", path = "/srv/a", target = "/srv/b" }
  expect = "allow"
}
test "root shell" {
  target = "git"
  ssh    = { kind = "shell", user = "root", pty = true, term = "xterm", env = ["LD_PRELOAD", "LANG", "LANG"] }
  expect = "deny"
  expect_rule = "p/deny/root"
}
test "query" {
  target = "git"
  query  = "sudo pg_dump prod | gzip"
  expect = "deny"
  expect_rule = "p/deny/dumps"
}
test "sql is untouched" {
  target = "pg"
  query  = "SELECT 1"
  expect = "allow"
}
`})
	want := map[string]Statement{
		"exec": {Kind: SSHExec, Text: "pg_dump prod", SSH: &SSHRequest{User: "deploy", Kind: SSHExec, Command: "pg_dump prod",
			Argv: []string{"pg_dump", "prod"}, Programs: []string{"pg_dump"}}},
		"forward":       {Kind: SSHDirectTCPIP, SSH: &SSHRequest{Kind: SSHDirectTCPIP, ForwardHost: "db.internal", ForwardPort: 5432}},
		"other forward": {Kind: SSHTCPIPForward, SSH: &SSHRequest{Kind: SSHTCPIPForward, ForwardHost: "localhost", ForwardPort: 8080}},
		"sftp":          {Kind: KindSFTP, SSH: &SSHRequest{Kind: SSHSubsystem, Subsystem: "sftp", SFTPOp: "remove", SFTPPath: "/srv/releases/1"}},
		"sftp as a user": {Kind: KindSFTP, SSH: &SSHRequest{User: "deploy", Kind: SSHSubsystem, Subsystem: "sftp", SFTPOp: "rename",
			SFTPPath: "/srv/a", SFTPTarget: "/srv/b"}},
		"root shell": {Kind: SSHShell, SSH: &SSHRequest{User: "root", Kind: SSHShell, Pty: true, Term: "xterm", Env: []string{"LANG", "LD_PRELOAD"}}},
	}
	for _, tc := range rs.tests {
		w, ok := want[tc.name]
		if !ok {
			continue
		}
		if !reflect.DeepEqual(tc.in.Statement, w) {
			t.Errorf("%s: statement %+v %+v, want %+v %+v", tc.name, tc.in.Statement, tc.in.Statement.SSH, w, w.SSH)
		}
	}

	var asked []string
	classify := func(protocol, text string) (Statement, error) {
		asked = append(asked, protocol+": "+text)
		if protocol == ProtoSSH {
			return Statement{Kind: SSHExec, Text: text, SSH: &SSHRequest{Kind: SSHExec, Command: text, Programs: []string{"sudo", "pg_dump", "gzip"}}}, nil
		}
		return Statement{Kind: "select"}, nil
	}
	for _, r := range rs.RunTests(classify) {
		if !r.Passed {
			t.Errorf("%s: %s", r.Name, r.Message)
		}
	}
	if want := []string{"ssh: sudo pg_dump prod | gzip", "postgres: SELECT 1"}; !reflect.DeepEqual(asked, want) {
		t.Errorf("classified %q, want %q", asked, want)
	}
}

// TestSSHRuleTestDiagnostics: the mistakes a test block can make with
// ssh and sftp.
func TestSSHRuleTestDiagnostics(t *testing.T) {
	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"ssh on postgres", `test "t" {
  target = "pg"
  ssh    = { kind = "exec" }
  expect = "deny"
}`, "SSH request for a postgres target", "Target pg speaks postgres, and ssh describes a request of an ssh session.", 3, 3},
		{"sftp on postgres", `test "t" {
  target = "pg"
  sftp   = { op = "read" }
  expect = "deny"
}`, "SSH request for a postgres target", "sftp describes a request of an ssh session", 3, 3},
		{"with a statement", `test "t" {
  target    = "git"
  statement = { kind = "exec" }
  ssh       = { kind = "exec" }
  expect    = "deny"
}`, "Conflicting arguments", "this one also has statement", 4, 3},
		{"with a query", `test "t" {
  target = "git"
  query  = "ls"
  sftp   = { op = "list", path = "/" }
  expect = "deny"
}`, "Conflicting arguments", `query = "pg_dump prod" is classified as an exec request`, 4, 3},
		{"no kind", `test "t" {
  target = "git"
  ssh    = { command = "ls" }
  expect = "deny"
}`, "Missing attribute", `ssh needs kind, the request's kind: one of "shell", "exec"`, 3, 12},
		{"bad kind", `test "t" {
  target = "git"
  ssh    = { kind = "sesion" }
  expect = "deny"
}`, "Invalid value for ssh.kind", `got "sesion".`, 3, 21},
		{"kind typo", `test "t" {
  target = "git"
  ssh    = { kind = "direct-tcpip" }
  expect = "deny"
}`, "Invalid value for ssh.kind", `Did you mean "direct_tcpip"?`, 3, 21},
		{"unknown attribute", `test "t" {
  target = "git"
  ssh    = { kind = "exec", cmd = "ls" }
  expect = "deny"
}`, "Unsupported attribute", `ssh has no attribute "cmd"`, 3, 29},
		{"wrong type", `test "t" {
  target = "git"
  ssh    = { kind = "exec", programs = "ls" }
  expect = "deny"
}`, "Incorrect value type", "ssh.programs must be list of string", 3, 40},
		{"port out of range", `test "t" {
  target = "git"
  ssh    = { kind = "direct_tcpip", forward_port = 70000 }
  expect = "deny"
}`, "Invalid port", "from 0 (a unix socket forward) to 65535", 3, 52},
		{"sftp without op", `test "t" {
  target = "git"
  sftp   = { path = "/x" }
  expect = "deny"
}`, "Missing attribute", "sftp needs op.", 3, 12},
		{"bad op", `test "t" {
  target = "git"
  sftp   = { op = "delete", path = "/x" }
  expect = "deny"
}`, "Invalid value for sftp.op", `sftp.op must be one of "read", "write"`, 3, 19},
		{"sftp with another kind", `test "t" {
  target = "git"
  ssh    = { kind = "exec" }
  sftp   = { op = "read", path = "/x" }
  expect = "deny"
}`, "Conflicting arguments", `so ssh.kind is "subsystem"`, 3, 21},
		{"sftp with another subsystem", `test "t" {
  target = "git"
  ssh    = { subsystem = "netconf" }
  sftp   = { op = "read", path = "/x" }
  expect = "deny"
}`, "Conflicting arguments", `so ssh.subsystem is "sftp"`, 3, 26},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"r.hcl": []byte(sshRulesetForTests), "t.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "t.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at t.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}
