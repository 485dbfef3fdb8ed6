package mask

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

var testKey = bytes.Repeat([]byte{7}, KeySize)

func apply(f Func, v string) (string, bool) {
	out, null := f(nil, []byte(v))
	return string(out), null
}

func TestFuncs(t *testing.T) {
	if got, _ := apply(Redact("[X]"), "secret"); got != "[X]" {
		t.Errorf("redact = %q", got)
	}
	if _, null := apply(Null(), "x"); !null {
		t.Error("null not null")
	}
	for _, tt := range []struct {
		keep    int
		in, out string
	}{
		{4, "4111111111111111", "************1111"},
		{4, "1234", "****"},
		{4, "12", "**"},
		{2, "héllo wörld", "*********ld"},
		{3, "日本語テキスト", "****キスト"},
		{0, "abc", "***"},
		{4, "", ""},
	} {
		if got, _ := apply(Partial(tt.keep), tt.in); got != tt.out {
			t.Errorf("partial(%d, %q) = %q, want %q", tt.keep, tt.in, got, tt.out)
		}
	}

	h := Hash(testKey)
	a, _ := apply(h, "alice@example.com")
	b, _ := apply(Hash(testKey), "alice@example.com")
	c, _ := apply(h, "bob@example.com")
	d, _ := apply(Hash([]byte("other key")), "alice@example.com")
	if !regexp.MustCompile(`^h:[0-9a-f]{16}$`).MatchString(a) || a != b || a == c || a == d {
		t.Errorf("hash: %q %q %q %q", a, b, c, d)
	}

	e := Email(testKey)
	got, _ := apply(e, "alice@example.com")
	if !regexp.MustCompile(`^[0-9a-f]{8}@example\.com$`).MatchString(got) {
		t.Errorf("email = %q", got)
	}
	if again, _ := apply(e, "alice@example.com"); again != got {
		t.Error("email not stable")
	}
	if got, _ := apply(e, "not an address"); !strings.HasPrefix(got, HashPrefix) {
		t.Errorf("email of a non-address = %q, want a hash", got)
	}

	dg := Digits(testKey)
	for _, in := range []string{"4111-1111-1111-1111", "+1 (212) 555-0134", "AB12 cd34", "née 12", strings.Repeat("9", 100)} {
		got, _ := apply(dg, in)
		again, _ := apply(dg, in)
		if got != again {
			t.Errorf("digits(%q) not stable", in)
		}
		if got == in {
			t.Errorf("digits(%q) unchanged", in)
		}
		shape := func(s string) string {
			return regexp.MustCompile(`[0-9]`).ReplaceAllString(regexp.MustCompile(`[a-z]`).ReplaceAllString(
				regexp.MustCompile(`[A-Z]`).ReplaceAllString(s, "A"), "a"), "9")
		}
		if strings.ContainsRune(in, 'é') {
			continue
		}
		if shape(got) != shape(in) {
			t.Errorf("digits(%q) = %q: format not kept", in, got)
		}
	}
	if got, _ := apply(dg, "née 12"); len([]rune(got)) != 6 || got[1] != '*' {
		t.Errorf("digits(née 12) = %q", got)
	}
}

func TestFuncsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	dst := make([]byte, 0, 256)
	v := []byte("alice@example.com")
	for _, f := range []Func{Redact("x"), Partial(4), Hash(testKey), Email(testKey), Digits(testKey)} {
		f(dst, v) // warm the pool
		if n := testing.AllocsPerRun(100, func() { f(dst, v) }); n > 0 {
			t.Errorf("%d allocations per call", int(n))
		}
	}
}

func maskRule(id string, spec ruleset.MaskSpec) *ruleset.Rule {
	if spec.Using == "" {
		spec.Using = "redact"
	}
	if spec.Replacement == "" {
		spec.Replacement = ruleset.DefaultReplacement
	}
	if spec.Keep == 0 {
		spec.Keep = ruleset.DefaultKeep
	}
	return &ruleset.Rule{ID: id, Action: ruleset.Mask, Mask: &spec}
}

func mustNew(t testing.TB, rules ...*ruleset.Rule) *Masker {
	t.Helper()
	m, err := New(rules, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestColumnPrecedence: the most specific pattern wins, whatever the
// rule order; equal specificity goes to the earlier rule.
func TestColumnPrecedence(t *testing.T) {
	m := mustNew(t,
		maskRule("bare", ruleset.MaskSpec{Columns: []string{"email"}, Replacement: "bare"}),
		maskRule("star", ruleset.MaskSpec{Columns: []string{"*.email"}, Replacement: "star"}),
		maskRule("glob", ruleset.MaskSpec{Columns: []string{"user?.email", "*.*_token"}, Replacement: "glob"}),
		maskRule("table", ruleset.MaskSpec{Columns: []string{"users.email"}, Replacement: "table"}),
		maskRule("full", ruleset.MaskSpec{Columns: []string{"public.users.email"}, Replacement: "full"}),
		maskRule("schema-glob", ruleset.MaskSpec{Columns: []string{"audit.*.*"}, Replacement: "schema-glob"}),
	)
	tests := []struct {
		col  Column
		want string // "" for no column mask
	}{
		{Column{Schema: "public", Table: "users", Name: "email"}, "full"},
		{Column{Schema: "PUBLIC", Table: "Users", Name: "EMAIL"}, "full"},
		{Column{Schema: "crm", Table: "users", Name: "email"}, "table"},
		{Column{Table: "users", Name: "email"}, "table"},
		{Column{Schema: "crm", Table: "userx", Name: "email"}, "glob"},
		{Column{Schema: "crm", Table: "orders", Name: "email"}, "bare"},
		{Column{Name: "email"}, "bare"}, // expression output named email
		{Column{Schema: "public", Table: "users", Name: "api_token"}, "glob"},
		{Column{Name: "api_token"}, "glob"}, // "*.*_token": its table part matches anything, so expressions too
		{Column{Schema: "audit", Table: "log", Name: "who"}, "schema-glob"},
		{Column{Schema: "public", Table: "users", Name: "id"}, ""},
		{Column{Name: "lower"}, ""},
	}
	for _, tt := range tests {
		p := m.Plan([]Column{tt.col})
		out, _, changed := p.Apply(0, []byte("v"), nil)
		got := ""
		if changed {
			got = string(out)
		}
		if got != tt.want {
			t.Errorf("%+v: masked by %q, want %q", tt.col, got, tt.want)
		}
	}
}

func TestPlan(t *testing.T) {
	m := mustNew(t,
		maskRule("cols", ruleset.MaskSpec{Columns: []string{"users.ssn"}, Using: "null"}),
		maskRule("det", ruleset.MaskSpec{Detect: []string{"email", "card_number"}, Using: "partial", Keep: 4}),
		maskRule("det2", ruleset.MaskSpec{Detect: []string{"email", "ssn"}, Using: "null"}),
	)
	cols := []Column{
		{Table: "users", Name: "id", Type: OIDInt4},
		{Table: "users", Name: "ssn", Type: OIDText},
		{Table: "users", Name: "notes", Type: OIDText},
		{Name: "lower", Type: OIDText},
		{Table: "users", Name: "created", Type: OIDTimestampTZ},
	}
	p := m.Plan(cols)
	if !p.NeedsDecode() {
		t.Fatal("NeedsDecode false")
	}
	check := func(col int, in, want string, wantNull, wantChanged bool) {
		t.Helper()
		out, null, changed := p.Apply(col, []byte(in), nil)
		if string(out) != want || null != wantNull || changed != wantChanged {
			t.Errorf("Apply(%d, %q) = %q, %t, %t; want %q, %t, %t", col, in, out, null, changed, want, wantNull, wantChanged)
		}
	}
	check(0, "42", "42", false, false)
	check(1, "123-45-6789", "", true, true)
	check(2, "mail alice@example.com or pay 4111 1111 1111 1111.", "mail *************.com or pay ***************1111.", false, true)
	check(3, "alice@example.com", "*************.com", false, true)
	check(2, "ssn 123-45-6789", "", true, true) // null rule's detector
	check(2, "nothing here", "nothing here", false, false)
	check(4, "2024-01-15 10:30:00+00", "2024-01-15 10:30:00+00", false, false)
	counts := map[string]int64{}
	for _, c := range p.Counts() {
		counts[c.Rule.ID] = c.Values
	}
	if counts["cols"] != 1 || counts["det"] != 3 || counts["det2"] != 1 {
		t.Errorf("counts %v", counts)
	}
	if r, ok := p.Masked(1); !ok || r.ID != "cols" {
		t.Error("Masked(1)")
	}

	// Nothing to mask: rows relayed undecoded.
	m2 := mustNew(t, maskRule("c", ruleset.MaskSpec{Columns: []string{"users.ssn"}}))
	if m2.Plan([]Column{{Table: "orders", Name: "id"}, {Name: "ssn_count"}}).NeedsDecode() {
		t.Error("NeedsDecode true for unmasked columns")
	}
	if mustNew(t).Plan(cols).NeedsDecode() {
		t.Error("NeedsDecode true without rules")
	}

	// Out-of-range columns fail closed.
	if _, null, _ := p.Apply(9, []byte("x"), nil); !null {
		t.Error("out-of-range column not NULL")
	}
}

func TestDryRun(t *testing.T) {
	m := mustNew(t,
		maskRule("c", ruleset.MaskSpec{Columns: []string{"ssn"}, Using: "null"}),
		maskRule("d", ruleset.MaskSpec{Detect: []string{"email"}}))
	p := m.Plan([]Column{{Name: "ssn"}, {Name: "notes"}})
	p.DryRun = true
	for col, v := range []string{"123-45-6789", "x alice@example.com"} {
		out, null, changed := p.Apply(col, []byte(v), nil)
		if string(out) != v || null || !changed {
			t.Errorf("dry-run Apply(%d) = %q, %t, %t", col, out, null, changed)
		}
	}
	if c := p.Counts(); len(c) != 2 || c[0].Values != 1 || c[1].Values != 1 {
		t.Errorf("counts %+v", c)
	}
	row := []byte("123-45-6789\tx alice@example.com\n")
	out, err := p.CopyText(row, nil, CopyOptions{})
	if err != nil || !bytes.Equal(out, row) {
		t.Errorf("dry-run CopyText = %q, %v", out, err)
	}
}

func TestApplyBinary(t *testing.T) {
	m := mustNew(t,
		maskRule("c", ruleset.MaskSpec{Columns: []string{"t.name", "t.n", "t.doc"}}),
		maskRule("d", ruleset.MaskSpec{Detect: []string{"card_number", "email"}}))
	cols := []Column{
		{Table: "t", Name: "name", Type: OIDVarchar},
		{Table: "t", Name: "n", Type: OIDInt8},
		{Table: "t", Name: "doc", Type: OIDJSONB},
		{Table: "t", Name: "big", Type: OIDInt8},
		{Table: "t", Name: "js", Type: OIDJSONB},
		{Table: "t", Name: "num", Type: OIDNumeric},
		{Table: "t", Name: "blob", Type: 0},
	}
	p := m.Plan(cols)
	be8 := func(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }
	tests := []struct {
		col           int
		in            []byte
		want          string
		null, changed bool
	}{
		{0, []byte("alice"), "[REDACTED]", false, true},
		{1, be8(42), "", true, true},
		{2, append([]byte{1}, `{"a":1}`...), "", true, true},
		{3, be8(4111111111111111), "", true, true},
		{3, be8(42), string(be8(42)), false, false},
		{4, append([]byte{1}, `{"mail":"alice@example.com"}`...), "\x01{\"mail\":\"[REDACTED]\"}", false, true},
		// numeric 4111111111111111: weight 3, digits 4111 1111 1111 1111
		{5, []byte{0, 4, 0, 3, 0, 0, 0, 0, 0x10, 0x0f, 0x04, 0x57, 0x04, 0x57, 0x04, 0x57}, "", true, true},
		{5, []byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 42}, "\x00\x01\x00\x00\x00\x00\x00\x00\x00\x2a", false, false},
		{6, []byte("x bob@example.com"), "", true, true},
	}
	for _, tt := range tests {
		out, null, changed := p.ApplyBinary(tt.col, 0, tt.in, nil)
		if string(out) != tt.want || null != tt.null || changed != tt.changed {
			t.Errorf("ApplyBinary(%s, %q) = %q, %t, %t; want %q, %t, %t", cols[tt.col].Name, tt.in, out, null, changed, tt.want, tt.null, tt.changed)
		}
	}
}

func TestText(t *testing.T) {
	m := mustNew(t,
		maskRule("cols", ruleset.MaskSpec{Columns: []string{"users.ssn", "*.password_hash"}, Using: "hash"}),
		maskRule("det", ruleset.MaskSpec{Detect: []string{"email", "ssn", "card_number"}}))
	tests := []struct{ in, want string }{
		{`Key (email)=(alice@example.com) already exists.`, `Key (email)=([REDACTED]) already exists.`},
		{`Key (org_id, email)=(7, alice@example.com) already exists.`, `Key (org_id, email)=(7, [REDACTED]) already exists.`},
		{`Key (ssn)=(123456789) already exists.`, ""}, // hashed by the column rule
		{`Failing row contains (1, alice, s3cret-hash-value).`, `Failing row contains ([REDACTED]).`},
		{`duplicate key value violates unique constraint "users_email_key"`, `duplicate key value violates unique constraint "users_email_key"`},
		{`invalid input syntax for type integer: "4111 1111 1111 1111"`, `invalid input syntax for type integer: "[REDACTED]"`},
	}
	for _, tt := range tests {
		got, changed := m.Text(tt.in)
		if tt.want == "" {
			if !regexp.MustCompile(`^Key \(ssn\)=\(h:[0-9a-f]{16}\) already exists\.$`).MatchString(got) {
				t.Errorf("Text(%q) = %q", tt.in, got)
			}
			continue
		}
		if got != tt.want || changed != (tt.in != tt.want) {
			t.Errorf("Text(%q) = %q, %t; want %q", tt.in, got, changed, tt.want)
		}
	}
	// A null rule's detected span is redacted in messages.
	mn := mustNew(t, maskRule("n", ruleset.MaskSpec{Detect: []string{"email"}, Using: "null"}))
	if got, _ := mn.Text("to bob@example.com"); got != "to [REDACTED]" {
		t.Errorf("null span: %q", got)
	}
}

func TestFromRuleset(t *testing.T) {
	rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(`
target "db" {
  protocol = "postgres"
  address  = ["*:5432"]
}
detector "employee_id" { pattern = "EMP-[0-9]{6}" }
policy "p" {
  targets = ["db"]
  mask "cols" {
    columns = ["users.card"]
    using   = "partial"
    keep    = 4
  }
  mask "det" {
    detect = ["employee_id", "email"]
    using  = "email"
  }
}`)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	d := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "db", Protocol: "postgres"}}).Decide(&ruleset.Statement{Kind: "select"}, ruleset.Result{})
	if len(d.Masks) != 2 {
		t.Fatalf("masks %v", d.Masks)
	}
	c := NewCache(testKey)
	m, err := c.Masker(d.Masks)
	if err != nil {
		t.Fatal(err)
	}
	if m2, _ := c.Masker(append([]*ruleset.Rule(nil), d.Masks...)); m2 != m {
		t.Error("cache missed for the same rules")
	}
	if m3, _ := c.Masker(d.Masks[:1]); m3 == m {
		t.Error("cache hit for other rules")
	}
	p := m.Plan([]Column{{Table: "users", Name: "card"}, {Table: "users", Name: "notes"}})
	if out, _, _ := p.Apply(0, []byte("4111111111111111"), nil); string(out) != "************1111" {
		t.Errorf("card: %q", out)
	}
	if out, _, _ := p.Apply(1, []byte("EMP-123456"), nil); !regexp.MustCompile(`^h:[0-9a-f]{16}$`).Match(out) {
		t.Errorf("employee id: %q", out)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil || len(k1) != KeySize {
		t.Fatalf("create: %v, %d bytes", err, len(k1))
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("reload: %v, same=%t", err, bytes.Equal(k1, k2))
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil {
		t.Error("loose permissions accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, KeyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil {
		t.Error("short key accepted")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}
