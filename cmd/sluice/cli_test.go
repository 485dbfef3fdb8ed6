package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/version"
)

// commandPaths returns the argument lists that name every command and
// subcommand of the tree the CLI runs, hidden ones left out, the root
// as an empty list.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		out = append(out, path)
		for _, sub := range c.Commands() {
			if sub.Hidden {
				continue
			}
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(newRootCmd(), nil)
	if len(out) < 30 {
		t.Fatalf("the command tree has %d commands; want every command and subcommand", len(out))
	}
	return out
}

// TestHelpEverywhere runs -h, --help and `sluice help CMD` on every
// command and subcommand: exit 0, the command's usage on stdout, nothing on
// stderr.
func TestHelpEverywhere(t *testing.T) {
	for _, path := range commandPaths(t) {
		name := strings.Join(append([]string{"sluice"}, path...), " ")
		forms := [][]string{append(append([]string(nil), path...), "--help"), append(append([]string(nil), path...), "-h")}
		if len(path) > 0 {
			forms = append(forms, append([]string{"help"}, path...))
		}
		for _, args := range forms {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errOut := sluice(t, args...)
				if code != 0 || errOut != "" {
					t.Errorf("exit %d, stderr %q; want exit 0 and nothing on stderr", code, errOut)
				}
				if !strings.Contains(out, "Usage:\n  "+name) {
					t.Errorf("stdout has no usage line for %s:\n%s", name, out)
				}
				if strings.Contains(out+errOut, "unknown command") {
					t.Errorf("says unknown command:\n%s%s", out, errOut)
				}
			})
		}
	}
}

// TestBadFlag runs every command with a flag it does not have: exit 2 and
// one line on stderr that names the flag and where the usage is.
func TestBadFlag(t *testing.T) {
	for _, path := range commandPaths(t) {
		args := append(append([]string(nil), path...), "--no-such-flag")
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, out, errOut := sluice(t, args...)
			name := strings.Join(append([]string{"sluice"}, path...), " ")
			if code != 2 || out != "" {
				t.Errorf("exit %d, stdout %q; want exit 2 and nothing on stdout", code, out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--no-such-flag") || !strings.Contains(errOut, name+" --help") {
				t.Errorf("stderr %q; want one line naming --no-such-flag and %s --help", errOut, name)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	want := "sluice " + version.String() + "\n"
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, errOut := sluice(t, args...)
		if code != 0 || out != want || errOut != "" {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want %q", args[0], code, out, errOut, want)
		}
	}
}

// TestDaemonDown: every command that talks to the daemon says, when
// nothing listens on its socket, that the daemon is not running and what
// to do, never the HTTP client's error.
func TestDaemonDown(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sluiced.sock")
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "r.hcl"), []byte("target \"db\" {\n  protocol = \"postgres\"\n  address  = [\"*:5432\"]\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := `the daemon is not running (nothing listens on ` + sock + `): start it with "systemctl start sluiced", or pass --socket PATH if it uses another socket`
	tests := []struct {
		name string // the command, as its messages name it
		args []string
	}{
		{"sluice sessions list", []string{"sessions", "list"}},
		{"sluice sessions show", []string{"sessions", "show", "abc"}},
		{"sluice verify", []string{"verify", "--all"}},
		{"sluice verify", []string{"verify", "abc"}},
		{"sluice approvals list", []string{"approvals", "list"}},
		{"sluice approve", []string{"approve", "abc"}},
		{"sluice deny", []string{"deny", "abc"}},
		{"sluice export", []string{"export", "abc"}},
		{"sluice replay", []string{"replay", "abc"}},
		{"sluice rules push", []string{"rules", "push", rules}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := sluice(t, append(tt.args, "--socket", sock)...)
			name := tt.name
			if code != 1 || out != "" || errOut != name+": "+want+"\n" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, name+": "+want)
			}
		})
	}

	// status reports it on stdout (its report has a line per part) and
	// exits 1.
	code, out, _ := sluice(t, "status", "--socket", sock, "--name", "no-such-installation")
	if code != 1 || !strings.Contains(out, "daemon:      not reachable: "+want+"\n") {
		t.Errorf("status: exit %d\n%s\nwant exit 1 and the daemon-down message", code, out)
	}
	if strings.Contains(out, "dial unix") || strings.Contains(out, "http://sluiced") {
		t.Errorf("the HTTP client's error reached the user:\n%s", out)
	}
}

// TestArgumentErrors: malformed flags and arguments are usage errors
// (exit 2) that say what is wrong and what is accepted, in words, never a
// Go parser's message.
func TestArgumentErrors(t *testing.T) {
	dir := filepath.Join(rulesets, "readonly-ci")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"rules", "explain", dir}, "--target is required: name the target the flow goes to; the targets in " + dir + " are prod-db, replica"},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--identity-level", "root"}, `--identity-level "root": want one of oidc, unverified, none`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--process", "pid=abc"}, `--process pid="abc": pid must be a whole number`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--process", "shell=sh"}, `unknown process fact "shell"`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--process", "pid"}, `--process "pid": want key=value`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--rows", "abc"}, `--rows "abc": want a whole number`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--rows", "-3"}, `--rows and --bytes: want 0 or more`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--address", "10.0.0.5"}, `--address "10.0.0.5": want IP:PORT`},
		{[]string{"rules", "explain", dir, "--target", "prod-db", "--query", "select 1", "--kind", "select"}, "give --query or --kind, not both"},
		{[]string{"rules", "explain"}, "missing PATH"},
		{[]string{"rules", "explain", dir, dir}, "unexpected argument"},
		{[]string{"rules", "check"}, "missing PATH"},
		{[]string{"rules", "test"}, "missing PATH"},
		{[]string{"rules", "sign", dir}, "--key is required"},
		{[]string{"rules", "verify", dir}, "--pub is required"},
		{[]string{"rules", "keygen"}, "--out is required"},
		{[]string{"rules", "keygen", "extra", "--out", "x"}, `unexpected argument "extra"`},
		{[]string{"rules"}, "Usage:"},
		{[]string{"rules", "chek"}, `unknown command "chek": did you mean "check"?`},
		{[]string{"sessions", "list", "--limit", "ten"}, `--limit "ten": want a whole number`},
		{[]string{"sessions", "list", "--limit", "-1"}, `--limit -1: want 0 (all) or more`},
		{[]string{"sessions", "list", "--since", "yesterday"}, `--since "yesterday": give a duration such as 2h or 7d, or an RFC 3339 time`},
		{[]string{"sessions", "list", "--verdict", "blocked"}, `--verdict "blocked": want one of allow, mask, hold, deny`},
		{[]string{"sessions", "list", "--json=maybe"}, `--json "maybe": want true or false`},
		{[]string{"sessions", "list", "--server", "http://h:1"}, "the remote API is https only"},
		{[]string{"sessions", "list", "--server", "https://h:1", "--token-file", "/nonexistent/token"}, "--token-file: /nonexistent/token does not exist"},
		{[]string{"sessions", "show"}, "missing ID"},
		{[]string{"replay", "abc", "--speed", "fast"}, `--speed "fast": want a number`},
		{[]string{"replay", "abc", "--speed", "0"}, `--speed 0: want a number above 0`},
		{[]string{"export", "abc", "--format", "csv"}, `--format "csv": want one of jsonl, pcap, asciicast`},
		{[]string{"verify"}, "missing ID (or --all"},
		{[]string{"verify", "abc", "--all"}, "give an ID or --all, not both"},
		{[]string{"approve"}, "missing ID"},
		{[]string{"run", "--cgroup", "x"}, "missing CMD"},
		{[]string{"run", "true"}, "--cgroup is required"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"status", "--socket"}, "--socket needs a value (PATH)"},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"help", "nosuch"}, `no command "nosuch"`},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := sluice(t, tt.args...)
			if code != 2 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, errOut, tt.want)
			}
			for _, internal := range []string{"strconv", "netip", "ParseInt", "ParseFloat", "ParseBool", "invalid syntax"} {
				if strings.Contains(out+errOut, internal) {
					t.Errorf("a Go internal (%s) reached the user: %q", internal, errOut)
				}
			}
		})
	}
}
