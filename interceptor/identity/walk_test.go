package identity

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ruleset"
)

// procTree is a procfs copy a test edits: stat and environ per pid.
type procTree struct {
	t    *testing.T
	root string
}

func newProcTree(t *testing.T) *procTree { return &procTree{t: t, root: t.TempDir()} }

func (p *procTree) write(pid, ppid int, comm string, start int, env []string) {
	dir := filepath.Join(p.root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	stat := strconv.Itoa(pid) + " (" + comm + ") S " + strconv.Itoa(ppid) + strings.Repeat(" 0", 17) + " " + strconv.Itoa(start) + " 0 0\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "environ"), []byte(strings.Join(env, "\x00")+"\x00"), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *procTree) remove(pid int) {
	if err := os.RemoveAll(filepath.Join(p.root, strconv.Itoa(pid))); err != nil {
		p.t.Fatal(err)
	}
}

// testClock is a settable clock for Resolver.now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// The same process connecting again is not walked again: with an ancestor
// in between gone from /proc, it keeps the job it was walked to, until
// walkTTL has passed; then it is walked again and has none.
func TestWalkRemembered(t *testing.T) {
	ti := newTestIssuer(t)
	p := newProcTree(t)
	p.write(1, 0, "init", 1, nil)
	p.write(100, 1, "Runner.Worker", 500, githubEnv(ti, "acme/api"))
	p.write(101, 100, "bash", 550, nil)
	p.write(102, 101, "psql", 600, nil)
	r, _ := newResolver(t, ti, func(c *Config) { c.ProcRoot = p.root })
	clk := &testClock{t: time.Now()}
	r.now = clk.now
	wantLevel(t, resolve(t, r, 102), ruleset.LevelOIDC, "")

	p.remove(101) // a walk now would stop at 102
	clk.add(walkTTL / 2)
	wantLevel(t, resolve(t, r, 102), ruleset.LevelOIDC, "")

	clk.add(walkTTL / 2)
	wantLevel(t, resolve(t, r, 102), ruleset.LevelNone, "no CI job ancestor")
}

// A remembered walk is dropped when the process is not the one walked
// (pid reused: another start time), when it was reparented or renamed,
// and when its anchor ended or changed its name.
func TestWalkInvalidated(t *testing.T) {
	ti := newTestIssuer(t)
	p := newProcTree(t)
	setup := func() {
		p.write(1, 0, "init", 1, nil)
		p.write(100, 1, "Runner.Worker", 500, githubEnv(ti, "acme/api"))
		p.write(102, 100, "psql", 600, nil)
		p.write(200, 1, "sshd", 100, nil)
	}
	for _, tc := range []struct {
		name   string
		change func()
		level  string
		reason string
	}{
		{"pid reused without a job", func() { p.write(102, 200, "psql", 700, nil) }, ruleset.LevelNone, "no CI job ancestor"},
		{"reparented", func() { p.write(102, 1, "psql", 600, nil) }, ruleset.LevelNone, "no CI job ancestor"},
		{"anchor ended", func() { p.remove(100) }, ruleset.LevelNone, "no CI job ancestor"},
		{"anchor pid reused", func() { p.write(100, 1, "Runner.Worker", 650, nil) }, ruleset.LevelNone, "no CI job ancestor"},
		{"anchor renamed", func() { p.write(100, 1, "bash", 500, nil) }, ruleset.LevelNone, "no CI job ancestor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setup()
			r, _ := newResolver(t, ti, func(c *Config) { c.ProcRoot = p.root })
			clk := &testClock{t: time.Now()}
			r.now = clk.now
			wantLevel(t, resolve(t, r, 102), ruleset.LevelOIDC, "")
			tc.change()
			wantLevel(t, resolve(t, r, 102), tc.level, tc.reason)
		})
	}
}

// The cache cannot be poisoned across processes: a process remembered
// without a job does not hide the job of a later process with its pid,
// and a remembered job is not lent to a later process with the pid.
func TestWalkNotPoisoned(t *testing.T) {
	ti := newTestIssuer(t)
	p := newProcTree(t)
	p.write(1, 0, "init", 1, nil)
	p.write(100, 1, "Runner.Worker", 500, githubEnv(ti, "acme/api"))
	p.write(200, 1, "sshd", 100, nil)
	p.write(300, 200, "psql", 600, nil)
	r, _ := newResolver(t, ti, func(c *Config) { c.ProcRoot = p.root })
	clk := &testClock{t: time.Now()}
	r.now = clk.now
	wantLevel(t, resolve(t, r, 300), ruleset.LevelNone, "no CI job ancestor")

	// The pid comes back, in the job: a new start time, a new walk.
	p.write(300, 100, "psql", 700, nil)
	wantLevel(t, resolve(t, r, 300), ruleset.LevelOIDC, "")

	// And back outside the job: the job's walk is not reused.
	p.write(300, 200, "psql", 800, nil)
	wantLevel(t, resolve(t, r, 300), ruleset.LevelNone, "no CI job ancestor")
}

// The cache holds at most maxWalks walks.
func TestWalkBounded(t *testing.T) {
	var c walkCache
	now := time.Now()
	for i := range maxWalks + 10 {
		c.remember(proc{pid: uint32(i), ppid: 1, comm: "psql", start: 1}, nil, "", now)
	}
	if n := len(c.walks); n > maxWalks {
		t.Errorf("%d walks remembered, want at most %d", n, maxWalks)
	}
	if _, ok := c.lookup("/nonexistent", proc{pid: uint32(maxWalks + 9), ppid: 1, comm: "psql", start: 1}, now); !ok {
		t.Error("the newest walk was not kept")
	}
}
