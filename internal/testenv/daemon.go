package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/api"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Main runs the tests of a package that uses Binaries and removes the
// built binaries afterwards. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// Describe is the git describe the test binaries are stamped with, as
// `make build` stamps the real ones: they print its version (version.Debian).
const Describe = "v1.2.3-4-gabcdef0"

// Binaries builds sluiced and sluice once per test binary, stamped with
// Describe, and returns the directory holding them.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sluice-bin-")
		if buildErr != nil {
			return
		}
		// Tests run the binaries as unprivileged users too.
		os.Chmod(binDir, 0o755)
		var root []byte
		root, buildErr = exec.Command("go", "env", "GOMOD").Output()
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-ldflags", "-X github.com/sluicehq/sluice/internal/version.Describe="+Describe,
			"-o", binDir, "./cmd/sluiced", "./cmd/sluice")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binDir
}

// Daemon is a sluiced process the test started with its own pin name,
// data directory and API socket.
type Daemon struct {
	Name    string
	Config  string // path of the config file
	DataDir string
	Socket  string
	Port    int
	// RulesDir is the daemon's rules_dir ("" when it runs the default).
	RulesDir string
	LogPath  string
	bin      string
	env      []string
	// sluiced is the daemon binary Start runs (default bin/sluiced).
	sluiced string
	// held are the proxy's listening sockets when the test holds them for
	// the daemon, as a systemd socket unit does.
	held []*os.File

	cmd  *exec.Cmd
	done chan struct{}
}

// DaemonOptions say what to put in the daemon's config.
type DaemonOptions struct {
	// Cgroup is written as the config's cgroup; nil writes none (Body then
	// has cgroups or a discover block).
	Cgroup *Cgroup
	// HoldListeners makes the test create the proxy's listening sockets
	// and pass them to every daemon it starts (sd_listen_fds(3), as a
	// systemd socket unit does), so they outlive a daemon restart.
	HoldListeners bool
	// Rules is the ruleset, written to RulesDir/rules.hcl. Empty means the
	// daemon runs with the embedded default ruleset.
	Rules string
	// Body is HCL appended to the generated daemon settings.
	Body string
	// Env is added to the daemon's environment (KEY=value).
	Env []string
	// BeforeStart, when set, runs after the config is written and before
	// the daemon first starts (a test runs `sluice install` on it there).
	BeforeStart func(d *Daemon)
}

// StartDaemon writes a config and starts sluiced. At cleanup the daemon
// is stopped and `sluice uninstall` removes its pins.
func StartDaemon(t testing.TB, o DaemonOptions) *Daemon {
	t.Helper()
	RequireRoot(t)
	bin := Binaries(t)
	dir, err := os.MkdirTemp("", "sluice-d-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		Name:    RandName("t"),
		DataDir: filepath.Join(dir, "data"),
		Socket:  filepath.Join(dir, "api.sock"),
		Port:    FreePort(t, "127.0.0.1"),
		LogPath: filepath.Join(dir, "sluiced.log"),
		Config:  filepath.Join(dir, "sluiced.hcl"),
		bin:     bin,
		env:     o.Env,
	}
	body := o.Body
	if o.Rules != "" {
		d.RulesDir = filepath.Join(dir, "rules")
		if err := os.Mkdir(d.RulesDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d.RulesDir, "rules.hcl"), []byte(o.Rules), 0o600); err != nil {
			t.Fatal(err)
		}
		body += fmt.Sprintf("\nrules_dir = %q\n", d.RulesDir)
	}
	cgLine := ""
	if o.Cgroup != nil {
		cgLine = fmt.Sprintf("cgroup = %q\n", o.Cgroup.Rel)
	}
	cfg := fmt.Sprintf("name = %q\n%sproxy_port = %d\ndata_dir = %q\napi_socket = %q\nlog {\n  level = \"debug\"\n  format = \"json\"\n}\n%s\n",
		d.Name, cgLine, d.Port, d.DataDir, d.Socket, body)
	if o.HoldListeners {
		d.holdListeners(t)
	}
	if err := os.WriteFile(d.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop(t)
		if out, err := exec.Command(filepath.Join(bin, "sluice"), "uninstall", "--name", d.Name).CombinedOutput(); err != nil {
			t.Errorf("sluice uninstall: %v\n%s", err, out)
		}
		if t.Failed() {
			log, _ := os.ReadFile(d.LogPath)
			t.Logf("sluiced log:\n%s", log)
		}
		os.RemoveAll(dir)
	})
	if o.BeforeStart != nil {
		o.BeforeStart(d)
	}
	d.Start(t)
	return d
}

// Dir is the directory holding the daemon's config, data and socket.
func (d *Daemon) Dir() string { return filepath.Dir(d.Config) }

// PID returns the running daemon's process id, or 0.
func (d *Daemon) PID() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Start starts (or restarts) the daemon and waits until its API answers.
func (d *Daemon) Start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	bin := d.sluiced
	if bin == "" {
		bin = filepath.Join(d.bin, "sluiced")
	}
	cmd := exec.Command(bin, "--config", d.Config)
	cmd.Env = append(os.Environ(), d.env...)
	if len(d.held) > 0 {
		// LISTEN_PID must be the daemon's own pid: the shell sets it and
		// execs the daemon in its place, keeping pid and descriptors.
		cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin, "--config", d.Config)
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(d.held)))
		cmd.ExtraFiles = d.held
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sluiced: %v", err)
	}
	d.cmd = cmd
	d.done = make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(d.done)

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			log, _ := os.ReadFile(d.LogPath)
			t.Fatalf("sluiced exited during start:\n%s", log)
		default:
		}
		if _, err := d.Status(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(d.LogPath)
	t.Fatalf("sluiced did not come up in 20s:\n%s", log)
}

// WaitExit waits (at most 10 s, failing the test) for a daemon something
// else killed to exit, so that Start can start it again.
func (d *Daemon) WaitExit(t testing.TB) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	select {
	case <-d.done:
		d.cmd = nil
	case <-time.After(10 * time.Second):
		t.Fatalf("sluiced (pid %d) did not exit within 10s", d.cmd.Process.Pid)
	}
}

// UseSluiced makes the next Start run the daemon binary at path, as a
// package upgrade replaces it.
func (d *Daemon) UseSluiced(path string) { d.sluiced = path }

// holdListeners binds the proxy's sockets on 127.0.0.1 and ::1 in the test
// process and keeps them until cleanup.
func (d *Daemon) holdListeners(t testing.TB) {
	t.Helper()
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", d.Port), fmt.Sprintf("[::1]:%d", d.Port)} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("hold listener %s: %v", addr, err)
		}
		f, err := l.(*net.TCPListener).File()
		l.Close() // f is a duplicate that keeps the socket listening
		if err != nil {
			t.Fatalf("hold listener %s: %v", addr, err)
		}
		d.held = append(d.held, f)
		t.Cleanup(func() { f.Close() })
	}
}

// Status asks the daemon's API for its status.
func (d *Daemon) Status() (api.Status, error) {
	var st api.Status
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := api.NewClient(d.Socket).Get(ctx, "/v1/status", &st)
	return st, err
}

// Kill9 kills the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill9(t testing.TB) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

// Stop asks the daemon to stop with SIGTERM and waits for it.
func (d *Daemon) Stop(t testing.TB) {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Errorf("sluiced did not stop within 10s of SIGTERM; killing it")
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.done
	}
	d.cmd = nil
}

// Sluice runs the sluice CLI and returns its combined output.
func (d *Daemon) Sluice(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(filepath.Join(d.bin, "sluice"), args...).CombinedOutput()
	return string(out), err
}

// LogLine is one JSON line of the daemon's log.
type LogLine map[string]any

// Message is the line's fixed message text.
func (l LogLine) Message() string { s, _ := l["@message"].(string); return s }

// String returns a field as text.
func (l LogLine) String(k string) string {
	switch v := l[k].(type) {
	case string:
		return v
	case nil:
		return ""
	case float64:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprint(v)
	}
}

// Logs returns every JSON line the daemon has logged.
func (d *Daemon) Logs(t testing.TB) []LogLine {
	t.Helper()
	f, err := os.Open(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []LogLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l LogLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines
}

// WaitLogMatch is WaitLog for a line match accepts, whatever its message.
func (d *Daemon) WaitLogMatch(t testing.TB, match func(LogLine) bool) LogLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range d.Logs(t) {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line matched within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitLog waits up to 5s for a log line with message msg for which match
// returns true.
func (d *Daemon) WaitLog(t testing.TB, msg string, match func(LogLine) bool) LogLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, l := range d.Logs(t) {
			if l.Message() == msg && (match == nil || match(l)) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line matched within 5s", msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
