package decoder

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/tlsutil"
	"github.com/sluicehq/sluice/ruleset"
)

// TestUpstreamTLSCA: a target's upstream_ca is what the server's chain is
// verified against, for every protocol; one that cannot be read closes
// the flow rather than falling back to the system roots.
func TestUpstreamTLSCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "upstream.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	dest := netip.MustParseAddrPort("127.0.0.1:5432")
	flow := func(ca string) *Flow {
		return &Flow{Dest: dest, Target: &ruleset.Target{Name: "db", Protocol: ruleset.ProtoPostgres,
			UpstreamTLS: "verify-full", UpstreamCA: ca}}
	}
	cfg, attempt, required, err := UpstreamTLS(flow(caFile))
	if err != nil || !attempt || !required || cfg.RootCAs == nil || !cfg.RootCAs.Equal(ca.Pool()) {
		t.Errorf("with upstream_ca: %v attempt=%v required=%v roots=%v, want the CA's pool", err, attempt, required, cfg != nil && cfg.RootCAs != nil)
	}
	if cfg, _, _, err := UpstreamTLS(flow("")); err != nil || cfg.RootCAs != nil {
		t.Errorf("without upstream_ca: %v, want the system roots (nil RootCAs)", err)
	}
	if _, _, _, err := UpstreamTLS(flow(filepath.Join(dir, "missing.pem"))); err == nil || !strings.Contains(err.Error(), "read upstream_ca") {
		t.Errorf("a missing upstream_ca: %v, want an error", err)
	}
	os.WriteFile(caFile, []byte("not a certificate"), 0o600)
	if _, _, _, err := UpstreamTLS(flow(caFile)); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("an upstream_ca without a certificate: %v, want an error", err)
	}
}
