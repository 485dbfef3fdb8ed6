package daemon

import (
	"strings"
	"testing"
	"time"
)

func TestStoreBlock(t *testing.T) {
	for _, c := range []struct {
		name, block, err string
		check            func(*StoreSettings) bool
	}{
		{"defaults", `store { url = "s3://recs/fleet" }`, "", func(s *StoreSettings) bool {
			return s.URL == "s3://recs/fleet" && s.AccessKeyEnv == "AWS_ACCESS_KEY_ID" && s.SecretKeyEnv == "AWS_SECRET_ACCESS_KEY" && s.Retention == 0 && !s.Insecure
		}},
		{"all", `store {
  url = "s3://recs"
  endpoint = "127.0.0.1:9000"
  access_key_env = "S3_KEY"
  secret_key_env = "S3_SECRET"
  insecure = true
  retention = "7d"
}`, "", func(s *StoreSettings) bool {
			return s.Endpoint == "127.0.0.1:9000" && s.AccessKeyEnv == "S3_KEY" && s.SecretKeyEnv == "S3_SECRET" && s.Insecure && s.Retention == 7*24*time.Hour
		}},
		{"fleet", `store {
  url = "s3://recs"
  vm = "runner-7"
  fleet_key_file = "/run/secrets/fleet.key"
  checkpoint = "5s"
}`, "", func(s *StoreSettings) bool {
			return s.VM == "runner-7" && s.FleetKeyFile == "/run/secrets/fleet.key" && s.Checkpoint == 5*time.Second
		}},
		{"checkpoint default", `store { url = "s3://recs" }`, "", func(s *StoreSettings) bool { return s.Checkpoint == time.Minute && s.VM != "" }},
		{"checkpoint off", `store {
  url = "s3://recs"
  checkpoint = "0"
}`, "", func(s *StoreSettings) bool { return s.Checkpoint == 0 }},
		{"bad checkpoint", `store {
  url = "s3://recs"
  checkpoint = "10ms"
}`, "Invalid store checkpoint", nil},
		{"bad vm", `store {
  url = "s3://recs"
  vm = "a/b"
}`, "Invalid store vm", nil},
		{"no url", `store { endpoint = "x:1" }`, `"url" is required`, nil},
		{"not s3", `store { url = "https://recs" }`, "Invalid store url", nil},
		{"credential instead of a name", `store {
  url = "s3://recs"
  secret_key_env = "wJalr/XUtnFEMI+K7MDENG"
}`, "Invalid store secret_key_env", nil},
		{"bad retention", `store {
  url = "s3://recs"
  retention = "forever"
}`, "Invalid store retention", nil},
		{"insecure with a CA", `store {
  url = "s3://recs"
  insecure = true
  ca_file = "/etc/ca.pem"
}`, "Conflicting store settings", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, diags, _ := ParseConfig("sluiced.hcl", []byte("cgroup = \"system.slice/r.service\"\n"+c.block+"\n"))
			if c.err != "" {
				if !diags.HasErrors() || !strings.Contains(diags.Error(), c.err) {
					t.Fatalf("diagnostics = %v, want %q", diags, c.err)
				}
				return
			}
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if cfg.Store == nil || !c.check(cfg.Store) {
				t.Fatalf("store = %+v", cfg.Store)
			}
		})
	}
	cfg, diags, _ := ParseConfig("sluiced.hcl", []byte("cgroup = \"system.slice/r.service\"\n"))
	if diags.HasErrors() || cfg.Store != nil {
		t.Fatalf("no store block: %v, %+v", diags, cfg.Store)
	}
}

func TestVMName(t *testing.T) {
	for in, want := range map[string]string{"runner-1.example.com": "runner-1.example.com", "a b/c": "a_b_c", "": "vm", "x..y": "x__y"} {
		if got := vmName(in); got != want {
			t.Errorf("vmName(%q) = %q, want %q", in, got, want)
		}
	}
}
