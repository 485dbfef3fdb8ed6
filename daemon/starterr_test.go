package daemon

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/ruleset"
)

// TestExitCode: configuration errors exit 2, whatever wraps them; a
// machine that cannot run sluiced exits 2; everything else exits 1.
func TestExitCode(t *testing.T) {
	cfgErr := configError(nil, "fix it", "bad setting")
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"none", nil, ExitOK},
		{"unclassified", errors.New("load programs: out of memory"), ExitRuntime},
		{"config", cfgErr, ExitConfig},
		{"config wrapped", fmt.Errorf("start: %w", cfgErr), ExitConfig},
		{"runtime", RuntimeError(errors.New("in use"), "stop it", "proxy_port 1 is in use"), ExitRuntime},
		{"probe", &interceptor.ProbeError{Missing: []string{"kernel too old: 4.19, need 5.15 or newer"}}, ExitConfig},
		{"probe wrapped", fmt.Errorf("attach: %w", &interceptor.ProbeError{Missing: []string{"x"}}), ExitConfig},
		{"listen in use", listenError(fmt.Errorf("listen: %w", os.NewSyscallError("bind", syscall.EADDRINUSE)), "metrics_addr", "free it", "fix it"), ExitRuntime},
		{"listen elsewhere", listenError(errors.New("listen: cannot assign requested address"), "metrics_addr", "free it", "fix it"), ExitConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ExitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

// TestStartErrors: each class of bad input at start is a configuration
// error whose first line names what is wrong and how to fix it, printed
// as plain text (no JSON), with detail below.
func TestStartErrors(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	const badRule = "target \"x\" {\n  protocol =\n}\n"
	const goodRule = "default {\n  action = \"deny\"\n}\n"

	cases := []struct {
		name string
		// start returns the error sluiced would stop with, given a
		// scratch directory.
		start func(t *testing.T, dir string) error
		// want are words the first line must hold; detail, words of the
		// lines after it.
		want, detail []string
	}{
		{"missing config", func(t *testing.T, dir string) error {
			_, err := os.ReadFile(filepath.Join(dir, "nope.hcl"))
			return ConfigReadError(filepath.Join(dir, "nope.hcl"), err)
		}, []string{"cannot read config", "no such file", "sluice install", "--config"}, nil},
		{"config typo", func(t *testing.T, dir string) error {
			return configFileError(t, dir, "cgroup = \"r\"\nproxy_prot = 1\n")
		}, []string{"sluiced.hcl:2", "proxy_prot", `Did you mean "proxy_port"`}, []string{"proxy_prot = 1"}},
		{"invalid value", func(t *testing.T, dir string) error {
			return configFileError(t, dir, "cgroup = \"r\"\nproxy_port = 70000\n")
		}, []string{"sluiced.hcl:2", "proxy_port 70000", "1 to 65535"}, []string{"proxy_port = 70000"}},
		{"two errors", func(t *testing.T, dir string) error {
			return configFileError(t, dir, "cgroup = \"r\"\nproxy_port = 70000\nmax_sessions = -1\n")
		}, []string{"proxy_port", "1 more error below"}, []string{"max_sessions = -1"}},
		{"invalid ruleset", func(t *testing.T, dir string) error {
			return initial(t, dir, map[string]string{"rules.hcl": badRule}, nil, nil)
		}, []string{"ruleset", "is invalid (1 error below)", "sluice rules check"}, []string{"rules.hcl line 2", "protocol ="}},
		{"empty rules_dir", func(t *testing.T, dir string) error {
			return initial(t, dir, map[string]string{"README": "not a rule file"}, nil, nil)
		}, []string{"rules_dir", "holds no *.hcl file", "put a ruleset there", "remove rules_dir from"}, nil},
		{"missing rules_dir", func(t *testing.T, dir string) error {
			return initial(t, dir, nil, nil, nil)
		}, []string{"rules_dir", "does not exist", "remove rules_dir from"}, nil},
		{"unsigned ruleset with a key", func(t *testing.T, dir string) error {
			return initial(t, dir, map[string]string{"rules.hcl": goodRule}, pub, nil)
		}, []string{"is not signed", "rules_public_key", "sluice rules sign"}, nil},
		{"ruleset signed with another key", func(t *testing.T, dir string) error {
			sig := ruleset.SignFiles(map[string][]byte{"rules.hcl": []byte(goodRule)}, otherPriv)
			return initial(t, dir, map[string]string{"rules.hcl": goodRule}, pub, sig)
		}, []string{"does not verify", "rules_public_key", "sign"}, nil},
		{"key without rules_dir", func(t *testing.T, dir string) error {
			r := &rules{cfg: &Config{Path: "/etc/sluice/sluiced.hcl", DataDir: dir, RulesKey: pub}, log: hclog.NewNullLogger()}
			_, _, err := r.initial()
			return err
		}, []string{"no rules_dir", "set rules_dir", "remove rules_public_key"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.start(t, t.TempDir())
			if err == nil {
				t.Fatal("no error")
			}
			if got := ExitCode(err); got != ExitConfig {
				t.Errorf("exit code %d, want %d", got, ExitConfig)
			}
			var buf bytes.Buffer
			WriteStartError(&buf, err, false)
			out := buf.String()
			lines := strings.Split(out, "\n")
			if !strings.HasPrefix(lines[0], "sluiced: ") {
				t.Errorf("first line %q does not start with \"sluiced: \"", lines[0])
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("first line lacks %q:\n%s", w, out)
				}
			}
			rest := strings.Join(lines[1:], "\n")
			for _, w := range tc.detail {
				if !strings.Contains(rest, w) {
					t.Errorf("detail lacks %q:\n%s", w, out)
				}
			}
			for _, l := range lines {
				if strings.HasPrefix(strings.TrimSpace(l), "{") && json.Valid([]byte(l)) {
					t.Errorf("a line is JSON: %s", l)
				}
			}
		})
	}
}

// configFileError writes body as dir/sluiced.hcl and returns the error
// sluiced stops with.
func configFileError(t *testing.T, dir, body string) error {
	t.Helper()
	path := filepath.Join(dir, "sluiced.hcl")
	_, diags, files := ParseConfig(path, []byte(body))
	if !diags.HasErrors() {
		t.Fatalf("config %q has no error", body)
	}
	return ConfigDiagError(path, diags, files)
}

// initial writes files into dir/rules (none: no directory) and a
// signature when sig is set, and loads the ruleset as the daemon does at
// start, with pub as rules_public_key when set.
func initial(t *testing.T, dir string, files map[string]string, pub ed25519.PublicKey, sig []byte) error {
	t.Helper()
	rulesDir := filepath.Join(dir, "rules")
	if files != nil {
		if err := os.Mkdir(rulesDir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(rulesDir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if sig != nil {
		if err := os.WriteFile(filepath.Join(rulesDir, ruleset.SignatureFile), []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &Config{Path: filepath.Join(dir, "sluiced.hcl"), DataDir: filepath.Join(dir, "data"), RulesDir: rulesDir, RulesKey: pub, RulesKeyPath: filepath.Join(dir, "rules.pub")}
	r := &rules{cfg: cfg, log: hclog.NewNullLogger()}
	_, _, err := r.initial()
	return err
}
