package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestRunCgroup runs `sluice run --cgroup` under a fresh test cgroup: the
// command runs inside the cgroup with its own exit status, a cgroup run
// created is removed afterwards (every level it created), one that existed
// before stays, and one the command left processes in stays with a line on
// stderr naming it. Needs root and a cgroup2 mount (testenv.NewCgroup);
// attaches nothing.
func TestRunCgroup(t *testing.T) {
	parent := testenv.NewCgroup(t)
	pre := parent.Child(t, "existing")
	tests := []struct {
		name     string
		rel      string // below parent
		argv     []string
		code     int
		gone     string // below parent: must not exist afterwards ("" for none)
		stays    bool   // rel must still exist
		stderr   string // in stderr ("" for empty stderr)
		selfTest bool   // argv prints its cgroup: it must be rel
		noDash   bool   // no -- before argv
	}{
		{name: "created and removed", rel: "new", argv: []string{"sh", "-c", "grep ^0:: /proc/self/cgroup"}, gone: "new", selfTest: true},
		{name: "every created level removed", rel: "a/b/c", argv: []string{"true"}, gone: "a"},
		{name: "exit status kept", rel: "fails", argv: []string{"sh", "-c", "exit 7"}, code: 7, gone: "fails"},
		{name: "CMD's flags are its own", rel: "flags", argv: []string{"sh", "-c", "echo $0 $1", "-x", "--help"}, gone: "flags", noDash: true},
		{name: "existing cgroup stays", rel: "existing", argv: []string{"sh", "-c", "grep ^0:: /proc/self/cgroup"}, stays: true, selfTest: true},
		{name: "children left behind", rel: "busy", argv: []string{"sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & exit 3"}, code: 3, stays: true,
			stderr: "sluice run: cgroup " + filepath.Join(parent.Path, "busy") + " stays: 1 process the command left behind still runs in it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rel := parent.Rel + "/" + tt.rel
			dir := filepath.Join(parent.Path, tt.rel)
			if tt.stays && tt.rel != "existing" {
				// Whatever the test leaves running there is killed.
				t.Cleanup(func() { (&testenv.Cgroup{Rel: rel, Path: dir}).Remove(t) })
			}
			args := append([]string{"run", "--cgroup", rel, "--"}, tt.argv...)
			if tt.noDash {
				args = append([]string{"run", "--cgroup", rel}, tt.argv...)
			}
			code, out, errOut := sluice(t, args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errOut)
			}
			if tt.stderr == "" && errOut != "" || !strings.Contains(errOut, tt.stderr) || strings.Count(errOut, "\n") > 1 {
				t.Errorf("stderr %q, want one line with %q", errOut, tt.stderr)
			}
			if tt.selfTest && strings.TrimSpace(out) != "0::/"+rel {
				t.Errorf("the command ran in %q, want 0::/%s", out, rel)
			}
			if tt.noDash && out != "-x --help\n" {
				t.Errorf("the command got %q as its arguments, want -x --help", out)
			}
			if tt.gone != "" {
				if _, err := os.Stat(filepath.Join(parent.Path, tt.gone)); !os.IsNotExist(err) {
					t.Errorf("%s still exists after the command exited (%v)", tt.gone, err)
				}
			}
			if _, err := os.Stat(dir); tt.stays && err != nil {
				t.Errorf("%s was removed: %v", dir, err)
			}
		})
	}
	if _, err := os.Stat(pre.Path); err != nil {
		t.Errorf("the cgroup that existed before is gone: %v", err)
	}
}
