package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/api"
)

// TestRulesExplainUndecoded: explain says, per target, whether this build
// decodes its flows, relays them opaquely, or refuses them undecoded.
// Its undecoded example is ssh without a credential; a k8s target's flows
// are decoded when the client trusts Sluice's CA, and the others are
// refused as its undecoded setting says.
func TestRulesExplainUndecoded(t *testing.T) {
	dir := t.TempDir()
	src := `target "pg" {
  protocol = "postgres"
  address  = ["*:5432"]
}
target "kube" {
  protocol = "k8s"
  address  = ["*:6443"]
}
target "git" {
  protocol  = "ssh"
  address   = ["*:22"]
  undecoded = "relay"
}
target "raw" {
  protocol = "tcp"
  address  = ["*:9000"]
}
policy "all" {
  targets = ["*"]
}
`
	if err := os.WriteFile(filepath.Join(dir, "r.hcl"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		target string
		args   []string
		want   string
	}{
		{"pg", nil, "flow: decoded (this build decodes postgres)\n"},
		{"raw", nil, "flow: relayed opaquely (tcp targets are never decoded; flows are recorded as metadata)\n"},
		{"git", nil, `flow: relayed opaquely (undecoded): the target has no credential for Sluice to log in to the host with and undecoded = "relay" (at ` +
			filepath.Join(dir, "r.hcl") + `:12); the flow is relayed uninspected and recorded as metadata` + "\n"},
		{"kube", nil, `flow: decoded when the job's client trusts Sluice's CA: its TLS server name is kubernetes.sluice.internal, as a kubeconfig from sluice kubeconfig sends; other flows (the job's client does not trust Sluice's CA (its TLS server name is not kubernetes.sluice.internal, which a kubeconfig from sluice kubeconfig sends)) are refused by rule target/kube/undecoded, as undecoded = "refuse" (by default)` + "\n"},
		{"git", []string{"--kind", "drop"}, "; this statement would never be seen, so the decision above does not apply to it\n"},
	}
	for _, tt := range tests {
		code, out, errOut := rules(t, append([]string{"explain", dir, "--target", tt.target}, tt.args...)...)
		if code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("explain --target %s %v: exit %d, want a line ending %q in:\n%s%s", tt.target, tt.args, code, tt.want, out, errOut)
		}
	}
}

// TestDoctorUndecoded: doctor lists the targets refused for lack of a
// decoder as a warning with a fix, and mentions relayed ones.
func TestDoctorUndecoded(t *testing.T) {
	st := &api.Status{Targets: []api.Target{
		{Name: "pg", Protocol: "postgres", Decoded: true},
		{Name: "kube", Protocol: "k8s", Undecoded: "refuse", Rule: "target/kube/undecoded"},
		{Name: "git", Protocol: "ssh", Undecoded: "relay", Rule: "target/git/undecoded", Why: "the target has no credential for Sluice to log in to the host with"},
	}}
	st.Ruleset.Mode = "enforce"
	f := checkRuleset(st)
	if f.level != levelWarn || !strings.Contains(f.detail, "refused, since they cannot be decoded: kube (k8s: no decoder in this build; rule target/kube/undecoded)") ||
		!strings.Contains(f.detail, "relayed without inspection: git (ssh: the target has no credential for Sluice to log in to the host with)") || !strings.Contains(f.fix, `undecoded = "relay"`) {
		t.Errorf("doctor ruleset finding: %+v", f)
	}
	st.Targets = st.Targets[:1:1]
	st.Targets = append(st.Targets, api.Target{Name: "git", Protocol: "ssh", Undecoded: "relay"})
	if f := checkRuleset(st); f.level != levelOK || !strings.Contains(f.detail, "git (ssh: ") {
		t.Errorf("doctor with only relayed undecoded targets: %+v, want ok naming git", f)
	}
}
