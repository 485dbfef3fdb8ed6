package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/interceptor"
)

// Cgroup is a child cgroup the test made under the cgroup2 mount.
type Cgroup struct {
	Rel  string // path relative to the mount, as sluiced's config takes it
	Path string // absolute directory
}

// NewCgroup creates a fresh child cgroup of the cgroup2 root and removes it
// at cleanup, after killing whatever the test left running inside it.
func NewCgroup(t testing.TB) *Cgroup {
	t.Helper()
	RequireRoot(t)
	mount, err := interceptor.Cgroup2Mount()
	Need(t, err == nil, "no cgroup2 mount on this machine")
	rel := RandName("sluice-test-")
	path := filepath.Join(mount, rel)
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	cg := &Cgroup{Rel: rel, Path: path}
	t.Cleanup(func() { cg.remove(t) })
	return cg
}

func (cg *Cgroup) remove(t testing.TB) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Only processes the test started can be in this cgroup.
		b, _ := os.ReadFile(filepath.Join(cg.Path, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		err := os.Remove(cg.Path)
		if err == nil || os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", cg.Path, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Command returns cmd set up to start directly inside the cgroup.
func (cg *Cgroup) Command(ctx context.Context, name string, args ...string) (*exec.Cmd, func()) {
	f, err := os.Open(cg.Path)
	cmd := exec.CommandContext(ctx, name, args...)
	if err != nil {
		cmd.Err = err
		return cmd, func() {}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	return cmd, func() { f.Close() }
}

// Run runs a command inside the cgroup and returns its combined output.
func (cg *Cgroup) Run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, done := cg.Command(ctx, name, args...)
	defer done()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// RunOutside runs argv in the test's own cgroup, for comparison.
func RunOutside(t testing.TB, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// Child creates the cgroup rel below cg, with every missing level between,
// and removes what it created at cleanup (before cg itself). It is how
// tests build a tree shaped like a host's, e.g.
// "system.slice/actions.runner.acme-api.r1.service".
func (cg *Cgroup) Child(t testing.TB, rel string) *Cgroup {
	t.Helper()
	cur := cg
	for _, part := range strings.Split(filepath.Clean(rel), "/") {
		next := &Cgroup{Rel: cur.Rel + "/" + part, Path: filepath.Join(cur.Path, part)}
		err := os.Mkdir(next.Path, 0o755)
		switch {
		case err == nil:
			t.Cleanup(func() { next.remove(t) })
		case !os.IsExist(err):
			t.Fatalf("create cgroup: %v", err)
		}
		cur = next
	}
	return cur
}

// Remove kills what runs in the cgroup and removes it now, as systemd does
// when a service stops.
func (cg *Cgroup) Remove(t testing.TB) {
	t.Helper()
	cg.remove(t)
}
