package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const rulesets = "../../testdata/rulesets"

// rules runs `sluice rules ARGS...` in process.
func rules(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return sluice(t, append([]string{"rules"}, args...)...)
}

// sluice runs the CLI in process with args and returns its exit status,
// stdout and stderr.
func sluice(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := execute(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestRulesCheckInvalid runs `sluice rules check` on every broken example
// and requires its first line to point at the line and column the file's
// "# want" comment names.
func TestRulesCheckInvalid(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(rulesets, "invalid", "*.hcl"))
	if len(files) == 0 {
		t.Fatal("no invalid rulesets")
	}
	want := regexp.MustCompile(`^# want (\d+):(\d+) "([^"]+)"`)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, _ := os.ReadFile(f)
			m := want.FindStringSubmatch(string(src))
			if m == nil {
				t.Fatal("no # want line")
			}
			code, out, _ := rules(t, "check", f)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			prefix := f + ":" + m[1] + ":" + m[2] + ": error: " + m[3] + ": "
			first, _, _ := strings.Cut(out, "\n")
			if !strings.HasPrefix(first, prefix) {
				t.Errorf("first line %q, want it to start with %q", first, prefix)
			}
			// The snippet follows: the source line with its number.
			line, _ := strconv.Atoi(m[1])
			if !strings.Contains(out, strconv.Itoa(line)+" | ") || !strings.Contains(out, "^") {
				t.Errorf("no source snippet in:\n%s", out)
			}
		})
	}
}

func TestRulesCheckExamples(t *testing.T) {
	for _, d := range []string{"readonly-ci", "migration-job", "monitor-rollout", "mysql-shop"} {
		dir := filepath.Join(rulesets, d)
		code, out, errOut := rules(t, "check", dir)
		if code != 0 || !strings.HasPrefix(out, dir+": ok: ") {
			t.Errorf("check %s: exit %d\n%s%s", d, code, out, errOut)
		}
	}
}

func TestRulesTestExamples(t *testing.T) {
	code, out, errOut := rules(t, "test", rulesets)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	var passed, failed int
	if _, err := fmtSscanf(last, &passed, &failed); err != nil || code != 0 || failed != 0 || passed < 20 || len(lines) != 1 {
		t.Errorf("rules test %s: exit %d, last line %q\n%s%s", rulesets, code, last, out, errOut)
	}
}

func fmtSscanf(s string, passed, failed *int) (int, error) {
	m := regexp.MustCompile(`^(\d+) passed, (\d+) failed$`).FindStringSubmatch(s)
	if m == nil {
		return 0, os.ErrInvalid
	}
	*passed, _ = strconv.Atoi(m[1])
	*failed, _ = strconv.Atoi(m[2])
	return 2, nil
}

func TestRulesTestFailure(t *testing.T) {
	dir := t.TempDir()
	src := `
target "db" {
  protocol = "postgres"
  address  = ["*:5432"]
}
policy "p" {
  targets = ["db"]
  deny "drop" { when = statement.kind == "drop" }
}
test "drop is denied" {
  target = "db"
  query  = "DROP TABLE users"
  expect = "deny"
}
test "wrongly expects select to be denied" {
  target = "db"
  query  = "SELECT 1"
  expect = "deny"
}
`
	if err := os.WriteFile(filepath.Join(dir, "r.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ := rules(t, "test", dir)
	wantFail := filepath.Join(dir, "r.hcl") + `:15: FAIL "wrongly expects select to be denied": expected deny, got allow by p/default`
	if code != 1 || !strings.Contains(out, wantFail+"\n") || !strings.HasSuffix(out, "\n1 passed, 1 failed\n") {
		t.Errorf("exit %d, output:\n%s\nwant a line %q and 1 passed, 1 failed", code, out, wantFail)
	}
}

func TestRulesExplain(t *testing.T) {
	dir := filepath.Join(rulesets, "readonly-ci")
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"explain", dir, "--identity", "repository=acme/api", "--identity", "ref=refs/heads/main", "--target", "prod-db", "--query", "DROP TABLE users"},
			[]string{"decision: deny by global-guard/deny/ddl (", "reason: schema changes go through migrations", "+ ci-main-readonly (", "+ global-guard/deny/ddl ("}},
		{[]string{"explain", "--target", "replica", "--query", "SELECT * FROM events", "--identity", "repository=acme/api", "--identity", "ref=refs/heads/main", dir},
			[]string{"decision: hold by ci-main-readonly/hold/big-read", "hold: approvers=[group:data-owners] min_approvals=1 timeout=10m0s", "mask: ci-main-readonly/mask/pii"}},
		{[]string{"explain", dir, "--target", "prod-db", "--identity-level", "unverified", "--process", "comm=psql"},
			[]string{"statement: kind=connect", "decision: deny by unverified-lockout/default", "- reporting (", "policy does not cover target"}},
	}
	for _, tt := range tests {
		code, out, errOut := rules(t, tt.args...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tt.args, code, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
	if code, _, errOut := rules(t, "explain", dir, "--target", "nope"); code != 2 || !strings.Contains(errOut, "prod-db, replica") {
		t.Errorf("unknown target: exit %d, %q", code, errOut)
	}
}

func TestRulesSignVerify(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "rules")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, _ := filepath.Glob(filepath.Join(rulesets, "readonly-ci", "*.hcl"))
	for _, f := range src {
		b, _ := os.ReadFile(f)
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(tmp, "team")
	if code, out, errOut := rules(t, "keygen", "--out", key); code != 0 {
		t.Fatalf("keygen: %d %s%s", code, out, errOut)
	}
	if fi, err := os.Stat(key + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key file: %v %v", fi, err)
	}
	if code, _, _ := rules(t, "keygen", "--out", key); code != 1 {
		t.Error("keygen overwrote an existing key")
	}
	if code, _, _ := rules(t, "verify", dir, "--pub", key+".pub"); code != 1 {
		t.Error("unsigned ruleset verified")
	}
	if code, out, errOut := rules(t, "sign", dir, "--key", key+".key"); code != 0 || !strings.Contains(out, "ruleset.sig") {
		t.Fatalf("sign: %d %s%s", code, out, errOut)
	}
	if code, out, errOut := rules(t, "verify", dir, "--pub", key+".pub"); code != 0 {
		t.Fatalf("verify: %d %s%s", code, out, errOut)
	}
	f := filepath.Join(dir, "policy.hcl")
	b, _ := os.ReadFile(f)
	if err := os.WriteFile(f, bytes.Replace(b, []byte(`"drop", `), nil, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := rules(t, "verify", dir, "--pub", key+".pub"); code != 1 || !strings.Contains(errOut, "does not verify") {
		t.Errorf("tampered ruleset: exit %d, %q", code, errOut)
	}
	// A broken ruleset is never signed.
	if err := os.WriteFile(f, []byte("policy {"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := rules(t, "sign", dir, "--key", key+".key"); code != 1 {
		t.Error("signed a broken ruleset")
	}
}

// TestRulesExplainCredential: explain names the credential a flow would be
// injected with, or why it gets none, and never a secret.
func TestRulesExplainCredential(t *testing.T) {
	dir := filepath.Join(rulesets, "injection")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--identity", "repository=acme/api", "--identity", "ref=refs/heads/main", "--identity", "workflow=deploy"},
			"credential: deployer (user deployer, secret from file /etc/sluice/secrets/prod-deployer) granted by acme-api/credential/deployer"},
		{[]string{"--identity", "repository=acme/api", "--identity", "ref=refs/heads/dev"},
			"credential: ci_readonly (user ci_readonly, secret from command /usr/local/bin/db-token) granted by acme-api/credential/ci_readonly"},
		{[]string{"--identity-level", "unverified"},
			`credential: none, the connection is refused: no credential for target "prod": credentials are injected only for jobs with a verified CI identity`},
	} {
		code, out, errOut := rules(t, append([]string{"explain", dir, "--target", "prod"}, tc.args...)...)
		if code != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("explain %v: exit %d\n%s%s\nwant %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

// TestRulesExplainSSH: explain on an ssh target classifies --query as the
// exec request the decoder would see, and --kind as a request of that kind.
func TestRulesExplainSSH(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../ruleset/default.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "default.hcl"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--query", "sudo -u postgres pg_dump prod | gzip"},
			[]string{`request: ssh kind=exec command="sudo -u postgres pg_dump prod | gzip" argv=[] programs=[sudo pg_dump gzip]`, "decision: deny by baseline/deny/ssh-database-dumps"}},
		{[]string{"--query", "cat /etc/app.conf"},
			[]string{`argv=[cat /etc/app.conf] programs=[cat]`, "decision: allow by baseline/default"}},
		{[]string{"--kind", "direct_tcpip"},
			[]string{"request: ssh kind=direct_tcpip", "decision: deny by baseline/deny/ssh-tunnels",
				"flow: relayed opaquely (undecoded): the target has no credential for Sluice to log in to the host with"}},
	} {
		code, out, errOut := rules(t, append([]string{"explain", dir, "--target", "ssh"}, tt.args...)...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tt.args, code, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}

// TestRulesExplainK8s: explain on a k8s target resolves --query as the
// request line the decoder would see, and shows what rules read of it.
func TestRulesExplainK8s(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../ruleset/default.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "default.hcl"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--query", "GET /api/v1/secrets"},
			[]string{`request: k8s verb=list resource_request=true group="" version="v1" resource="secrets" subresource="" namespace="" name="" path="/api/v1/secrets"`,
				"decision: deny by baseline/deny/k8s-secrets-all-namespaces", "reason: reading secrets across all namespaces"}},
		{[]string{"--query", "POST /api/v1/namespaces/ci/pods/web-0/exec"},
			[]string{`resource="pods" subresource="exec" namespace="ci" name="web-0"`, "decision: hold by baseline/hold/k8s-exec"}},
		{[]string{"--kind", "get"},
			[]string{`request: k8s verb=get resource_request=false`, "decision: allow by baseline/default"}},
	} {
		code, out, errOut := rules(t, append([]string{"explain", dir, "--target", "kubernetes"}, tt.args...)...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tt.args, code, errOut)
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}
