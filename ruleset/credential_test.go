package ruleset

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// TestCredentialTargets: credential blocks are accepted on the targets
// whose decoders inject them (postgres, mysql), and granted there as on
// any other; the other protocols get one diagnostic at the block, saying
// which protocols inject.
func TestCredentialTargets(t *testing.T) {
	src := func(protocol, port string) string {
		return fmt.Sprintf(`target "db" {
  protocol = %q
  address  = ["10.0.0.5:%s"]
  credential "ci" {
    user         = "ci_user"
    password_env = "DB_CI_PASSWORD"
    policies     = ["*"]
  }
}
policy "p" {
  targets = ["db"]
  credential "ci" {}
}
`, protocol, port)
	}
	for _, tc := range []struct{ protocol, port string }{{ProtoPostgres, "5432"}, {ProtoMySQL, "3306"}} {
		t.Run(tc.protocol, func(t *testing.T) {
			rs := mustParse(t, map[string]string{"c.hcl": src(tc.protocol, tc.port)})
			cr := rs.Target("db").Credential("ci")
			if cr == nil || cr.User != "ci_user" || cr.Source.Env != "DB_CI_PASSWORD" {
				t.Fatalf("credential: %+v", cr)
			}
			m := rs.Match(Flow{Identity: Identity{Level: LevelOIDC},
				Target: Endpoint{Name: "db", Protocol: tc.protocol, Addr: netip.MustParseAddrPort("10.0.0.5:" + tc.port)}})
			g, err := m.Grant()
			if err != nil || g == nil || g.Credential != cr || g.Rule != "p/credential/ci" {
				t.Fatalf("Grant: %+v %v", g, err)
			}
			// Without a verified identity the flow is refused.
			m = rs.Match(Flow{Target: Endpoint{Name: "db", Protocol: tc.protocol, Addr: netip.MustParseAddrPort("10.0.0.5:" + tc.port)}})
			if _, err := m.Grant(); err == nil {
				t.Fatal("a flow without identity was granted a credential")
			}
		})
	}
	for _, tc := range []struct{ protocol, port string }{{ProtoSSH, "22"}, {ProtoK8s, "6443"}, {ProtoTCP, "9000"}} {
		t.Run(tc.protocol, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"c.hcl": []byte(src(tc.protocol, tc.port))})
			if len(diags) != 1 || !diags.HasErrors() {
				t.Fatalf("got %d diagnostics, want 1 error: %v", len(diags), diags)
			}
			d := diags[0]
			wantDetail := "Credential injection is implemented for postgres and mysql targets; " + tc.protocol + " targets authenticate with the client's own credentials."
			if d.Summary != "Credential injection not supported" || d.Detail != wantDetail || d.Subject == nil ||
				d.Subject.Filename != "c.hcl" || d.Subject.Start.Line != 4 || d.Subject.Start.Column != 3 {
				t.Errorf("got %q %q at %v, want %q at c.hcl:4:3", d.Summary, d.Detail, d.Subject, wantDetail)
			}
			if !strings.Contains(d.Detail, tc.protocol) {
				t.Errorf("the detail does not name the protocol: %q", d.Detail)
			}
		})
	}
}
