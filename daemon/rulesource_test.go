package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/internal/rulesource"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

func rulesKeyFile(t *testing.T) (string, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rules.pub")
	if err := os.WriteFile(p, ruleset.MarshalPublicKey(pub), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, priv
}

func TestRulesSourceConfig(t *testing.T) {
	pub, _ := rulesKeyFile(t)
	for _, c := range []struct{ name, src, want string }{
		{"ok nats", "rules_source = \"nats://127.0.0.1:4222/RULES/fleet\"\nrules_public_key = \"" + pub + "\"\nrules_pull {\n every = \"1s\"\n}\n", ""},
		{"ok https", "rules_source = \"https://rules.example/fleet.json\"\nrules_public_key = \"" + pub + "\"\n", ""},
		{"ok s3", "rules_source = \"s3://rules/fleet.json\"\nrules_public_key = \"" + pub + "\"\nrules_pull {\n endpoint = \"127.0.0.1:9000\"\n access_key_env = \"K\"\n}\n", ""},
		{"no key", "rules_source = \"nats://127.0.0.1:4222/RULES/fleet\"\n", "rules_source needs rules_public_key"},
		{"with rules_dir", "rules_source = \"https://r.example/b.json\"\nrules_dir = \"/etc/sluice/rules.d\"\nrules_public_key = \"" + pub + "\"\n", "Both rules_source and rules_dir"},
		{"http", "rules_source = \"http://r.example/b.json\"\nrules_public_key = \"" + pub + "\"\n", "plain http is not accepted"},
		{"nats without object", "rules_source = \"nats://127.0.0.1:4222/RULES\"\nrules_public_key = \"" + pub + "\"\n", "nats://HOST:PORT/BUCKET/NAME"},
		{"every too short", "rules_source = \"https://r.example/b.json\"\nrules_public_key = \"" + pub + "\"\nrules_pull {\n every = \"10ms\"\n}\n", "at least \"1s\""},
		{"secret as env name", "rules_source = \"s3://r/b.json\"\nrules_public_key = \"" + pub + "\"\nrules_pull {\n secret_key_env = \"abc/def\"\n}\n", "Invalid rules_pull secret_key_env"},
		{"pull without source", "rules_pull {\n every = \"1s\"\n}\n", "rules_pull without rules_source"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, diags, _ := ParseConfig("sluiced.hcl", []byte("cgroup = \"r\"\n"+c.src))
			if c.want == "" {
				if diags.HasErrors() {
					t.Fatalf("unexpected errors: %v", diags)
				}
				if cfg.RulesSource == nil || cfg.RulesSource.Every == 0 {
					t.Fatalf("RulesSource = %+v", cfg.RulesSource)
				}
				return
			}
			if !diags.HasErrors() || !strings.Contains(diags.Error(), c.want) {
				t.Fatalf("diagnostics %v, want one with %q", diags, c.want)
			}
		})
	}
}

// TestPullerStart: the ruleset a daemon starts with, from a real NATS
// object store, the last good bundle on disk, or the embedded default;
// tampered, rolled-back and invalid bundles are refused with the reason in
// status.
func TestPullerStart(t *testing.T) {
	n := testenv.StartNATS(t)
	pubFile, priv := rulesKeyFile(t)
	url := n.URL + "/RULES/fleet"
	cfg, diags, _ := ParseConfig("sluiced.hcl", []byte("cgroup = \"r\"\nrules_source = \""+url+"\"\nrules_public_key = \""+pubFile+"\"\ndata_dir = \""+t.TempDir()+"\"\n"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	start := func() (*rules, *ruleset.Ruleset, string) {
		t.Helper()
		rm := &rules{cfg: cfg, log: hclog.NewNullLogger()}
		rs, source, err := rm.initial()
		if err != nil {
			t.Fatal(err)
		}
		rs, source = rm.pull.atStart(context.Background(), rs, source)
		rm.store = ruleset.NewStore(rs, source)
		t.Cleanup(func() { rm.pull.src.Close() })
		return rm, rs, source
	}
	publish := func(version int64, files map[string][]byte, tamper func(*rulesource.Bundle)) {
		t.Helper()
		b := rulesource.New(files, version)
		b.Sign(priv)
		if tamper != nil {
			tamper(b)
		}
		data, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := rulesource.Publish(context.Background(), url, rulesource.Options{}, data); err != nil {
			t.Fatal(err)
		}
	}
	good := map[string][]byte{"main.hcl": []byte("mode = \"monitor\"\n")}

	// Nothing published: the embedded default, and status says so.
	rm, _, source := start()
	if st := rm.pull.status(); st.From != "default" || st.Version != 0 || !strings.Contains(source, "embedded default") || !strings.Contains(st.LastError, "publish one") {
		t.Fatalf("never had a bundle: source %q, status %+v", source, st)
	}

	// Published: applied at start and kept on disk.
	publish(100, good, nil)
	rm, rs, source := start()
	if st := rm.pull.status(); st.From != "source" || st.Version != 100 || rs.Mode() != ruleset.Monitor || !strings.Contains(source, "version 100") {
		t.Fatalf("after publish: source %q, mode %v, status %+v", source, rs.Mode(), st)
	}

	// A tampered bundle (file changed after signing) is refused; the
	// last good one from disk stays.
	publish(200, good, func(b *rulesource.Bundle) { b.Files["main.hcl"] = []byte("mode = \"enforce\"\n") })
	rm, rs, _ = start()
	st := rm.pull.status()
	if st.From != "disk" || st.Version != 100 || st.Refused != 200 || !strings.Contains(st.LastError, "signature does not verify") || rs.Mode() != ruleset.Monitor {
		t.Fatalf("tampered: mode %v, status %+v", rs.Mode(), st)
	}

	// An older bundle, validly signed, is a rollback.
	publish(50, good, nil)
	rm, _, _ = start()
	if st := rm.pull.status(); st.Version != 100 || !strings.Contains(st.LastError, "older than the version already applied") {
		t.Fatalf("rollback: status %+v", st)
	}

	// A signed bundle whose ruleset is invalid is refused.
	publish(300, map[string][]byte{"main.hcl": []byte("mode = \"sideways\"\n")}, nil)
	rm, _, _ = start()
	if st := rm.pull.status(); st.Version != 100 || st.Refused != 300 || !strings.Contains(st.LastError, "bundle-300/main.hcl") {
		t.Fatalf("invalid ruleset: status %+v", st)
	}

	// The source unreachable: the last good bundle from disk.
	n.Stop(t)
	rm, rs, source = start()
	if st := rm.pull.status(); st.From != "disk" || st.Version != 100 || st.LastError == "" || rs.Mode() != ruleset.Monitor || !strings.Contains(source, "last good bundle") {
		t.Fatalf("unreachable: source %q, status %+v", source, st)
	}
}
