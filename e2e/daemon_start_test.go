package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// runSluiced runs the sluiced binary with args until it exits (within
// 20s) and returns its exit code, stdout and stderr. A daemon that does
// not exit in time is killed and fails the test.
func runSluiced(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testenv.Binaries(t), "sluiced"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sluiced %s did not exit within 20s:\n%s", strings.Join(args, " "), stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run sluiced: %v", err)
	}
	return code, stdout.String(), stderr.String()
}

// TestDaemonStartBadInput: sluiced started with each class of bad input
// exits 2 (a configuration error: the unit's RestartPreventExitStatus=2
// keeps systemd from restarting it every second), and the first line of
// its stderr says what is wrong and how to fix it, as plain text although
// the config asks for JSON logs. Each case fails before any privileged
// step, so it runs as any user; a case that got further is stopped, and
// any pins it made are removed.
func TestDaemonStartBadInput(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	const goodRule = "default {\n  action = \"deny\"\n}\n"
	cases := []struct {
		name string
		// body is the config after the common settings; "" with noConfig
		// starts sluiced with a config file that does not exist.
		body     string
		noConfig bool
		// rules are the files of rules_dir (nil: no rules_dir).
		rules map[string]string
		// want are words of the fix on the first line of stderr.
		want []string
	}{
		{name: "missing config", noConfig: true, want: []string{"cannot read config", "sluice install", "--config"}},
		{name: "config typo", body: "proxy_prot = 1\n", want: []string{"proxy_prot", `Did you mean "proxy_port"`}},
		{name: "invalid value", body: "proxy_port = 70000\n", want: []string{"proxy_port 70000", "use a port from 1 to 65535"}},
		{name: "nothing to hook", body: "cgroup = \"\"\n", want: []string{"nothing to hook", "sluice install"}},
		{name: "invalid ruleset", rules: map[string]string{"rules.hcl": "target \"x\" {\n  protocol =\n}\n"},
			want: []string{"ruleset", "is invalid", "correct the rule files", "sluice rules check"}},
		{name: "empty rules_dir", rules: map[string]string{}, want: []string{"rules_dir", "holds no *.hcl file", "put a ruleset there", "remove rules_dir"}},
		{name: "unsigned ruleset with rules_public_key", body: "rules_public_key = %PUB%\n", rules: map[string]string{"rules.hcl": goodRule},
			want: []string{"is not signed", "sluice rules sign", "remove rules_public_key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			name := testenv.RandName("t")
			t.Cleanup(func() {
				// Only if the daemon got as far as the kernel, which no
				// case may.
				if _, err := os.Stat(interceptor.PinDir(name)); err == nil {
					t.Errorf("sluiced made pins in %s", interceptor.PinDir(name))
					exec.Command(filepath.Join(testenv.Binaries(t), "sluice"), "uninstall", "--name", name).Run()
				}
			})
			pubPath := filepath.Join(dir, "rules.pub")
			if err := os.WriteFile(pubPath, ruleset.MarshalPublicKey(pub), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := fmt.Sprintf("name = %q\ndata_dir = %q\napi_socket = %q\nlog {\n  format = \"json\"\n}\n",
				name, filepath.Join(dir, "data"), filepath.Join(dir, "api.sock"))
			if !strings.Contains(tc.body, "cgroup") {
				// A cgroup the test never makes: nothing could be hooked.
				cfg += fmt.Sprintf("cgroup = %q\n", testenv.RandName("sluice-test-never-"))
			}
			cfg += strings.ReplaceAll(tc.body, "%PUB%", fmt.Sprintf("%q", pubPath))
			if tc.rules != nil {
				rulesDir := filepath.Join(dir, "rules.d")
				if err := os.Mkdir(rulesDir, 0o700); err != nil {
					t.Fatal(err)
				}
				for n, c := range tc.rules {
					if err := os.WriteFile(filepath.Join(rulesDir, n), []byte(c), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				cfg += fmt.Sprintf("rules_dir = %q\n", rulesDir)
			}
			path := filepath.Join(dir, "sluiced.hcl")
			if !tc.noConfig {
				if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
			}

			code, stdout, stderr := runSluiced(t, "--config", path)
			if code != 2 {
				t.Errorf("exit code %d, want 2 (configuration error)", code)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			if !strings.HasPrefix(first, "sluiced: ") {
				t.Errorf("first line %q does not start with \"sluiced: \"", first)
			}
			for _, w := range tc.want {
				if !strings.Contains(first, w) {
					t.Errorf("first line of stderr lacks %q", w)
				}
			}
			for _, l := range strings.Split(stderr, "\n") {
				if l = strings.TrimSpace(l); strings.HasPrefix(l, "{") || json.Valid([]byte(l)) && l != "" {
					t.Errorf("stderr has a JSON line: %s", l)
				}
			}
			if stdout != "" {
				t.Errorf("stdout is not empty: %q", stdout)
			}
			if t.Failed() {
				t.Logf("stderr:\n%s", stderr)
			}
		})
	}
}

// TestDaemonFlags: --version and --help print to stdout and exit 0, an
// unknown flag exits 2 naming --help; none of them starts the daemon.
func TestDaemonFlags(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--version"}, 0, "sluiced ", ""},
		{[]string{"-h"}, 0, "usage: sluiced", ""},
		{[]string{"--help"}, 0, "usage: sluiced", ""},
		{[]string{"--no-such-flag"}, 2, "", "sluiced: flag provided but not defined: -no-such-flag: run sluiced --help"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runSluiced(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !strings.HasPrefix(stdout, tc.stdout) || tc.stdout == "" && stdout != "" {
				t.Errorf("stdout %q, want it to start with %q", stdout, tc.stdout)
			}
			if !strings.HasPrefix(stderr, tc.stderr) || tc.stderr == "" && stderr != "" {
				t.Errorf("stderr %q, want it to start with %q", stderr, tc.stderr)
			}
		})
	}
}

// TestDaemonStartMissingCgroup: a daemon whose config names a cgroup that
// does not exist starts, hooks the one that does, and says loudly what it
// could not hook: status lists the missing cgroup under unhooked with a
// reason, the log has an error line naming it, and
// sluice_cgroups_unhooked is 1. Once the cgroup appears it is hooked and
// the list empties. Needs root: it makes a parent cgroup of its own and
// both cgroups below it, and hooks only those.
func TestDaemonStartMissingCgroup(t *testing.T) {
	parent := testenv.NewCgroup(t)
	present := parent.Child(t, "runner-a")
	missing := parent.Rel + "/runner-b"
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t, "127.0.0.1"))
	d := testenv.StartDaemon(t, testenv.DaemonOptions{
		Body: fmt.Sprintf("cgroups = [%q, %q]\nmetrics_addr = %q\n", present.Rel, missing, metricsAddr),
	})
	metricsURL := "http://" + metricsAddr + "/metrics"

	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Cgroups) != 1 || st.Cgroups[0].Path != present.Rel {
		t.Errorf("hooked cgroups %+v, want only %s", st.Cgroups, present.Rel)
	}
	if len(st.Unhooked) != 1 {
		t.Fatalf("unhooked %+v, want %s", st.Unhooked, missing)
	}
	u := st.Unhooked[0]
	if u.Path != missing || u.Source != "config" || !strings.Contains(u.Reason, "does not exist") || u.Since.IsZero() {
		t.Errorf("unhooked %+v, want %s from config, a reason saying it does not exist, and since when", u, missing)
	}
	var line testenv.LogLine
	testenv.WaitFor(t, 5*time.Second, "an error log line naming the missing cgroup", func() bool {
		for _, l := range d.Logs(t) {
			if l.String("cgroup") == missing && l.String("@level") == "error" {
				line = l
				return true
			}
		}
		return false
	})
	if msg := line.Message(); !strings.Contains(msg, "start the runner service") || !strings.Contains(msg, "correct cgroup") {
		t.Errorf("error line %q does not say how to fix it", msg)
	}
	if v, ok := value(scrape(t, metricsURL), "sluice_cgroups_unhooked", nil); !ok || v != 1 {
		t.Errorf("sluice_cgroups_unhooked = %v (present %v), want 1", v, ok)
	}

	// The runner service starts: its cgroup appears, below the test's
	// own parent.
	parent.Child(t, "runner-b")
	testenv.WaitFor(t, 10*time.Second, "the new cgroup to be hooked and unhooked to empty", func() bool {
		st, err := d.Status()
		return err == nil && len(st.Unhooked) == 0 && len(st.Cgroups) == 2
	})
	st, _ = d.Status()
	if st.Cgroups[0].Path != present.Rel || st.Cgroups[1].Path != missing {
		t.Errorf("hooked cgroups %+v, want %s and %s", st.Cgroups, present.Rel, missing)
	}
	if v, ok := value(scrape(t, metricsURL), "sluice_cgroups_unhooked", nil); !ok || v != 0 {
		t.Errorf("sluice_cgroups_unhooked = %v (present %v), want 0", v, ok)
	}
}
