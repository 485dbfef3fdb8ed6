package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/interceptor"
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
	src, err := os.ReadFile("../packaging/sluiced.hcl")
	if err != nil {
		t.Fatal(err)
	}
	_, diags, _ := loadConfig("../packaging/sluiced.hcl")
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

// TestSessionMetrics: a flow refused past max_sessions counts in
// sluice_sessions_refused_total{reason="max_sessions"} (exported as 0
// before the first), and the gauges read the proxy's open sessions and
// its cap.
func TestSessionMetrics(t *testing.T) {
	m := newMetrics(approve.NewBroker(approve.Options{}))
	p := &interceptor.Proxy{MaxSessions: 5}
	m.watchProxy(p)
	gather := func() map[string]float64 {
		t.Helper()
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			for _, s := range mf.GetMetric() {
				name := mf.GetName()
				for _, l := range s.GetLabel() {
					name += "," + l.GetName() + "=" + l.GetValue()
				}
				switch {
				case s.Counter != nil:
					out[name] = s.GetCounter().GetValue()
				case s.Gauge != nil:
					out[name] = s.GetGauge().GetValue()
				}
			}
		}
		return out
	}
	const refused = "sluice_sessions_refused_total,reason=max_sessions"
	if v, ok := gather()[refused]; !ok || v != 0 {
		t.Errorf("%s before any refusal = %v (exported %v), want 0", refused, v, ok)
	}
	m.flowEnd(interceptor.FlowEnd{Target: "pg", Protocol: "postgres", Outcome: interceptor.OutcomeTooMany})
	m.flowEnd(interceptor.FlowEnd{Outcome: interceptor.OutcomeTooMany})
	m.flowEnd(interceptor.FlowEnd{Target: "pg", Protocol: "postgres", Outcome: interceptor.OutcomeServed})
	got := gather()
	for name, want := range map[string]float64{
		refused:                  2,
		"sluice_sessions_active": 0,
		"sluice_sessions_max":    5,
		"sluice_flows_total,outcome=too_many_sessions,protocol=postgres,target=pg": 1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	p.MaxSessions = 0
	if v := gather()["sluice_sessions_max"]; v != interceptor.DefaultMaxSessions {
		t.Errorf("sluice_sessions_max without max_sessions = %v, want %d", v, interceptor.DefaultMaxSessions)
	}
}
