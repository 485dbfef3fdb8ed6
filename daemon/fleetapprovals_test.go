package daemon

import (
	"strings"
	"testing"
)

// TestLoadConfigFleetApprovals: the approvals block's fleet settings get
// their defaults, and each mistake is a diagnostic saying what to fix.
func TestLoadConfigFleetApprovals(t *testing.T) {
	c, diags, _ := loadConfig(writeConfig(t, `
cgroup = "runner"
approvals {
  nats_url     = "nats://127.0.0.1:4222,tls://10.0.0.2:4222"
  vm           = "vm-7"
  issuer       = "https://token.actions.example.com"
  allow_claims = { groups = "security" }
}
`))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	a := c.Approvals
	if a.Bucket != "SLUICE_HOLDS" || a.Audience != "sluice" || a.VM != "vm-7" || a.AllowClaims["groups"] != "security" {
		t.Errorf("approvals settings %+v", a)
	}
	ok := "nats_url = \"nats://x:4222\"\n  issuer = \"https://i.example.com\"\n  allow_claims = { org = \"acme\" }\n"
	for _, tc := range []struct{ body, want string }{
		{"nats_url = \"http://x\"\n  issuer = \"https://i.example.com\"\n  allow_claims = { org = \"acme\" }", "Invalid approvals nats_url"},
		{"nats_url = \"nats://x:4222\"\n  allow_claims = { org = \"acme\" }", "Invalid approvals issuer"},
		{"nats_url = \"nats://x:4222\"\n  issuer = \"http://i.example.com\"\n  allow_claims = { org = \"acme\" }", "Invalid approvals issuer"},
		{"nats_url = \"nats://x:4222\"\n  issuer = \"https://i.example.com\"", "approvals nats_url without allow_claims"},
		{ok + "  vm = \"a.b\"", "Invalid approvals vm"},
		{ok + "  bucket = \"a.b\"", "Invalid approvals bucket"},
		{ok + "  nats_creds = \"/nonexistent/x.creds\"", "Invalid approvals nats_creds"},
		{ok + "  issuer_ca_file = \"/nonexistent/ca.pem\"", "Invalid approvals issuer_ca_file"},
		{"issuer = \"https://i.example.com\"", "approvals issuer without nats_url"},
	} {
		_, diags, _ := loadConfig(writeConfig(t, "cgroup = \"runner\"\napprovals {\n  "+tc.body+"\n}\n"))
		if !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diagnostics %q, want %q", tc.body, diags.Error(), tc.want)
		}
	}
}
