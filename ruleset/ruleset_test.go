package ruleset

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const testTargets = `
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432", "10.0.0.0/8:5432", "*:5432"]
}
target "db2" {
  protocol = "postgres"
  address  = ["10.0.0.0/16:5432"]
}
`

func mustParse(t testing.TB, files map[string]string) *Ruleset {
	t.Helper()
	src := map[string][]byte{}
	for n, s := range files {
		src[n] = []byte(s)
	}
	rs, diags := Parse(src)
	if diags.HasErrors() {
		t.Fatalf("Parse: %v", diags)
	}
	return rs
}

func input(repo, kind string, tables ...string) *Input {
	in := &Input{}
	in.Identity = Identity{Level: LevelOIDC, Claims: map[string]string{"repository": repo}}
	in.Target = Endpoint{Name: "db", Protocol: ProtoPostgres}
	in.Statement = Statement{Kind: kind, Tables: tables}
	return in
}

// TestDenyNotUndoneByAllow is the acceptance test: a deny in one
// policy holds whatever another, more specific policy allows, in either
// file order.
func TestDenyNotUndoneByAllow(t *testing.T) {
	guard := `
policy "guard" {
  targets = ["*"]
  deny "no-drop" { when = statement.kind == "drop" }
}`
	specific := `
policy "trusted-repo" {
  targets = ["db"]
  when    = identity.repository == "acme/api"
  allow "everything" {}
}`
	for _, order := range [][2]string{{"a.hcl", "b.hcl"}, {"b.hcl", "a.hcl"}} {
		rs := mustParse(t, map[string]string{"t.hcl": testTargets, order[0]: guard, order[1]: specific})
		d := rs.Evaluate(input("acme/api", "drop", "users"))
		if d.Action != Deny || d.Rule.ID != "guard/deny/no-drop" {
			t.Errorf("files %v: got %s by %s, want deny by guard/deny/no-drop", order, d.Action, d.Rule.ID)
		}
		d = rs.Evaluate(input("acme/api", "select", "users"))
		if d.Action != Allow || d.Rule.ID != "trusted-repo/allow/everything" {
			t.Errorf("files %v: select got %s by %s, want allow by trusted-repo/allow/everything", order, d.Action, d.Rule.ID)
		}
	}
}

func TestPrecedence(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "a" {
  targets = ["db"]
  hold "copy" {
    when      = statement.kind == "copy_out"
    approvers = ["group:sec"]
    min_approvals = 2
  }
  mask "users" {
    when    = contains(statement.tables, "users")
    columns = ["users.email"]
  }
}
policy "b" {
  targets = ["db"]
  when    = identity.repository == "acme/locked"
  default_action = "deny"
  allow "reads" { when = statement.kind == "select" }
  mask "all" { detect = ["secret"] }
}
policy "c" {
  targets = ["db"]
  record  = "full"
  allow { when = statement.kind == "insert" }
}
`})
	tests := []struct {
		repo, kind string
		tables     []string
		action     Action
		rule       string
		masks      int
	}{
		{"acme/api", "select", nil, Allow, "a/default", 0},
		{"acme/api", "insert", nil, Allow, "c/allow[0]", 0},
		{"acme/api", "update", nil, Allow, "a/default", 0},
		{"acme/api", "select", []string{"users"}, Mask, "a/mask/users", 1},
		{"acme/api", "copy_out", []string{"users"}, Hold, "a/hold/copy", 1},
		{"acme/locked", "select", nil, Mask, "b/mask/all", 1},
		{"acme/locked", "select", []string{"users"}, Mask, "a/mask/users", 2},
		// b's default deny beats c's explicit allow and a's hold.
		{"acme/locked", "insert", nil, Deny, "b/default", 0},
		{"acme/locked", "copy_out", nil, Deny, "b/default", 0},
	}
	for _, tt := range tests {
		d := rs.Evaluate(input(tt.repo, tt.kind, tt.tables...))
		if d.Action != tt.action || d.Rule.ID != tt.rule || len(d.Masks) != tt.masks {
			t.Errorf("%s %s %v: got %s by %s with %d masks, want %s by %s with %d", tt.repo, tt.kind, tt.tables,
				d.Action, d.Rule.ID, len(d.Masks), tt.action, tt.rule, tt.masks)
		}
		if d.Record != RecordFull {
			t.Errorf("%s %s: record %s, want full (policy c matches every flow)", tt.repo, tt.kind, d.Record)
		}
		if d.Action == Hold && (d.Hold == nil || d.Hold.MinApprovals != 2 || d.Hold.Timeout != DefaultHoldTimeout) {
			t.Errorf("hold spec = %+v", d.Hold)
		}
	}
}

func TestDefaultBlock(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "only-api" {
  targets = ["db"]
  when    = identity.repository == "acme/api"
}
default {
  action = "allow"
  record = "none"
}`})
	d := rs.Evaluate(input("acme/web", "drop"))
	if d.Action != Allow || d.Rule.ID != "default" || d.Record != RecordNone {
		t.Errorf("got %s by %s record %s, want allow by default record none", d.Action, d.Rule.ID, d.Record)
	}
	// Without a default block, unmatched flows are denied.
	rs = mustParse(t, map[string]string{"t.hcl": testTargets})
	if d := rs.Evaluate(input("acme/web", "select")); d.Action != Deny || d.Rule.ID != "default" {
		t.Errorf("no default block: got %s by %s, want deny by default", d.Action, d.Rule.ID)
	}
}

func TestResultStage(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "p" {
  targets = ["db"]
  hold "bulk" {
    when      = statement.kind == "copy_out" || result.rows > 1000
    approvers = ["group:sec"]
  }
}`})
	r := rs.Rule("p/hold/bulk")
	if r == nil || !r.AfterResult {
		t.Fatalf("rule p/hold/bulk = %+v, want AfterResult", r)
	}
	tests := []struct {
		kind   string
		res    Result
		action Action
		await  bool
	}{
		{"copy_out", Result{}, Hold, false}, // decided without the result
		{"select", Result{}, Allow, true},   // depends on the result
		{"select", Result{Known: true, Rows: 10}, Allow, false},
		{"select", Result{Known: true, Rows: 5000}, Hold, false},
	}
	for _, tt := range tests {
		in := input("x", tt.kind)
		in.Result = tt.res
		d := rs.Evaluate(in)
		if d.Action != tt.action || d.AwaitResult != tt.await {
			t.Errorf("%s %+v: got %s await=%t, want %s await=%t", tt.kind, tt.res, d.Action, d.AwaitResult, tt.action, tt.await)
		}
	}
}

func TestMonitorMode(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets + `mode = "monitor"`, "p.hcl": `
policy "p" {
  targets = ["*"]
  deny { when = statement.kind == "drop" }
}`})
	if rs.Mode() != Monitor {
		t.Fatalf("mode = %s", rs.Mode())
	}
	d := rs.Evaluate(input("x", "drop"))
	if d.Action != Deny || !d.Monitor || d.Enforced() != Allow {
		t.Errorf("got action %s monitor %t enforced %s, want deny, true, allow", d.Action, d.Monitor, d.Enforced())
	}
}

func TestIdentityAndFlowFacts(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "p" {
  targets = ["*"]
  deny "no-team"  { when = identity.team == "" }
  deny "not-oidc" { when = identity.level != "oidc" }
  deny "root"     { when = process.uid == 0 }
  deny "outside"  { when = !cidr_contains("10.0.0.0/8", target.ip) }
  deny "psql"     { when = regex("^psql$", process.comm) && target.port == 5432 }
  deny "bad-ref"  { when = !glob("refs/heads/*", identity["ref"]) }
}`})
	base := func() *Input {
		in := input("acme/api", "select")
		in.Identity.Claims["team"] = "payments"
		in.Identity.Claims["ref"] = "refs/heads/release/1.2"
		in.Process = Process{UID: 1000, Comm: "pg_dump"}
		in.Target.Addr = netip.MustParseAddrPort("10.1.2.3:5432")
		return in
	}
	if d := rs.Evaluate(base()); d.Action != Allow {
		t.Fatalf("base input: got %s by %s (%v), want allow", d.Action, d.Rule.ID, d.Err)
	}
	tests := []struct {
		rule   string
		change func(*Input)
	}{
		{"p/deny/no-team", func(in *Input) { delete(in.Identity.Claims, "team") }},
		{"p/deny/not-oidc", func(in *Input) { in.Identity.Level = LevelUnverified }},
		{"p/deny/root", func(in *Input) { in.Process.UID = 0 }},
		{"p/deny/outside", func(in *Input) { in.Target.Addr = netip.MustParseAddrPort("192.168.1.1:5432") }},
		{"p/deny/psql", func(in *Input) { in.Process.Comm = "psql" }},
		{"p/deny/bad-ref", func(in *Input) { in.Identity.Claims["ref"] = "refs/tags/v1" }},
	}
	for _, tt := range tests {
		in := base()
		tt.change(in)
		if d := rs.Evaluate(in); d.Action != Deny || d.Rule.ID != tt.rule {
			t.Errorf("%s: got %s by %s, want deny by %s", tt.rule, d.Action, d.Rule.ID, tt.rule)
		}
	}
}

func TestEvaluationErrorFailsClosed(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "p" {
  targets = ["*"]
  allow "pattern" { when = regex(identity.pattern, statement.text) }
}`})
	in := input("x", "select")
	in.Identity.Claims["pattern"] = "(["
	d := rs.Evaluate(in)
	if d.Action != Deny || d.Err == nil || d.Rule.ID != "p/allow/pattern" {
		t.Errorf("got %s by %v err %v, want deny by p/allow/pattern with an error", d.Action, d.Rule, d.Err)
	}
}

func TestTargetFor(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets + `
target "ssh" {
  protocol = "ssh"
  address  = ["10.0.0.5:22", "bastion.internal:22"]
}`})
	tests := []struct{ addr, want string }{
		{"10.0.0.5:5432", "db"},  // /32 beats db2's /16
		{"10.0.7.7:5432", "db2"}, // /16 beats /8
		{"10.9.0.1:5432", "db"},  // /8
		{"8.8.8.8:5432", "db"},   // *
		{"10.0.0.5:22", "ssh"},   // port decides
		{"10.0.0.6:22", ""},      // hostnames are not resolved here
		{"10.0.0.5:3306", ""},    // no target on that port
		{"[::ffff:10.0.0.5]:22", "ssh"},
	}
	for _, tt := range tests {
		got := ""
		if tg := rs.TargetFor(netip.MustParseAddrPort(tt.addr)); tg != nil {
			got = tg.Name
		}
		if got != tt.want {
			t.Errorf("TargetFor(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if tg := rs.Target("ssh"); tg.UpstreamTLS != TLSDisable || tg.ResolveEvery != DefaultResolveEvery {
		t.Errorf("ssh target defaults: %+v", tg)
	}
	if tg := rs.Target("db"); tg.UpstreamTLS != TLSPrefer {
		t.Errorf("postgres target default TLS = %s, want prefer", tg.UpstreamTLS)
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"refs/heads/*", "refs/heads/main", true},
		{"refs/heads/*", "refs/heads/release/1.2", true},
		{"refs/heads/*", "refs/tags/v1", false},
		{"*.password_hash", "users.password_hash", true},
		{"public.?sers", "public.users", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"", "", true},
		{"*", "", true},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{"é?", "éé", true},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("glob(%q, %q) = %t, want %t", tt.pattern, tt.s, got, tt.want)
		}
	}
}

// TestLoadDiagnostics covers checks that need more than one broken thing
// in view, or that sit in test blocks (which cannot live under
// testdata/rulesets/invalid, a directory `rules test` skips because it has
// no test blocks).
func TestLoadDiagnostics(t *testing.T) {
	tests := []struct {
		name, src, summary string
		line, col          int
	}{
		{"unknown expect_rule", `test "t" {
  target      = "db"
  expect      = "deny"
  expect_rule = "default/x"
}`, "Unknown rule", 4, 17},
		{"unknown test target", `test "t" {
  target = "dbb"
  expect = "deny"
}`, "Unknown target", 2, 12},
		{"query and statement", `test "t" {
  target    = "db"
  query     = "SELECT 1"
  statement = { kind = "select" }
  expect    = "allow"
}`, "Conflicting arguments", 4, 3},
		{"unknown statement key", `test "t" {
  target    = "db"
  statement = { kind = "select", table = ["x"] }
  expect    = "allow"
}`, "Unsupported attribute", 3, 34},
		{"flags not a list", `test "t" {
  target    = "db"
  statement = { kind = "set", flags = "search_path" }
  expect    = "allow"
}`, "Incorrect value type", 3, 39},
		{"flags of numbers", `test "t" {
  target    = "db"
  statement = { kind = "set", flags = [1, true] }
  expect    = "allow"
}`, "Incorrect value type", 3, 39},
		{"unknown statement attribute in when", `policy "p" {
  targets = ["db"]
  deny { when = contains(statement.flag, "search_path") }
}`, "Unsupported attribute", 3, 35},
		{"flags compared with a string", `policy "p" {
  targets = ["db"]
  deny { when = statement.flags == "search_path" }
}`, "List compared with a single value", 3, 17},
		{"bad expect", `test "t" {
  target = "db"
  expect = "block"
}`, "Invalid value for expect", 3, 12},
		{"duplicate rule label", `policy "p" {
  targets = ["db"]
  deny "x" {}
  deny "x" {}
}`, "Duplicate rule name", 4, 8},
		{"two labels", `policy "p" {
  targets = ["db"]
  deny "x" "y" {}
}`, "Extraneous label", 3, 12},
		{"missing targets", `policy "p" {
}`, "Missing required argument", 1, 1},
		{"mask without columns", `policy "p" {
  targets = ["db"]
  mask { using = "hash" }
}`, "Nothing to mask", 3, 3},
		{"tls on ssh", `target "s" {
  protocol     = "ssh"
  address      = ["*:22"]
  upstream_tls = "require"
}`, "upstream_tls not supported", 4, 18},
		{"duplicate mode", `mode = "enforce"
mode = "monitor"`, "Attribute redefined", 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"t.hcl": []byte(testTargets), "x.hcl": []byte(tt.src)})
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			d := diags[0]
			if d.Summary != tt.summary || d.Subject == nil || d.Subject.Filename != "x.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %v at %v, want %q at x.hcl:%d:%d", d, d.Subject, tt.summary, tt.line, tt.col)
			}
		})
	}
}

func TestRunTestsReportsFailures(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "p" {
  targets = ["db"]
  deny "drop" { when = statement.kind == "drop" }
}
test "passes" {
  target    = "db"
  statement = { kind = "drop" }
  expect    = "deny"
}
test "wrong action" {
  target    = "db"
  statement = { kind = "select" }
  expect    = "deny"
}
test "wrong rule" {
  target      = "db"
  statement   = { kind = "drop" }
  expect      = "deny"
  expect_rule = "p/default"
}
test "needs a classifier" {
  target = "db"
  query  = "DROP TABLE x"
  expect = "deny"
}`})
	res := rs.RunTests(nil)
	want := []struct {
		passed bool
		msg    string
	}{
		{true, ""},
		{false, "expected deny, got allow by p/default"},
		{false, "expected rule p/default, got p/deny/drop"},
		{false, "no classifier"},
	}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d", len(res), len(want))
	}
	for i, w := range want {
		if res[i].Passed != w.passed || !strings.Contains(res[i].Message, w.msg) {
			t.Errorf("%s: passed=%t %q, want passed=%t %q", res[i].Name, res[i].Passed, res[i].Message, w.passed, w.msg)
		}
	}
	classify := func(protocol, text string) (Statement, error) {
		return Statement{Kind: strings.ToLower(strings.Fields(text)[0])}, nil
	}
	if r := rs.RunTests(classify)[3]; !r.Passed {
		t.Errorf("with a classifier: %s", r.Message)
	}
}

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	for n, src := range map[string]string{"a.hcl": testTargets, "b.hcl": "# more rules\n", "notes.txt": "not signed"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)

	if err := VerifyDir(dir, pub); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("unsigned: %v, want ErrNoSignature", err)
	}
	if _, err := SignDir(dir, priv); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDir(dir, pub); err != nil {
		t.Fatalf("signed: %v", err)
	}
	if err := VerifyDir(dir, otherPub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other key: %v, want ErrBadSignature", err)
	}
	b, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Moving content between files changes the digest even though the
	// concatenation is the same.
	moved := map[string][]byte{"a.hcl": append(append([]byte{}, b.Files["a.hcl"]...), b.Files["b.hcl"]...), "b.hcl": nil}
	if err := VerifyFiles(moved, b.Signature, pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("moved content: %v, want ErrBadSignature", err)
	}
	if err := VerifyFiles(map[string][]byte{"../a.hcl": nil}, b.Signature, pub); err == nil {
		t.Error("path in a file name was accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "a.hcl"), []byte(testTargets+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDir(dir, pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered: %v, want ErrBadSignature", err)
	}
	// Keys survive their file format.
	p2, err := ParsePrivateKey(MarshalPrivateKey(priv))
	if err != nil || !p2.Equal(priv) {
		t.Errorf("private key round trip: %v", err)
	}
	k2, err := ParsePublicKey(MarshalPublicKey(pub))
	if err != nil || !k2.Equal(pub) {
		t.Errorf("public key round trip: %v", err)
	}
	if _, err := ParsePublicKey([]byte("AAAA")); err == nil {
		t.Error("short public key accepted")
	}
	// The loaded ruleset's digest is the signed digest.
	rs, _, diags := Load(dir)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	b, _ = ReadBundle(dir)
	if d := Digest(b.Files); rs.Digest() != fmt.Sprintf("%x", d) {
		t.Errorf("ruleset digest %s != bundle digest %x", rs.Digest(), d)
	}
}

func TestStore(t *testing.T) {
	s := NewStore(nil, "")
	if s.Current() != nil || s.Status().Generation != 0 {
		t.Fatal("empty store is not empty")
	}
	ok, diags := s.Load(map[string][]byte{"a.hcl": []byte(testTargets)}, "first")
	if !ok || diags.HasErrors() {
		t.Fatalf("good load: %v", diags)
	}
	first := s.Current()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if rs := s.Current(); rs == nil || rs.Target("db") == nil {
					t.Error("reader saw no ruleset")
					return
				}
			}
		}()
	}
	ok, diags = s.Load(map[string][]byte{"a.hcl": []byte(`target "x" {}`)}, "broken")
	wg.Wait()
	if ok || !diags.HasErrors() {
		t.Fatal("bad load accepted")
	}
	st := s.Status()
	if s.Current() != first || st.Generation != 1 || st.Source != "first" || st.LastError == nil || st.LastError.Source != "broken" {
		t.Errorf("after a bad load: status %+v", st)
	}
	if ok, _ := s.Load(map[string][]byte{"a.hcl": []byte(testTargets + "\n")}, "second"); !ok {
		t.Fatal("second good load refused")
	}
	if st := s.Status(); st.Generation != 2 || st.LastError != nil || s.Current() == first {
		t.Errorf("after a good load: status %+v", st)
	}
}

// TestMaskSkipsStatementsWithoutData: a mask rule with no condition
// fires on every statement that can bring data back, but not on a
// connection decision or on transaction control, whose verdict is then
// what the other rules say (a transcript must not show BEGIN as masked).
func TestMaskSkipsStatementsWithoutData(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "p.hcl": `
policy "p" {
  targets = ["db"]
  allow "reads" { when = statement.kind != "drop" }
  mask "contact" { columns = ["users.email"] }
}`})
	for kind, want := range map[string]Action{
		"select": Mask, "insert": Mask, "show": Mask, "call": Mask,
		KindTransaction: Allow, KindConnect: Allow,
	} {
		d := rs.Evaluate(input("acme/api", kind, "users"))
		if d.Action != want || want == Mask && len(d.Masks) != 1 || want == Allow && len(d.Masks) != 0 {
			t.Errorf("kind %s: got %s by %s with %d masks, want %s", kind, d.Action, d.Rule.ID, len(d.Masks), want)
		}
	}
}
