package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/interceptor"
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
`))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if c.Name != "default" || c.ProxyPort != defaultProxyPort || c.DataDir != defaultDataDir || c.LogFormat != "auto" {
		t.Errorf("defaults not applied: %+v", c)
	}
	if c.RulesDir != "" || c.RulesKey != nil {
		t.Errorf("rules defaults = %q %v, want the embedded default ruleset unsigned", c.RulesDir, c.RulesKey)
	}
}

// TestLoadConfigErrors: each mistake is reported at its line.
func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"missing cgroup", `proxy_port = 1`, `Nothing to hook`},
		{"root cgroup", "cgroups = [\"/\"]\n", "Invalid cgroup"},
		{"bad discover interval", "discover {\n  every = \"soon\"\n}\n", "Invalid discover every"},
		{"max_sessions zero or less", "cgroup = \"r\"\nmax_sessions = -1\n", "Invalid max_sessions"},
		{"bad port", "cgroup = \"r\"\nproxy_port = 70000\n", "not a TCP port"},
		{"target in config", "cgroup = \"r\"\ntarget \"db\" {\n  protocol = \"tcp\"\n  address = [\"10.0.0.5:1\"]\n}\n", "sluiced.hcl:2,1-12: Targets belong in the ruleset"},
		{"unknown attribute", "cgroup = \"r\"\nproxy_prot = 1\n", `Unsupported argument`},
		{"missing key file", "cgroup = \"r\"\nrules_public_key = \"/nonexistent/key.pub\"\n", "Invalid rules_public_key"},
		{"bad log format", "cgroup = \"r\"\nlog {\n  format = \"xml\"\n}\n", "use auto, json or text"},
		{"containers without cgroup", "cgroup = \"r\"\ncontainers {\n}\n", `The argument "cgroup" is required`},
		{"containers in the runner's cgroup", "cgroup = \"r\"\ncontainers {\n  cgroup = \"r/docker\"\n}\n", "are nested"},
		{"containers at the root", "cgroup = \"r\"\ncontainers {\n  cgroup = \"/\"\n}\n", "Invalid containers cgroup"},
		{"container address on loopback", "cgroup = \"r\"\ncontainers {\n  cgroup = \"c\"\n  address_ipv4 = \"127.0.0.9\"\n}\n", "a container has loopback of its own"},
		{"container address of the wrong family", "cgroup = \"r\"\ncontainers {\n  cgroup = \"c\"\n  address_ipv6 = \"10.0.0.1\"\n}\n", "is not an IPv6 address"},
		{"no container IPv4 address", "cgroup = \"r\"\ncontainers {\n  cgroup = \"c\"\n  address_ipv4 = \"none\"\n}\n", "need an IPv4 address"},
		{"runner outside the scope", "cgroup = \"a/r\"\nscope = \"b\"\n", "Invalid scope"},
		{"scope is the runner", "cgroup = \"a\"\nscope = \"a\"\n", "Invalid scope"},
		{"containers outside the scope", "cgroup = \"a/r\"\nscope = \"a\"\ncontainers {\n  cgroup = \"c\"\n}\n", "is not below scope"},
		{"bad outside", "cgroup = \"r\"\ncontainers {\n  cgroup = \"c\"\n  outside = \"ignore\"\n}\n", "use kill"},
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

// TestLoadConfigContainers: a containers block hooks its cgroup beside the
// runner's, with the default addresses, Docker socket and kill; IPv6 can
// be turned off and outside set to alert.
func TestLoadConfigContainers(t *testing.T) {
	c, diags, _ := loadConfig(writeConfig(t, "cgroup = \"r\"\ncontainers {\n  cgroup = \"/sluice-containers/\"\n}\n"))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	cc := c.Containers
	if cc == nil || cc.Cgroup != "sluice-containers" || cc.DockerSocket != DefaultDockerSocket || !cc.Kill ||
		cc.Addr4 != interceptor.DefaultContainerAddr4 || cc.Addr6 != interceptor.DefaultContainerAddr6 {
		t.Errorf("containers = %+v; want the defaults", cc)
	}
	if len(c.Cgroups) != 2 || c.Cgroups[1] != "sluice-containers" {
		t.Errorf("hooked cgroups %q; want the runner's and the containers'", c.Cgroups)
	}
	c, diags, _ = loadConfig(writeConfig(t, "cgroup = \"r\"\ncontainers {\n  cgroup = \"c\"\n  address_ipv6 = \"none\"\n  docker_socket = \"\"\n  outside = \"alert\"\n}\n"))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if cc := c.Containers; cc.Addr6.IsValid() || cc.Kill || cc.DockerSocket != "" {
		t.Errorf("containers = %+v; want no IPv6 address, no Docker, alert only", cc)
	}
}

// TestLoadConfigCgroups: cgroup and cgroups combine without duplicates, and
// a discover block alone is enough.
func TestLoadConfigCgroups(t *testing.T) {
	c, diags, _ := loadConfig(writeConfig(t, `
cgroup  = "/system.slice/a.service"
cgroups = ["system.slice/b.service", "system.slice/a.service"]
`))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if got := strings.Join(c.Cgroups, ","); got != "system.slice/a.service,system.slice/b.service" || c.Discover != nil {
		t.Errorf("cgroups = %q, discover %+v; want a then b and no discovery", got, c.Discover)
	}
	c, diags, _ = loadConfig(writeConfig(t, "discover {}\n"))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if c.Discover == nil || c.Discover.Root != "system.slice" || c.Discover.Every != 30*time.Second {
		t.Errorf("discover defaults = %+v, want system.slice every 30s", c.Discover)
	}
}

// TestLoadConfigMaxSessions: unset gives the default cap (which must admit
// bench/suite.sh's 1,000 idle sessions); a value in range is kept.
func TestLoadConfigMaxSessions(t *testing.T) {
	c, diags, _ := loadConfig(writeConfig(t, "cgroup = \"runner\"\n"))
	if diags.HasErrors() || c.MaxSessions != interceptor.DefaultMaxSessions || c.MaxSessions < 1000 {
		t.Errorf("max_sessions unset: %d (%v), want the default %d (at least 1000)", c.MaxSessions, diags, interceptor.DefaultMaxSessions)
	}
	c, diags, _ = loadConfig(writeConfig(t, "cgroup = \"runner\"\nmax_sessions = 5\n"))
	if diags.HasErrors() || c.MaxSessions != 5 {
		t.Errorf("max_sessions = 5: got %d (%v)", c.MaxSessions, diags)
	}
}

// TestInContainersCgroup: only a cgroup below the containers block's is a
// container's; a job's own cgroup named like a container id is not.
func TestInContainersCgroup(t *testing.T) {
	id := strings.Repeat("ab", 32)
	cfg := &Config{Containers: &Containers{Cgroup: "sluice-containers"}}
	for path, want := range map[string]bool{
		"/sluice-containers/" + id:                     true,
		"/sluice-containers/" + id + "/init.scope":     true,
		"/system.slice/actions.runner.x.service/" + id: false,
		"/sluice-containers-evil/" + id:                false,
		"/sluice-containers":                           false,
	} {
		if got := inContainersCgroup(cfg, path); got != want {
			t.Errorf("inContainersCgroup(%q) = %v, want %v", path, got, want)
		}
	}
	if inContainersCgroup(&Config{}, "/sluice-containers/"+id) {
		t.Errorf("without a containers block nothing is a container")
	}
}
