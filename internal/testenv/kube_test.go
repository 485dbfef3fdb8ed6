package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// TestKube starts a real kube-apiserver with its fake kubelet and drives
// it with kubectl v1.37 as a CI job would: namespaces, a secret, a pod,
// exec into it, and a service account token. It needs the programs
// scripts/build-kube.sh builds (no root); it skips under -short.
func TestKube(t *testing.T) {
	k := StartKube(t, KubeOptions{})

	if out := k.Run(t, "get", "ns", "-o", "name"); !strings.Contains(out, "namespace/default") {
		t.Errorf("kubectl get ns: no default namespace in\n%s", out)
	}
	if out := k.Run(t, "version", "-o", "json"); !strings.Contains(out, `"gitVersion": "v1.37.2"`) {
		t.Errorf("kubectl version: want client and server v1.37.2, got\n%s", out)
	}

	k.Namespace(t, "ci")
	k.Run(t, "-n", "ci", "create", "secret", "generic", "db", "--from-literal=password=hunter2")
	b64 := k.Run(t, "-n", "ci", "get", "secret", "db", "-o", "jsonpath={.data.password}")
	if pw, _ := base64.StdEncoding.DecodeString(b64); string(pw) != "hunter2" {
		t.Errorf("secret ci/db password = %q (base64 %q), want hunter2", pw, b64)
	}

	k.Pod(t, "ci", "web")
	if out := k.Run(t, "-n", "ci", "get", "pod", "web", "-o", "jsonpath={.status.phase} {.spec.nodeName}"); out != "Running "+KubeNode {
		t.Errorf("pod ci/web: phase and node %q, want Running %s", out, KubeNode)
	}

	t.Run("exec", func(t *testing.T) {
		before := len(k.Kubelet.Requests())
		if out := k.Run(t, "-n", "ci", "exec", "web", "--", "echo", "hello"); out != "hello\n" {
			t.Errorf("kubectl exec web -- echo hello: %q, want %q", out, "hello\n")
		}
		reqs := k.Kubelet.Requests()[before:]
		if len(reqs) != 1 || !strings.HasPrefix(reqs[0].Path, "/exec/ci/web/app") {
			t.Fatalf("kubelet requests for one exec: %+v", reqs)
		}
		// The client speaks WebSocket (v5.channel.k8s.io); the node
		// declares no ExtendWebSocketsToKubelet, so the API server
		// translates to SPDY.
		if reqs[0].Upgrade != "SPDY/3.1" {
			t.Errorf("the API server reached the kubelet with Upgrade %q, want SPDY/3.1", reqs[0].Upgrade)
		}
	})

	t.Run("exec stdin and exit code", func(t *testing.T) {
		cmd := k.Command(k.AdminKubeconfig, "-n", "ci", "exec", "-i", "web", "--", "sh", "-c", "cat; exit 3")
		cmd.Stdin = strings.NewReader("line one\nline two\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if stdout.String() != "line one\nline two\n" {
			t.Errorf("stdout %q, want the input back (stderr %q)", stdout.String(), stderr.String())
		}
		if code := cmd.ProcessState.ExitCode(); code != 3 {
			t.Errorf("kubectl exec exit code %d (%v), want 3; stderr %q", code, err, stderr.String())
		}
	})

	t.Run("exec tty", func(t *testing.T) {
		// kubectl asks for a remote terminal only when its own stdin is
		// one: it runs on a pseudo-terminal of the test's, 30 rows by 100
		// columns, which the remote terminal takes on.
		ptmx, pts, err := openKubeletPTY()
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		setWinsize(ptmx, remotecommand.TerminalSize{Width: 100, Height: 30})
		// kubectl sends the size once the streams are up, so the command
		// may start before it arrives, as on a real kubelet: it waits
		// for it, for up to 5 s.
		script := `test -t 0 || exit 9; for i in $(seq 50); do [ "$(stty size)" = "30 100" ] && break; sleep 0.1; done; stty size`
		cmd := k.Command(k.AdminKubeconfig, "-n", "ci", "exec", "-it", "web", "--", "sh", "-c", script)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pts.Close()
		var out bytes.Buffer
		copied := make(chan struct{})
		go func() { io.Copy(&out, ptmx); close(copied) }() // ends with EIO when kubectl exits
		err = cmd.Wait()
		<-copied
		if err != nil || !strings.Contains(out.String(), "30 100") {
			t.Errorf("kubectl exec -it: %v, output %q, want the terminal size 30 100", err, out.String())
		}
	})

	t.Run("attach", func(t *testing.T) {
		// The kubelet's container echoes its stdin, as cat would.
		cmd := k.Command(k.AdminKubeconfig, "-n", "ci", "attach", "-i", "web", "-c", "app")
		cmd.Stdin = strings.NewReader("ping\n")
		out, err := cmd.Output()
		if err != nil || string(out) != "ping\n" {
			t.Errorf("kubectl attach -i: %v, output %q, want ping", err, out)
		}
	})

	t.Run("logs", func(t *testing.T) {
		k.Kubelet.SetLog("ci", "web", "app", "started\nserving\n")
		if out := k.Run(t, "-n", "ci", "logs", "web"); out != "started\nserving\n" {
			t.Errorf("kubectl logs: %q", out)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		// A server on this machine stands for the pod's: the kubelet
		// forwards to 127.0.0.1.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
		port := l.Addr().(*net.TCPAddr).Port
		cmd := k.Command(k.AdminKubeconfig, "-n", "ci", "port-forward", "--address=127.0.0.1", "pod/web", ":"+strconv.Itoa(port))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		// "Forwarding from 127.0.0.1:LOCAL -> PORT"
		line, err := bufio.NewReader(stdout).ReadString('\n')
		var local int
		if _, serr := fmt.Sscanf(line, "Forwarding from 127.0.0.1:%d", &local); err != nil || serr != nil {
			t.Fatalf("kubectl port-forward printed %q (%v); stderr %q", line, err, stderr.String())
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(local), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "through the tunnel")
		got := make([]byte, len("through the tunnel"))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "through the tunnel" {
			t.Errorf("echo through kubectl port-forward: %q, %v; stderr %q", got, err, stderr.String())
		}
	})

	t.Run("token", func(t *testing.T) {
		k.ServiceAccount(t, "ci", "deployer")
		tok := strings.TrimSpace(k.Run(t, "-n", "ci", "create", "token", "deployer"))
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("kubectl create token: not a JWT: %q", tok)
		}
		claims, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Sub string `json:"sub"`
		}
		json.Unmarshal(claims, &c)
		if c.Sub != "system:serviceaccount:ci:deployer" {
			t.Errorf("token subject %q, want system:serviceaccount:ci:deployer", c.Sub)
		}
		// The token authenticates: the server says who it is.
		kc := Kubeconfig(t, k.URL, k.CAPEM, tok)
		out, err := k.Command(kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
		if err != nil || string(out) != "system:serviceaccount:ci:deployer" {
			t.Errorf("kubectl auth whoami with the token: %v %q", err, out)
		}
	})

	t.Run("unprivileged user", func(t *testing.T) {
		out, err := k.Command(k.UserKubeconfig, "-n", "ci", "get", "secrets").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Forbidden") {
			t.Errorf("%s listing secrets: %v %q, want Forbidden", KubeUser, err, out)
		}
		// Not the view cluster role: it is aggregated, and no controller
		// manager runs to fill it.
		k.Run(t, "-n", "ci", "create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
		k.Run(t, "-n", "ci", "create", "rolebinding", "ci-pod-reader", "--role=pod-reader", "--user="+KubeUser)
		// The authorizer sees the binding once its informer has it.
		WaitFor(t, 10*time.Second, KubeUser+" to list pods in ci", func() bool {
			out, err = k.Command(k.UserKubeconfig, "-n", "ci", "get", "pods", "-o", "name").CombinedOutput()
			return err == nil
		})
		if strings.TrimSpace(string(out)) != "pod/web" {
			t.Errorf("%s listing pods: %q, want pod/web", KubeUser, out)
		}
	})

	t.Run("client certificate", func(t *testing.T) {
		kc := k.ClientCertKubeconfig(t, k.URL, k.CAPEM, "cert-user", "system:masters")
		out, err := k.Command(kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").CombinedOutput()
		if err != nil || string(out) != "cert-user" {
			t.Errorf("kubectl auth whoami with a client certificate: %v %q", err, out)
		}
	})

	t.Run("client-go", func(t *testing.T) {
		if _, err := k.Client.CoreV1().Secrets("ci").Get(context.Background(), "db", metav1.GetOptions{}); err != nil {
			t.Errorf("get secret ci/db with Client: %v", err)
		}
		user, err := kubernetes.NewForConfig(k.RESTConfig(k.UserToken))
		if err != nil {
			t.Fatal(err)
		}
		_, err = user.CoreV1().Secrets("ci").Get(context.Background(), "db", metav1.GetOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("get secret ci/db as %s: %v, want Forbidden", KubeUser, err)
		}
	})

	t.Run("apply", func(t *testing.T) {
		k.Apply(t, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: ci\ndata:\n  mode: fast\n")
		if out := k.Run(t, "-n", "ci", "get", "configmap", "settings", "-o", "jsonpath={.data.mode}"); out != "fast" {
			t.Errorf("configmap ci/settings mode %q, want fast", out)
		}
	})

	// What the servers cost, for CI's sizing.
	for _, p := range []*kubeProcess{k.server, k.etcd} {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
				t.Logf("%s %s", filepath.Base(p.cmd.Path), strings.Join(strings.Fields(line), " "))
			}
		}
	}
}
