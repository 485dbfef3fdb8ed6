package e2e

// The tests here need, besides root: OpenSSH's sshd and ssh, git and bash
// (scripts/install-deps.sh installs them). Their undecoded flows are k8s
// flows of clients that do not start TLS towards Sluice's CA (these
// servers speak first, so the client sends nothing), and ssh to targets
// without a credential for Sluice to log in with. Servers listen on the
// real ports 22 and 6443, where the embedded default ruleset's "*:22" and
// "*:6443" targets catch them, on a test host in a network namespace the
// test creates, so a machine's own sshd or Kubernetes API server on those
// ports is no obstacle.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/internal/testenv"
)

// needPrivileged skips under -short (fails under SLUICE_E2E=required):
// these tests start a daemon, servers and a network namespace.
func needPrivileged(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t) // skips under -short, even with SLUICE_E2E=required
}

const notInspected = "flow not inspected: relaying it opaquely"

// listenIn listens on h's address and port inside h's network namespace.
func listenIn(t *testing.T, h *testenv.Host, port int) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get own netns: %v", err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(h.Netns)
	if err != nil {
		t.Fatalf("open netns %s: %v", h.Netns, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatalf("enter netns %s: %v", h.Netns, err)
	}
	l, lerr := net.Listen("tcp", net.JoinHostPort(h.Addr.String(), strconv.Itoa(port)))
	if err := netns.Set(orig); err != nil {
		// The thread stays locked and ends with the goroutine.
		t.Fatalf("return to own netns: %v", err)
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		t.Fatalf("listen in %s: %v", h, lerr)
	}
	return l
}

// bannerServer is a TCP server that greets with a line and then echoes
// each line back. It counts the connections it accepted.
type bannerServer struct {
	addr     string
	banner   string
	accepted atomic.Int64
}

// startBannerServer serves on h's port. It answers from the test's
// process; only its listening socket lives in h's namespace.
func startBannerServer(t *testing.T, h *testenv.Host, port int, banner string) *bannerServer {
	t.Helper()
	l := listenIn(t, h, port)
	s := &bannerServer{addr: l.Addr().String(), banner: banner}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				fmt.Fprintf(c, "%s\n", banner)
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s\n", sc.Text())
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return s
}

// bashTCP is a job that connects with bash's /dev/tcp (connect(2) from
// the shell itself), sends "ping" and prints what came back.
func bashTCP(host string, port int) []string {
	return []string{"bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d && printf 'ping\n' >&3 && read -r banner <&3 && read -r echo <&3 && echo "$banner|$echo"`, host, port)}
}

// closedByPeer is what bashAwaitClose prints when the connection was
// accepted and then closed before anything arrived.
const closedByPeer = "connected, then closed with nothing received"

// bashAwaitClose is a job that connects with bash's /dev/tcp, sends
// nothing and waits up to 10 seconds for a line: it prints closedByPeer
// when the other end closes first, what it received, or that the
// connection stayed open.
func bashAwaitClose(host string, port int) []string {
	return []string{"bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/%d || exit 2
IFS= read -r -t 10 line <&3; s=$?
if [ $s -eq 0 ] || [ -n "$line" ]; then echo "received: $line"
elif [ $s -gt 128 ]; then echo "still open after 10s"
else echo %q; fi`, host, port, closedByPeer)}
}

// runIn runs argv inside the cgroup with extra environment.
func runIn(t *testing.T, cg *testenv.Cgroup, env []string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd, done := cg.Command(ctx, argv[0], argv[1:]...)
	defer done()
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// flowLine waits for the "flow" log line of target.
func flowLine(t *testing.T, d *testenv.Daemon, target string) testenv.LogLine {
	t.Helper()
	return d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("target") == target })
}

// TestUndecodedDefaultRelays: under the embedded default ruleset, a job's
// git clone over ssh from a real sshd on port 22 and its connection to a
// port-6443 (kubernetes target, k8s) server both work. Each flow is
// logged as not inspected, the flow log has its bytes both ways, and the
// session is recorded with its metadata.
func TestUndecodedDefaultRelays(t *testing.T) {
	needPrivileged(t)
	cg := testenv.NewCgroup(t)
	h := testenv.NewHost(t)
	// A real sshd on port 22 of the test host, where the default
	// ruleset's "*:22" target catches it; root logs in with the job's key.
	key := testenv.NewSSHKey(t)
	srv := testenv.StartSSHD(t, testenv.SSHDOptions{Host: h.Addr.String(), Netns: h.Netns, Users: []string{"root"}, AuthorizedKeys: []ssh.PublicKey{key.Public}})
	repo := srv.GitRepo(t, "root", "repo.git")
	kube := startBannerServer(t, h, 6443, "k8s-test-server")
	sshHost, kubeHost := h.Addr.String(), h.Addr.String()
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg}) // the embedded default ruleset

	clone := filepath.Join(t.TempDir(), "clone")
	out, err := runIn(t, cg, []string{"GIT_SSH_COMMAND=" + srv.SSHCommand(key.Path)}, "git", "clone", "-q", "root@"+sshHost+":repo.git", clone)
	if err != nil {
		t.Fatalf("git clone over ssh from the cgroup under the default ruleset: %v\n%s", err, out)
	}
	if head, err := exec.Command("git", "-C", clone, "rev-parse", "HEAD").CombinedOutput(); err != nil || strings.TrimSpace(string(head)) != repo.Head {
		t.Fatalf("cloned repository's HEAD: %v: %q, want %s", err, head, repo.Head)
	}
	out, err = runIn(t, cg, nil, bashTCP(kubeHost, 6443)...)
	if err != nil || strings.TrimSpace(out) != "k8s-test-server|ping" {
		t.Fatalf("connection to %s:6443 from the cgroup: %v: %q", kubeHost, err, out)
	}

	for _, tt := range []struct{ target, protocol, dst, comm string }{
		{"ssh", "ssh", sshHost + ":22", "ssh"},
		{"kubernetes", "k8s", kubeHost + ":6443", "bash"},
	} {
		l := d.WaitLog(t, notInspected, func(l testenv.LogLine) bool { return l.String("target") == tt.target })
		if l["@level"] != "info" || l.String("protocol") != tt.protocol || l.String("orig_dst") != tt.dst || l.String("comm") != tt.comm {
			t.Errorf("%s: not-inspected line %v, want info with protocol %s, orig_dst %s, comm %s", tt.target, l, tt.protocol, tt.dst, tt.comm)
		}
		f := flowLine(t, d, tt.target)
		from, _ := strconv.Atoi(f.String("bytes_from_client"))
		to, _ := strconv.Atoi(f.String("bytes_to_client"))
		if f["@level"] != "info" || f.String("inspected") != "false" || f.String("undecoded") != "relay" || from <= 0 || to <= 0 || f.String("orig_dst") != tt.dst {
			t.Errorf("%s: flow line %v, want info, inspected=false, undecoded=relay, bytes both ways, orig_dst %s", tt.target, f, tt.dst)
		}
		if tt.target == "kubernetes" && (from != len("ping\n") || to != len("k8s-test-server\nping\n")) {
			t.Errorf("kubernetes flow bytes %d from client, %d to client; want exactly %d and %d", from, to, len("ping\n"), len("k8s-test-server\nping\n"))
		}
	}
	if n := kube.accepted.Load(); n != 1 {
		t.Errorf("the port-6443 server accepted %d connections, want 1", n)
	}

	// Each flow is a sealed session with its metadata.
	sessions := waitSealed(t, d, 2, 5*time.Second)
	for _, s := range sessions {
		if s.Bytes <= 0 || s.End.IsZero() || s.PID == 0 || (s.Target != "ssh" && s.Target != "kubernetes") {
			t.Errorf("session %+v: want bytes, an end, a pid and target ssh or kubernetes", s)
		}
	}

	// Status and doctor say the targets whose flows this build cannot
	// decode are relayed, not refused: ssh (no credential), and the
	// kubernetes target's flows of clients that do not trust Sluice's
	// CA (it is decoded for the others).
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	relayed := map[string]bool{}
	for _, tg := range st.Targets {
		switch {
		case tg.Decoded && tg.Undecoded == "":
			continue
		case tg.Decoded:
			if tg.Protocol != "k8s" || tg.Undecoded != "relay" || tg.Mode != "decoded" {
				t.Errorf("status target %+v: want a k8s target decoded, relaying the flows it cannot decode", tg)
			}
		case tg.Undecoded != "relay" || tg.Mode != "relayed opaquely (undecoded)":
			t.Errorf("status target %+v: want relayed opaquely (undecoded)", tg)
		}
		relayed[tg.Name] = true
	}
	if !relayed["ssh"] || !relayed["kubernetes"] {
		t.Errorf("status targets %+v: want ssh and kubernetes relayed undecoded", st.Targets)
	}
	out, _ = d.Sluice(t, "doctor", "--config", d.Config)
	if !strings.Contains(out, "relayed without inspection: ") || !strings.Contains(out, "ssh (ssh: the target has no credential for Sluice to log in to the host with), kubernetes (k8s: the job's client does not trust Sluice's CA") ||
		strings.Contains(out, "refused, since they cannot be decoded") {
		t.Errorf("sluice doctor does not list ssh and kubernetes as relayed without inspection, and nothing as refused:\n%s", out)
	}
}

// refuseRules is an operator's ruleset naming k8s and ssh targets
// without saying what to do while they cannot be decoded.
func refuseRules(kubeAddr, sshAddr string) string {
	return fmt.Sprintf(`target "kube" {
  protocol = "k8s"
  address  = [%q]
}

target "git" {
  protocol = "ssh"
  address  = [%q]
}

policy "ci" {
  targets = ["*"]
}

default {
  action = "deny"
}
`, kubeAddr, sshAddr)
}

// TestUndecodedOperatorRefuses: an operator's ruleset that leaves
// undecoded at its default refuses k8s and ssh flows: the real ssh client
// prints the refusal in its protocol's terms; k8s has no way to say so
// before decoding (its client speaks TLS first), so its connection is
// closed with nothing sent. The daemon logs each refusal at warn naming
// the rule, the servers never see a connection, and sluice doctor lists
// the targets.
func TestUndecodedOperatorRefuses(t *testing.T) {
	needPrivileged(t)
	cg := testenv.NewCgroup(t)
	h := testenv.NewHost(t)
	kube := startBannerServer(t, h, 6443, "k8s-test-server")
	gitSrv := startBannerServer(t, h, 22, "SSH-2.0-test")
	sshHost, kubeHost := h.Addr.String(), h.Addr.String()
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: refuseRules(kube.addr, gitSrv.addr)})

	out, err := runIn(t, cg, nil, bashAwaitClose(kubeHost, 6443)...)
	if err != nil || strings.TrimSpace(out) != closedByPeer {
		t.Errorf("connection to %s:6443 from the cgroup: %v: %q, want %q", kubeHost, err, out, closedByPeer)
	}
	out, err = runIn(t, cg, nil, "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "git@"+sshHost, "true")
	want := "Received disconnect from " + sshHost + " port 22:1: sluice: connection refused by rule target/git/undecoded: the target has no credential for Sluice to log in to the host with, and target git refuses flows it cannot inspect"
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("ssh from the cgroup: %v: %q, want it to contain %q", err, out, want)
	}

	why := map[string]string{"kube": "the job's client sent nothing within 1s", "git": "the target has no credential for Sluice to log in to the host with"}
	for _, target := range []string{"kube", "git"} {
		rule := "target/" + target + "/undecoded"
		l := d.WaitLog(t, "flow refused: it cannot be decoded", func(l testenv.LogLine) bool { return l.String("target") == target })
		if l["@level"] != "warn" || l.String("rule") != rule || !strings.Contains(l.String("reason"), why[target]) {
			t.Errorf("%s: refusal line %v, want warn naming rule %s", target, l, rule)
		}
		f := flowLine(t, d, target)
		if f["@level"] != "warn" || f.String("rule") != rule || !strings.Contains(f.String("error"), "refused by rule "+rule) {
			t.Errorf("%s: flow line %v, want warn with the rule and the refusal", target, f)
		}
	}
	if a, b := kube.accepted.Load(), gitSrv.accepted.Load(); a != 0 || b != 0 {
		t.Errorf("the servers accepted %d (k8s) and %d (ssh) connections; a refused flow must not reach them", a, b)
	}

	out, _ = d.Sluice(t, "doctor", "--config", d.Config)
	if !strings.Contains(out, "refused, since they cannot be decoded: kube (k8s: the job's client does not trust Sluice's CA (its TLS server name is not kubernetes.sluice.internal, which a kubeconfig from sluice kubeconfig sends); rule target/kube/undecoded), git (ssh: the target has no credential for Sluice to log in to the host with; rule target/git/undecoded)") {
		t.Errorf("sluice doctor does not list the refused targets:\n%s", out)
	}
}

// TestUndecodedRefuseMonitorMode: in monitor mode a refusal is logged and
// the flow relayed.
func TestUndecodedRefuseMonitorMode(t *testing.T) {
	needPrivileged(t)
	cg := testenv.NewCgroup(t)
	h := testenv.NewHost(t)
	kube := startBannerServer(t, h, 6443, "k8s-test-server")
	kubeHost := h.Addr.String()
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: "mode = \"monitor\"\n" + refuseRules(kube.addr, "127.0.0.1:1")})

	out, err := runIn(t, cg, nil, bashTCP(kubeHost, 6443)...)
	if err != nil || strings.TrimSpace(out) != "k8s-test-server|ping" {
		t.Fatalf("connection to %s:6443 in monitor mode: %v: %q", kubeHost, err, out)
	}
	l := d.WaitLog(t, "flow would be refused (monitor mode): it cannot be decoded", nil)
	if l["@level"] != "warn" || l.String("rule") != "target/kube/undecoded" {
		t.Errorf("monitor-mode line %v, want warn naming target/kube/undecoded", l)
	}
	d.WaitLog(t, notInspected, nil)
	if f := flowLine(t, d, "kube"); f["@level"] != "info" || f.String("bytes_to_client") != strconv.Itoa(len("k8s-test-server\nping\n")) {
		t.Errorf("flow line %v, want a served flow with its bytes", f)
	}
}
