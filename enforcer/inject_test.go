package enforcer

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/ruleset"
)

func injectionRuleset(t *testing.T, mode string) *ruleset.Ruleset {
	t.Helper()
	rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(`
mode = "` + mode + `"
target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user         = "app"
    password_env = "APP_PW"
    policies     = ["ci"]
  }
}
policy "ci" {
  targets = ["db"]
  credential "app" { when = identity.ref == "refs/heads/main" }
}
`)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return rs
}

func flow(level, ref string) ruleset.Flow {
	return ruleset.Flow{Identity: ruleset.Identity{Level: level, Claims: map[string]string{"ref": ref}},
		Target: ruleset.Endpoint{Name: "db", Protocol: "postgres"}}
}

func TestInjection(t *testing.T) {
	store := credential.NewStore()
	store.LookupEnv = func(string) (string, bool) { return "pw", true }
	for _, tc := range []struct {
		name, mode, level, ref string
		want                   string // credential user, "refused" or "self"
	}{
		{"granted", "enforce", ruleset.LevelOIDC, "refs/heads/main", "app"},
		{"other ref", "enforce", ruleset.LevelOIDC, "refs/heads/dev", "refused"},
		{"unverified", "enforce", ruleset.LevelUnverified, "refs/heads/main", "refused"},
		{"monitor lets the client authenticate itself", "monitor", ruleset.LevelUnverified, "", "self"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := injectionRuleset(t, tc.mode).Match(flow(tc.level, tc.ref))
			s := NewSession(context.Background(), m, nil, 0, hclog.NewNullLogger())
			s.Secrets = store
			inj, err := s.Injection()
			got := "self"
			switch {
			case err != nil:
				var ge *ruleset.GrantError
				if !errors.As(err, &ge) {
					t.Fatalf("error %v is not a GrantError", err)
				}
				got = "refused"
			case inj != nil:
				got = inj.User
				sec, err := inj.Secret(context.Background())
				if err != nil || string(sec.Bytes()) != "pw" {
					t.Fatalf("secret: %v", err)
				}
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	// A daemon without a Store refuses a granted flow rather than letting
	// the client authenticate itself.
	s := NewSession(context.Background(), injectionRuleset(t, "enforce").Match(flow(ruleset.LevelOIDC, "refs/heads/main")), nil, 0, hclog.NewNullLogger())
	if _, err := s.Injection(); !errors.Is(err, ErrNoSecrets) {
		t.Fatalf("no store: got %v", err)
	}
}
