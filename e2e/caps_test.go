package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/testenv"
)

// unitCaps returns the CapabilityBoundingSet of the packaged unit.
func unitCaps(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../packaging/sluiced.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapabilityBoundingSet="); ok {
			caps = append(caps, strings.Fields(v)...)
		}
	}
	if len(caps) == 0 {
		t.Fatal("the packaged unit sets no CapabilityBoundingSet")
	}
	return caps
}

// TestUnitCapabilities: sluiced holding only the capabilities the packaged
// unit grants (and no new privileges), as systemd would run it, starts,
// attaches, serves a decoded PostgreSQL session of a job running as
// another user (reading its /proc entries), denies a DROP, and gives its
// API socket to approvals.admin_group. Needs root and setpriv.
func TestUnitCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.Need(t, false, "setpriv (util-linux) is not installed")
	}
	caps := unitCaps(t)
	var names []string
	var want uint64
	for _, c := range caps {
		n := strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		names = append(names, "+"+n)
		bit, ok := capBits[c]
		if !ok {
			t.Fatalf("unknown capability %s in the unit", c)
		}
		want |= 1 << bit
	}
	set := "-all," + strings.Join(names, ",")

	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	bin := testenv.Binaries(t)
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules")
	if err := os.Mkdir(rules, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rules, "rules.hcl"), []byte(pgRules(pg.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	name, sock, logPath := testenv.RandName("t"), filepath.Join(dir, "api", "sluiced.sock"), filepath.Join(dir, "sluiced.log")
	conf := filepath.Join(dir, "sluiced.hcl")
	body := fmt.Sprintf("name = %q\ncgroup = %q\nproxy_port = %d\ndata_dir = %q\napi_socket = %q\nrules_dir = %q\n"+
		"approvals {\n  admin_group = \"nogroup\"\n}\nlog {\n  level = \"debug\"\n  format = \"json\"\n}\n",
		name, cg.Rel, testenv.FreePort(t, "127.0.0.1"), filepath.Join(dir, "data"), sock, rules)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// For uid 0, execve grants inheritable | bounding: restrict both, as
	// systemd's CapabilityBoundingSet does for a root service.
	cmd := exec.Command("setpriv", "--no-new-privs", "--inh-caps="+set, "--bounding-set="+set, "--",
		filepath.Join(bin, "sluiced"), "--config", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if out, err := exec.Command(filepath.Join(bin, "sluice"), "uninstall", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("sluice uninstall: %v\n%s", err, out)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("sluiced log:\n%s", b)
		}
	})

	deadline := time.Now().Add(20 * time.Second)
	for {
		var st api.Status
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := api.NewClient(sock).Get(ctx, "/v1/status", &st)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("sluiced with the unit's capabilities exited during start")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sluiced with the unit's capabilities did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := effectiveCaps(t, cmd.Process.Pid); got != want {
		t.Fatalf("sluiced's effective capabilities = %#x, want exactly the unit's %#x", got, want)
	}

	uid := nobody(t)
	out, pid, err := psqlIn(t, cg, uid, pg.PsqlArgs("", 0, "SELECT 41 + 1"))
	if err != nil || out != "42" {
		t.Fatalf("psql as uid %d through sluiced: %v: %q", uid, err, out)
	}
	out, _, _ = psqlIn(t, cg, uid, pg.PsqlArgs("", 0, "DROP TABLE pg_class"))
	if !strings.Contains(out, `denied by rule "ci/deny/no-drop"`) {
		t.Errorf("DROP through sluiced with the unit's capabilities:\n%s", out)
	}
	// CAP_SYS_PTRACE: the job process belongs to another user, yet its
	// executable is read from /proc.
	var flow map[string]any
	for deadline := time.Now().Add(5 * time.Second); flow == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(logPath)
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["@message"] == "flow" && fmt.Sprint(m["pid"]) == strconv.Itoa(pid) {
				flow = m
			}
		}
	}
	if flow == nil {
		t.Fatalf("no flow log line for pid %d", pid)
	}
	if exe, _ := flow["exe"].(string); filepath.Base(exe) != "psql" {
		t.Errorf("flow exe = %q: the daemon could not read the job's /proc/PID/exe", exe)
	}
	// CAP_CHOWN: the API socket belongs to the admin group.
	var st unix.Stat_t
	if err := unix.Stat(sock, &st); err != nil || st.Gid != 65534 || st.Mode&0o777 != 0o660 {
		t.Errorf("api socket gid %d mode %o (%v), want nogroup (65534) and 0660", st.Gid, st.Mode&0o777, err)
	}
}

// capBits are the capabilities a unit may name here.
var capBits = map[string]uint{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_BPF": unix.CAP_BPF,
}

// effectiveCaps reads a process's CapEff.
func effectiveCaps(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no CapEff line")
	return 0
}
