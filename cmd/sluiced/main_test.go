package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/internal/version"
)

// TestParseFlags: --version and --help print to stdout and exit 0
// without starting the daemon; a bad flag or an argument exits 2 with a
// pointer to --help on stderr.
func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		start          bool
		stdout, stderr string
		Config         string
	}{
		{nil, daemon.ExitOK, true, "", "", "/etc/sluice/sluiced.hcl"},
		{[]string{"--config", "/tmp/x.hcl"}, daemon.ExitOK, true, "", "", "/tmp/x.hcl"},
		{[]string{"--version"}, daemon.ExitOK, false, "sluiced " + version.String() + "\n", "", ""},
		{[]string{"-version"}, daemon.ExitOK, false, "sluiced " + version.String() + "\n", "", ""},
		{[]string{"-h"}, daemon.ExitOK, false, "usage: sluiced", "", ""},
		{[]string{"--help"}, daemon.ExitOK, false, "usage: sluiced", "", ""},
		{[]string{"--config", "/tmp/x.hcl", "--help"}, daemon.ExitOK, false, "usage: sluiced", "", ""},
		{[]string{"--bogus"}, daemon.ExitConfig, false, "", "sluiced: flag provided but not defined: -bogus: run sluiced --help", ""},
		{[]string{"--config"}, daemon.ExitConfig, false, "", "flag needs an argument", ""},
		{[]string{"start"}, daemon.ExitConfig, false, "", `sluiced: unexpected argument "start"`, ""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			o, code, start := parseFlags(tc.args, &stdout, &stderr)
			if code != tc.code || start != tc.start {
				t.Errorf("code %d start %v, want %d %v", code, start, tc.code, tc.start)
			}
			if !strings.HasPrefix(stdout.String(), tc.stdout) || tc.stdout == "" && stdout.Len() > 0 {
				t.Errorf("stdout %q, want it to start with %q", stdout.String(), tc.stdout)
			}
			if !strings.Contains(stderr.String(), tc.stderr) || tc.stderr == "" && stderr.Len() > 0 {
				t.Errorf("stderr %q, want it to hold %q", stderr.String(), tc.stderr)
			}
			if start && o.config != tc.Config {
				t.Errorf("config %q, want %q", o.config, tc.Config)
			}
		})
	}
}
