package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sluiced.hcl")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	c, diags, _ := loadConfig(writeConfig(t, `
cgroup = "runner"
target "db" {
  protocol = "tcp"
  address  = ["10.0.0.5:5432", "*:6443"]
}
`))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if c.Name != "default" || c.ProxyPort != defaultProxyPort || c.DataDir != defaultDataDir || c.LogFormat != "auto" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if len(c.Targets) != 1 || len(c.Targets[0].Addresses) != 2 || !c.Targets[0].Addresses[1].Any {
		t.Errorf("targets = %+v", c.Targets)
	}
}

// TestLoadConfigErrors: each mistake is reported at its line.
func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"missing cgroup", `proxy_port = 1`, `The argument "cgroup" is required`},
		{"bad port", "cgroup = \"r\"\nproxy_port = 70000\n", "not a TCP port"},
		{"bad address", "cgroup = \"r\"\ntarget \"db\" {\n  protocol = \"tcp\"\n  address = [\"10.0.0.5\"]\n}\n", "sluiced.hcl:4,13-25: Invalid target address; address \"10.0.0.5\" has no port"},
		{"unserved protocol", "cgroup = \"r\"\ntarget \"db\" {\n  protocol = \"smtp\"\n  address = [\"10.0.0.5:25\"]\n}\n", `protocol "smtp" is not served`},
		{"duplicate", "cgroup = \"r\"\ntarget \"a\" {\n  protocol = \"tcp\"\n  address = [\"10.0.0.5:1\"]\n}\ntarget \"a\" {\n  protocol = \"tcp\"\n  address = [\"10.0.0.6:1\"]\n}\n", "sluiced.hcl:8,13-27: Duplicate target"},
		{"bad log format", "cgroup = \"r\"\nlog {\n  format = \"xml\"\n}\n", "use auto, json or text"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, diags, _ := loadConfig(writeConfig(t, tc.body))
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
				t.Errorf("diagnostics %q, want one containing %q", diags.Error(), tc.want)
			}
		})
	}
}
