package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/testenv"
)

// sluiceCLI runs the sluice binary and returns its output and exit code.
func sluiceCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(filepath.Join(testenv.Binaries(t), "sluice"), args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("run sluice: %v", err)
	return "", 0
}

// readInstalled parses a written config the way sluiced does and returns
// its cgroups and discover root.
func readInstalled(t *testing.T, path string) ([]string, string) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read written config: %v", err)
	}
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("written config does not parse: %v\n%s", diags, src)
	}
	body := f.Body.(*hclsyntax.Body)
	var cgs []string
	if a := body.Attributes["cgroups"]; a != nil {
		v, _ := a.Expr.Value(nil)
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			cgs = append(cgs, e.AsString())
		}
	}
	root := ""
	for _, b := range body.Blocks {
		if b.Type == "discover" {
			v, _ := b.Body.Attributes["root"].Expr.Value(nil)
			root = v.AsString()
		}
	}
	return cgs, root
}

// TestInstallWritesConfig: against a cgroup tree shaped like a GitHub
// Actions runner host and like a GitLab runner host (under the test's own
// cgroup), `sluice install` names the runner it found, writes a config
// hooking exactly that runner's cgroup with a discover block, and a second
// run leaves the file byte for byte as it was.
func TestInstallWritesConfig(t *testing.T) {
	for _, tc := range []struct{ kind, unit string }{
		{"github-actions", "actions.runner.acme-api.runner1.service"},
		{"gitlab", "gitlab-runner.service"},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			cg := testenv.NewCgroup(t)
			runner := cg.Child(t, "system.slice/"+tc.unit)
			cg.Child(t, "system.slice/ssh.service")
			cg.Child(t, "system.slice/cron.service")
			root := cg.Rel + "/system.slice"
			cfg := filepath.Join(t.TempDir(), "etc", "sluiced.hcl")

			// --ssh off: this config's data_dir is the default one, where
			// the SSH host CA must not be created by a test.
			out, code := sluiceCLI(t, "install", "--containers", "off", "--ssh", "off", "--root", root, "--config", cfg)
			if code != 0 {
				t.Fatalf("sluice install exited %d:\n%s", code, out)
			}
			for _, want := range []string{"found 1 runner service(s)", tc.kind, tc.unit, runner.Rel, "wrote " + cfg, "systemctl enable --now sluiced"} {
				if !strings.Contains(out, want) {
					t.Errorf("install output lacks %q:\n%s", want, out)
				}
			}
			cgs, droot := readInstalled(t, cfg)
			if len(cgs) != 1 || cgs[0] != runner.Rel || droot != root {
				t.Errorf("written cgroups %q, discover root %q; want [%q] and %q", cgs, droot, runner.Rel, root)
			}
			first, _ := os.ReadFile(cfg)
			if !strings.Contains(string(first), `data_dir   = "/var/lib/sluice"`) || !strings.Contains(string(first), `api_socket = "/run/sluice/sluiced.sock"`) {
				t.Errorf("written config lacks the defaults:\n%s", first)
			}

			out, code = sluiceCLI(t, "install", "--containers", "off", "--ssh", "off", "--root", root, "--config", cfg)
			if code != 0 || !strings.Contains(out, "config "+cfg+" unchanged") {
				t.Errorf("second install exited %d:\n%s\nwant \"unchanged\"", code, out)
			}
			if again, _ := os.ReadFile(cfg); string(again) != string(first) {
				t.Errorf("second install changed the file:\n%s\nwas:\n%s", again, first)
			}
		})
	}
}

// TestInstallNoRunner: with no runner service under the root, install says
// so, writes nothing and exits non-zero.
func TestInstallNoRunner(t *testing.T) {
	cg := testenv.NewCgroup(t)
	cg.Child(t, "system.slice/ssh.service")
	cfg := filepath.Join(t.TempDir(), "sluiced.hcl")
	out, code := sluiceCLI(t, "install", "--containers", "off", "--ssh", "off", "--root", cg.Rel+"/system.slice", "--config", cfg)
	if code == 0 || !strings.Contains(out, "no CI runner service found under") || !strings.Contains(out, "Nothing was written") {
		t.Errorf("install without a runner exited %d:\n%s", code, out)
	}
	if _, err := os.Stat(cfg); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("install without a runner wrote %s (%v)", cfg, err)
	}
	out, code = sluiceCLI(t, "install", "--containers", "off", "--ssh", "off", "--root", cg.Rel+"/no.slice", "--config", cfg)
	if code == 0 || !strings.Contains(out, "does not exist") {
		t.Errorf("install with a missing root exited %d:\n%s", code, out)
	}
}

// TestInstallThenDiscover: sluiced started on the config install wrote
// intercepts the runner it found; a runner service that starts later (its
// cgroup created after the daemon) is hooked by discovery and its connects
// are intercepted too; when that runner's cgroup goes away its pins are
// cleaned up, and the other runner stays hooked.
func TestInstallThenDiscover(t *testing.T) {
	cg := testenv.NewCgroup(t)
	gh := cg.Child(t, "system.slice/actions.runner.acme-api.runner1.service")
	root := cg.Rel + "/system.slice"
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	// The system-wide known_hosts file ssh clients read, stood in for by
	// one of the test's: install trusts the daemon's SSH host CA there.
	knownHosts := filepath.Join(t.TempDir(), "ssh_known_hosts")
	d := testenv.StartDaemon(t, testenv.DaemonOptions{
		Rules: tcpRules("pg", pg.Addr()),
		BeforeStart: func(d *testenv.Daemon) {
			if out, code := sluiceCLI(t, "install", "--containers", "off", "--ssh-known-hosts", knownHosts, "--root", root, "--config", d.Config); code != 0 || !strings.Contains(out, "updated "+d.Config) {
				t.Fatalf("sluice install on the daemon's config exited %d:\n%s", code, out)
			}
		},
	})
	out, _ := sluiceCLI(t, "ssh-ca", "--config", d.Config)
	line, _, _ := strings.Cut(out, "\n") // then a hint on stderr
	if kh, _ := os.ReadFile(knownHosts); !strings.HasPrefix(line, "@cert-authority * ssh-ed25519 ") || !strings.Contains(string(kh), strings.TrimSpace(line)) {
		t.Errorf("install did not trust the daemon's SSH host CA (%q) in %s:\n%s", line, knownHosts, kh)
	}
	// The test's own settings survived the merge (else the daemon would
	// not answer on the test's socket at all).
	conf, _ := os.ReadFile(d.Config)
	if !strings.Contains(string(conf), fmt.Sprintf("proxy_port = %d", d.Port)) {
		t.Errorf("install lost the config's own settings:\n%s", conf)
	}
	q := pg.PsqlArgs("", 0, "select 1")
	if out, _, err := psqlIn(t, gh, 0, q); err != nil || out != "1" {
		t.Fatalf("psql in the GitHub runner's cgroup: %v: %q", err, out)
	}
	if n := flows(t, d); n != 1 {
		t.Fatalf("after psql in the runner cgroup the daemon counted %d flows, want 1", n)
	}
	hooks := 0
	for _, l := range d.Logs(t) {
		if l.Message() == "hooked cgroup" && l.String("cgroup") == gh.Rel {
			hooks++
		}
	}
	if hooks != 1 {
		t.Errorf("the runner cgroup was hooked %d times, want once (nothing may unhook and rehook it)", hooks)
	}

	// A GitLab runner registered after the daemon started.
	start := time.Now()
	gl := cg.Child(t, "system.slice/gitlab-runner.service")
	l := d.WaitLog(t, "runner cgroup hooked", func(l testenv.LogLine) bool { return l.String("cgroup") == gl.Rel })
	t.Logf("new runner cgroup hooked %v after it was created", time.Since(start).Round(time.Millisecond))
	if l.String("kind") != "gitlab" || l.String("source") != "discovered" {
		t.Errorf("hook log line = %v, want kind gitlab, source discovered", l)
	}
	if out, _, err := psqlIn(t, gl, 0, q); err != nil || out != "1" {
		t.Fatalf("psql in the new runner's cgroup: %v: %q", err, out)
	}
	if n := flows(t, d); n != 2 {
		t.Errorf("after psql in the new runner cgroup the daemon counted %d flows, want 2", n)
	}
	out, err := d.Sluice(t, "status", "--socket", d.Socket)
	if err != nil {
		t.Fatalf("sluice status: %v\n%s", err, out)
	}
	for _, want := range []string{"cgroup:      " + gh.Rel, "cgroup:      " + gl.Rel, "discovered)", "-> /" + gl.Rel} {
		if !strings.Contains(out, want) {
			t.Errorf("sluice status lacks %q:\n%s", want, out)
		}
	}

	// The GitLab runner goes away: its cgroup dies, its pins are removed.
	st, _ := d.Status()
	var glID uint64
	for _, c := range st.Cgroups {
		if c.Path == gl.Rel {
			glID = c.ID
		}
	}
	gl.Remove(t)
	pins := filepath.Join(interceptor.PinDir(d.Name), "cgroups", fmt.Sprint(glID))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(pins)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pins of the removed runner cgroup still at %s after 10s", pins)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, _ = d.Status()
	if len(st.Cgroups) != 1 || st.Cgroups[0].Path != gh.Rel {
		t.Errorf("hooked cgroups after the GitLab runner went away = %+v, want only %s", st.Cgroups, gh.Rel)
	}
	if out, _, err := psqlIn(t, gh, 0, q); err != nil || out != "1" || flows(t, d) != 3 {
		t.Errorf("psql in the remaining runner cgroup: %v: %q (flows %d, want 3)", err, out, flows(t, d))
	}
}
