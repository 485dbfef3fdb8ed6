package procfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCgroup: the cgroup2 line is found among v1 lines, a file without
// one is an error, and a missing process wraps os.ErrNotExist.
func TestCgroup(t *testing.T) {
	root := t.TempDir()
	write := func(pid, text string) {
		os.MkdirAll(filepath.Join(root, pid), 0o755)
		os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(text), 0o644)
	}
	write("7", "12:memory:/x\n0::/system.slice/a.service\n")
	write("8", "12:memory:/x\n")
	if cg, err := Cgroup(root, 7); err != nil || cg != "/system.slice/a.service" {
		t.Errorf("Cgroup(7) = %q, %v", cg, err)
	}
	if _, err := Cgroup(root, 8); !errors.Is(err, ErrNoCgroup2) {
		t.Errorf("Cgroup(8) err = %v, want ErrNoCgroup2", err)
	}
	if _, err := Cgroup(root, 9); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Cgroup(9) err = %v, want os.ErrNotExist", err)
	}
}
