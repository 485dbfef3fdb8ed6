package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/rulesource"
	"github.com/sluicehq/sluice/ruleset"
)

// TestRulesPublishFile: publish to a FILE writes a bundle that verifies
// with the public key; a broken ruleset is never published; --to and
// --key are required.
func TestRulesPublishFile(t *testing.T) {
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
	key := filepath.Join(tmp, "fleet")
	if code, out, errOut := rules(t, "keygen", "--out", key); code != 0 {
		t.Fatalf("keygen: %d %s%s", code, out, errOut)
	}
	out := filepath.Join(tmp, "bundle.json")
	code, stdout, stderr := rules(t, "publish", dir, "--to", out, "--key", key+".key")
	if code != 0 || !strings.Contains(stdout, "published version ") || !strings.Contains(stdout, " to "+out) {
		t.Fatalf("publish: %d %s%s", code, stdout, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rulesource.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	pubData, _ := os.ReadFile(key + ".pub")
	pub, err := ruleset.ParsePublicKey(pubData)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(pub, 0); err != nil {
		t.Fatalf("published bundle: %v", err)
	}
	if len(b.Files) != len(src) {
		t.Errorf("bundle has %d files, want %d", len(b.Files), len(src))
	}
	if code, _, _ := rules(t, "publish", dir, "--key", key+".key"); code != 2 {
		t.Errorf("publish without --to: exit %d, want 2", code)
	}
	if code, _, _ := rules(t, "publish", dir, "--to", out); code != 2 {
		t.Errorf("publish without --key: exit %d, want 2", code)
	}
	if code, _, errOut := rules(t, "publish", dir, "--to", "http://example.invalid/b.json", "--key", key+".key"); code != 1 || !strings.Contains(errOut, "plain http is not accepted") {
		t.Errorf("publish to http://: exit %d, %q", code, errOut)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.hcl"), []byte("policy {"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(out)
	if code, _, errOut := rules(t, "publish", dir, "--to", out, "--key", key+".key"); code != 1 || !strings.Contains(errOut, "not publishing a ruleset with errors") {
		t.Errorf("publish of a broken ruleset: exit %d, %q", code, errOut)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Error("a broken ruleset replaced the published bundle")
	}
}
