// Package e2e holds end-to-end tests: real clients in a cgroup the test
// made, a real sluiced binary with real eBPF programs, real servers.
//
// They need root (cgroups, eBPF, network namespaces), PostgreSQL's server
// and psql, and iproute2. Without root they skip; with SLUICE_E2E=required
// they fail instead.
package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluicehq/sluice/bpf"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// tcpRules is a ruleset with one opaque TCP target that every flow may use.
func tcpRules(name, addr string) string {
	return fmt.Sprintf(`target %q {
  protocol = "tcp"
  address  = [%q]
}

policy "e2e" {
  targets = [%q]
}

default {
  action = "deny"
}
`, name, addr, name)
}

// psqlIn runs psql inside the cgroup as uid, returning output, pid and error.
func psqlIn(t *testing.T, cg *testenv.Cgroup, uid int, args []string) (string, int, error) {
	t.Helper()
	cmd, done := cg.Command(t.Context(), args[0], args[1:]...)
	defer done()
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		cmd.Env = append(os.Environ(), "HOME=/")
	}
	out, err := cmd.CombinedOutput()
	pid := 0
	if cmd.Process != nil {
		pid = cmd.Process.Pid
	}
	return strings.TrimSpace(string(out)), pid, err
}

func nobody(t *testing.T) int {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no nobody user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	return uid
}

func flows(t *testing.T, d *testenv.Daemon) uint64 {
	t.Helper()
	st, err := d.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st.Flows.Total
}

// TestRedirectToLoopbackAlias: psql in the cgroup reaches a PostgreSQL on
// 127.0.0.2 through the proxy, and the flow log says who and where.
func TestRedirectToLoopbackAlias(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	other := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.3"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: tcpRules("pg", pg.Addr())})
	uid := nobody(t)

	out, pid, err := psqlIn(t, cg, uid, pg.PsqlArgs("", 0, "select 40 + 2"))
	if err != nil || out != "42" {
		t.Fatalf("psql in cgroup: %v: %q", err, out)
	}
	l := d.WaitLog(t, "flow", nil)
	want := map[string]string{
		"orig_dst": pg.Addr(), "target": "pg", "protocol": "tcp",
		"pid": strconv.Itoa(pid), "uid": strconv.Itoa(uid), "comm": "psql",
	}
	for k, v := range want {
		if got := l.String(k); got != v {
			t.Errorf("flow log %s = %q, want %q (line %v)", k, got, v, l)
		}
	}
	if exe := l.String("exe"); filepath.Base(exe) != "psql" {
		t.Errorf("flow log exe = %q, want a psql binary", exe)
	}
	if n := flows(t, d); n != 1 {
		t.Errorf("daemon counted %d flows, want 1", n)
	}

	// The same psql outside the cgroup goes straight to the server.
	if out, err := testenv.RunOutside(t, pg.PsqlArgs("", 0, "select 1")...); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("psql outside cgroup: %v: %q", err, out)
	}
	// A port that is no target is untouched, from inside the cgroup too.
	if out, _, err := psqlIn(t, cg, 0, other.PsqlArgs("", 0, "select 3")); err != nil || out != "3" {
		t.Fatalf("psql to a non-target: %v: %q", err, out)
	}
	if n := flows(t, d); n != 1 {
		t.Errorf("after untouched connections the daemon counted %d flows, want still 1", n)
	}

	// An AF_INET6 socket to the IPv4-mapped address is redirected too.
	mapped := pg.PsqlArgs("::ffff:127.0.0.2", pg.Port, "select 6")
	if out, _, err := psqlIn(t, cg, 0, mapped); err != nil || out != "6" {
		t.Fatalf("psql to ::ffff:127.0.0.2: %v: %q", err, out)
	}
	if n := flows(t, d); n != 2 {
		t.Errorf("after the IPv4-mapped connect the daemon counted %d flows, want 2", n)
	}
	st, _ := d.Status()
	if st.Kernel["redirected"] != 2 || st.Kernel["handed_over"] != 2 {
		t.Errorf("kernel counters %v: want 2 redirected and handed over", st.Kernel)
	}
}

// TestRedirectToNetnsHost: a PostgreSQL on a test host in its own network
// namespace is reached through the proxy.
func TestRedirectToNetnsHost(t *testing.T) {
	cg := testenv.NewCgroup(t)
	h := testenv.NewHost(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: h.Addr.String(), Netns: h.Netns})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: tcpRules("remote", pg.Addr())})

	out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "select inet_server_addr()"))
	if err != nil || out != h.Addr.String() {
		t.Fatalf("psql to %s: %v: %q", h, err, out)
	}
	l := d.WaitLog(t, "flow", nil)
	if got := l.String("orig_dst"); got != pg.Addr() {
		t.Errorf("flow orig_dst = %q, want %q", got, pg.Addr())
	}
}

// TestFailClosed: a crashed daemon leaves connects refused, not direct; a
// restarted one re-adopts the pins; uninstall removes every pin.
func TestFailClosed(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: tcpRules("pg", pg.Addr())})
	q := pg.PsqlArgs("", 0, "select 1")

	if out, _, err := psqlIn(t, cg, 0, q); err != nil || out != "1" {
		t.Fatalf("psql before the crash: %v: %q", err, out)
	}

	d.Kill9(t)
	out, _, err := psqlIn(t, cg, 0, q)
	if err == nil || !strings.Contains(out, "Connection refused") {
		t.Fatalf("with the daemon killed, psql = %v: %q; want connection refused", err, out)
	}
	// The server is up: the refusal came from the redirect, not the server.
	if out, err := testenv.RunOutside(t, q...); err != nil {
		t.Fatalf("psql outside the cgroup while the daemon is down: %v: %s", err, out)
	}

	d.Start(t)
	st, err := d.Status()
	if err != nil || !st.Readopted {
		t.Fatalf("restarted daemon: readopted=%v err=%v, want re-adopted pins", st.Readopted, err)
	}
	if out, _, err := psqlIn(t, cg, 0, q); err != nil || out != "1" {
		t.Fatalf("psql after restart: %v: %q", err, out)
	}

	// A connect straight to the proxy port from the cgroup is refused.
	direct := pg.PsqlArgs("127.0.0.1", d.Port, "select 1")
	if out, _, err := psqlIn(t, cg, 0, direct); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("psql straight to the proxy port = %v: %q; want it refused", err, out)
	}
	// From outside the cgroup the proxy takes it but finds no origin and
	// closes it unserved.
	if out, err := testenv.RunOutside(t, direct...); err == nil {
		t.Errorf("psql to the proxy port from outside was served: %q", out)
	}
	if st, _ := d.Status(); st.Flows.NoOrigin != 1 {
		t.Errorf("no_origin = %d, want 1", st.Flows.NoOrigin)
	}

	// Missing configuration in the kernel map denies the connect.
	cfgMap, err := ebpf.LoadPinnedMap(filepath.Join(interceptor.PinDir(d.Name), "sluice_config"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var saved bpf.Config
	cfgMap.Lookup(uint32(0), &saved)
	cfgMap.Put(uint32(0), bpf.Config{})
	out, _, err = psqlIn(t, cg, 0, q)
	cfgMap.Put(uint32(0), saved)
	cfgMap.Close()
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("with no config in the kernel map psql = %v: %q; want it denied", err, out)
	}

	d.Stop(t)
	if out, err := d.Sluice(t, "uninstall", "--name", d.Name); err != nil || !strings.Contains(out, "interception removed") {
		t.Fatalf("sluice uninstall: %v: %s", err, out)
	}
	if _, err := os.Stat(interceptor.PinDir(d.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory still there after uninstall: %v", err)
	}
	if out, _, err := psqlIn(t, cg, 0, q); err != nil || out != "1" {
		t.Errorf("psql after uninstall (direct again): %v: %q", err, out)
	}
}

// TestStatusAndRun: the CLI shows the installation and runs commands in a
// cgroup with their exit code.
func TestStatusAndRun(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: tcpRules("pg", pg.Addr())})

	args := append([]string{"run", "--cgroup", cg.Rel, "--"}, pg.PsqlArgs("", 0, "select 5")...)
	if out, err := d.Sluice(t, args...); err != nil || strings.TrimSpace(out) != "5" {
		t.Fatalf("sluice run psql: %v: %q", err, out)
	}
	out, err := d.Sluice(t, "run", "--cgroup", cg.Rel, "--", "sh", "-c", "exit 7")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("sluice run exit 7 = %v (%q), want exit code 7", err, out)
	}

	out, err = d.Sluice(t, "status", "--socket", d.Socket)
	if err != nil {
		t.Fatalf("sluice status: %v\n%s", err, out)
	}
	for _, want := range []string{
		"cgroup:      " + cg.Rel,
		fmt.Sprintf("proxy port:  %d", d.Port),
		"flows seen:  1 served",
		"link       link_connect4 -> /" + cg.Rel,
		"map        sluice_targets",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sluice status lacks %q:\n%s", want, out)
		}
	}
}

// TestRedirectIPv6: a target on ::1 is redirected to the [::1] listener.
func TestRedirectIPv6(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "::1"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: tcpRules("pg6", pg.Addr())})

	if out, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "select 66")); err != nil || out != "66" {
		t.Fatalf("psql to %s: %v: %q", pg.Addr(), err, out)
	}
	l := d.WaitLog(t, "flow", nil)
	if got := l.String("orig_dst"); got != pg.Addr() {
		t.Errorf("flow orig_dst = %q, want %q", got, pg.Addr())
	}
	if got := l.String("client"); !strings.HasPrefix(got, "[::1]:") {
		t.Errorf("flow client = %q, want the [::1] listener's peer", got)
	}
}

// TestProbeNamesWhatIsMissing: sluiced started without privileges says
// which capabilities it lacks and exits non-zero.
func TestProbeNamesWhatIsMissing(t *testing.T) {
	testenv.RequireRoot(t) // to switch to nobody
	bin := testenv.Binaries(t)
	dir, err := os.MkdirTemp("", "sluice-probe-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	cfg := filepath.Join(dir, "sluiced.hcl")
	os.WriteFile(cfg, []byte("cgroup = \"x\"\ndata_dir = \"/tmp\"\nlog {\n  format = \"text\"\n}\n"), 0o644)
	cmd := exec.Command(filepath.Join(bin, "sluiced"), "--config", cfg)
	uid := nobody(t)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("sluiced as nobody started: %s", out)
	}
	for _, want := range []string{"this machine cannot run sluiced", "not root: CAP_BPF is missing", "CAP_NET_ADMIN is missing"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sluiced as nobody: output lacks %q:\n%s", want, out)
		}
	}
}
