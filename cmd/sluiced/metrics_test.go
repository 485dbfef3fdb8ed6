package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMetricsAddr(t *testing.T) {
	for _, c := range []struct {
		addr, wantErr string
	}{
		{"127.0.0.1:9464", ""},
		{"[::1]:9464", ""},
		{"0.0.0.0:9464", "Invalid metrics_addr"},
		{"10.0.0.7:9464", "Invalid metrics_addr"},
		{"localhost:9464", "Invalid metrics_addr"},
		{"127.0.0.1", "Invalid metrics_addr"},
	} {
		cfg, diags, _ := loadConfig(writeConfig(t, "cgroup = \"runner\"\nmetrics_addr = \""+c.addr+"\"\n"))
		switch {
		case c.wantErr == "" && diags.HasErrors():
			t.Errorf("metrics_addr %q: %s", c.addr, diags.Error())
		case c.wantErr == "" && cfg.MetricsAddr != c.addr:
			t.Errorf("metrics_addr %q: got %q", c.addr, cfg.MetricsAddr)
		case c.wantErr != "" && !strings.Contains(diags.Error(), c.wantErr):
			t.Errorf("metrics_addr %q: diagnostics %q, want %q", c.addr, diags.Error(), c.wantErr)
		}
	}
}

// TestPackagedConfig: the config the .deb ships names no cgroup yet, so
// sluiced refuses it and says to run `sluice install`; once install has
// added the runners' cgroups it parses, serves metrics on loopback and
// uses the embedded default ruleset.
func TestPackagedConfig(t *testing.T) {
	src, err := os.ReadFile("../../packaging/sluiced.hcl")
	if err != nil {
		t.Fatal(err)
	}
	_, diags, _ := loadConfig("../../packaging/sluiced.hcl")
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "run `sluice install`") {
		t.Fatalf("packaged config before install: %v, want a refusal naming sluice install", diags)
	}
	installed := filepath.Join(t.TempDir(), "sluiced.hcl")
	os.WriteFile(installed, append(src, []byte("\ncgroups = [\"system.slice/actions.runner.acme.r1.service\"]\n")...), 0o600)
	cfg, diags, _ := loadConfig(installed)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if len(cfg.Cgroups) != 1 || cfg.RulesDir != "" || cfg.MetricsAddr != "127.0.0.1:9464" ||
		cfg.DataDir != "/var/lib/sluice" || cfg.APISocket != "/run/sluice/sluiced.sock" || cfg.LogFormat != "json" {
		t.Errorf("packaged config = %+v", cfg)
	}
}
