package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// The Kubernetes API through Sluice with the real kubectl (v1.37, built
// with the API server) and a client-go program, against a real
// kube-apiserver with etcd and a fake kubelet that runs exec'd commands
// on this machine. The job's kubeconfig is sluice kubeconfig's: Sluice's
// CA, Sluice's TLS server name and no credential. The target holds a
// service account's token (from the TokenRequest API), which Sluice
// presents for the job.

const k8sRules = `
target "cluster" {
  protocol    = "k8s"
  address     = [%q]
  upstream_ca = %q
  undecoded   = "relay"
  credential "deployer" {
    user       = "system:serviceaccount:ci:deployer"
    token_file = %q
    policies   = ["ci"]
  }
}
policy "ci" {
  targets = ["*"]
  when    = identity.repository == "acme/api"
  record  = "full"
  credential "deployer" {}
  deny "secrets-all-namespaces" {
    when   = k8s.resource == "secrets" && k8s.namespace == "" && contains(["get", "list", "watch"], k8s.verb)
    reason = "reading secrets across all namespaces"
  }
  deny "port-forward" {
    when   = k8s.subresource == "portforward"
    reason = "no tunnels from CI"
  }
  deny "privileged" {
    when   = k8s.privileged || k8s.host_network || k8s.host_path
    reason = "no privileged pods from CI"
  }
  hold "exec" {
    when      = contains(["exec", "attach"], k8s.subresource)
    approvers = ["local-admin"]
    timeout   = "60s"
    reason    = "exec into a pod needs a human"
  }
  hold "many-configmaps" {
    when      = k8s.resource == "configmaps" && result.rows > 3
    approvers = ["local-admin"]
    timeout   = "60s"
    reason    = "large listings need a human"
  }
  mask "secrets" {
    when    = !contains(["exec", "attach", "portforward", "proxy"], k8s.subresource)
    columns = ["secrets.data", "secrets.stringData"]
    detect  = ["email"]
  }
}
default { action = "deny" }
`

// secretValue is the value of the test's secret; maskedMarker is what
// must show instead.
const secretValue = "hunter2-prod-database-password"

type k8sEnv struct {
	t          *testing.T
	kube       *testenv.Kube
	d          *testenv.Daemon
	cg         *testenv.Cgroup
	is         *testenv.Issuer
	worker     string
	work       string
	kubeconfig string // sluice kubeconfig's, for the job
	// uid, when not 0, is the user the job runs as, with home home.
	uid  int
	home string
}

func startK8sEnv(t *testing.T) *k8sEnv {
	t.Helper()
	// The work directory is reachable by the job's user (TestK8sExec's
	// is not root); t.TempDir's parent is not.
	work, err := os.MkdirTemp("", "sluice-k8s-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	e := &k8sEnv{t: t, work: work}
	e.kube = testenv.StartKube(t, testenv.KubeOptions{})
	e.cg = testenv.NewCgroup(t)
	e.is = testenv.NewIssuer(t)
	e.worker = runnerWorker(t)
	os.Chmod(e.work, 0o755)

	k := e.kube
	k.Namespace(t, "ci")
	k.Namespace(t, "app")
	k.ServiceAccount(t, "ci", "deployer")
	k.Apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ci-deployer
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: deployer
  namespace: ci
`)
	k.Secret(t, "app", "app", map[string]string{"password": secretValue, "owner": "ops@example.com"})
	k.Pod(t, "app", "web")
	tokenFile := filepath.Join(e.work, "deployer.token")
	if err := os.WriteFile(tokenFile, []byte(k.Token(t, "ci", "deployer")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf(k8sRules, fmt.Sprintf("%s:%d", k.Host, k.Port), k.CAFile, tokenFile)
	e.d = testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: e.cg, Rules: rules, Body: identityBlock(e.is, "")})

	e.kubeconfig = filepath.Join(e.work, "kubeconfig")
	if out, err := e.d.Sluice(t, "kubeconfig", "--server", k.URL, "--data-dir", e.d.DataDir, "--namespace", "app", "-o", e.kubeconfig); err != nil {
		t.Fatalf("sluice kubeconfig: %v\n%s", err, out)
	}
	e.is.SetClaims(map[string]any{"sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api", "ref": "refs/heads/main", "run_id": "78"})
	return e
}

// job runs a shell command as the CI job of acme/api with the job's
// kubeconfig, and returns its combined output and error.
func (e *k8sEnv) job(command string) (string, error) {
	e.t.Helper()
	cmd, done := e.cg.Command(e.t.Context(), e.worker, "-c", command)
	defer done()
	cmd.Dir = e.work
	cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+e.is.TokenURL(),
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN="+e.is.RequestToken, "HOME="+e.work, "KUBECONFIG="+e.kubeconfig,
		"PATH="+filepath.Dir(e.kube.Kubectl)+":"+os.Getenv("PATH"))
	if e.uid != 0 {
		// A job that is not root, so that root may approve its holds.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(e.uid), Gid: uint32(e.uid)}
		cmd.Env = append(cmd.Env, "HOME="+e.home)
		cmd.Dir = e.home
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// background runs a job command without waiting: the returned function
// waits for it and returns its output.
func (e *k8sEnv) background(command string) func() (string, error) {
	e.t.Helper()
	var out string
	var err error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, err = e.job(command)
	}()
	return func() (string, error) { wg.Wait(); return out, err }
}

func TestK8sKubectl(t *testing.T) {
	e := startK8sEnv(t)

	out, err := e.job("kubectl get pods")
	if err != nil || !strings.Contains(out, "web") || !strings.Contains(out, "Running") {
		t.Fatalf("kubectl get pods: %v\n%s", err, out)
	}
	// The API server saw the injected service account, not the job.
	out, err = e.job("kubectl auth whoami -o jsonpath='{.status.userInfo.username}'")
	if err != nil || out != "system:serviceaccount:ci:deployer" {
		t.Errorf("kubectl auth whoami: %v\n%s", err, out)
	}
	out, err = e.job("kubectl get secrets -A")
	if err == nil || !strings.Contains(out, "Error from server (Forbidden): sluice: list secrets in all namespaces denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces") {
		t.Errorf("kubectl get secrets -A: %v\n%s", err, out)
	}
	// Masked, in YAML (from JSON, converted by kubectl) and as the
	// base64 value client tools decode.
	real64 := base64.StdEncoding.EncodeToString([]byte(secretValue))
	out, err = e.job("kubectl get secret app -o yaml")
	if err != nil || !strings.Contains(out, "password:") || strings.Contains(out, real64) || strings.Contains(out, "ops@example.com") {
		t.Errorf("kubectl get secret -o yaml: %v\n%s", err, out)
	}
	out, err = e.job("kubectl get secret app -o jsonpath='{.data.password}' | base64 -d")
	if err != nil || out == "" || strings.Contains(out, secretValue) {
		t.Errorf("the secret's password through Sluice: %v %q", err, out)
	}
	// The server's copy is untouched.
	if got := e.kube.Run(t, "get", "secret", "-n", "app", "app", "-o", "jsonpath={.data.password}"); got != real64 {
		t.Errorf("the secret on the server: %q", got)
	}
	// Server-side YAML (a client that asks for it) is masked too.
	out, err = e.job("curl -sS --cacert " + e.caFile() +
		" --connect-to " + kubeServerName() + ":" + fmt.Sprint(e.kube.Port) + ":" + e.kube.Host + ":" + fmt.Sprint(e.kube.Port) +
		" -H 'Accept: application/yaml' https://" + kubeServerName() + ":" + fmt.Sprint(e.kube.Port) + "/api/v1/namespaces/app/secrets/app")
	if err != nil || !strings.Contains(out, "kind: Secret") || strings.Contains(out, real64) {
		t.Errorf("a secret as YAML: %v\n%s", err, out)
	}

	// Create, list, delete.
	out, err = e.job("kubectl create configmap cfg --from-literal=mode=blue && kubectl get configmap cfg -o jsonpath='{.data.mode}' && kubectl delete configmap cfg")
	if err != nil || !strings.Contains(out, "configmap/cfg created") || !strings.Contains(out, "blue") || !strings.Contains(out, `configmap "cfg" deleted`) {
		t.Errorf("create, get and delete a configmap: %v\n%s", err, out)
	}
	// A privileged pod is refused on what its body says.
	out, err = e.job(`kubectl run root --image=busybox --overrides='{"spec":{"hostNetwork":true}}' --restart=Never`)
	if err == nil || !strings.Contains(out, "ci/deny/privileged") {
		t.Errorf("kubectl run with hostNetwork: %v\n%s", err, out)
	}
	// A listing over the hold's threshold waits for a human; denied, it
	// is a 403.
	for i := range 4 {
		e.kube.Run(t, "create", "configmap", "-n", "app", fmt.Sprintf("many-%d", i), "--from-literal=k=v")
	}
	wait := e.background("kubectl get configmaps")
	req := pendingHold(t, e.d)
	if req.Rule != "ci/hold/many-configmaps" {
		t.Errorf("pending request = %+v", req)
	}
	if out, err := e.d.Sluice(t, "deny", req.ID, "--socket", e.d.Socket); err != nil {
		t.Fatalf("sluice deny: %v\n%s", err, out)
	}
	if out, err := wait(); err == nil || !strings.Contains(out, "Forbidden") || !strings.Contains(out, "ci/hold/many-configmaps") {
		t.Errorf("the held listing, denied: %v\n%s", err, out)
	}
	// A pod's log is masked line by line by the detectors.
	e.kube.Kubelet.SetLog("app", "web", "app", "starting\nuser ops@example.com logged in\n")
	out, err = e.job("kubectl logs web")
	if err != nil || !strings.Contains(out, "starting\nuser ") || strings.Contains(out, "ops@example.com") {
		t.Errorf("kubectl logs: %v\n%s", err, out)
	}
	// Every request is in the recording, with its verdict and status.
	e.d.WaitLog(t, "statement denied", func(l testenv.LogLine) bool { return l.String("rule") == "ci/deny/secrets-all-namespaces" })
	var show string
	testenv.WaitFor(t, 15*time.Second, "a sealed k8s session recording kubectl get pods", func() bool {
		for _, s := range listSessions(t, e.d, "--target", "cluster") {
			if s.End.IsZero() {
				continue
			}
			out, err := e.d.Sluice(t, "sessions", "show", "--socket", e.d.Socket, s.ID)
			if err == nil && strings.Contains(out, "GET /api/v1/namespaces/app/pods") {
				show = out
				return true
			}
		}
		return false
	})
	if !strings.Contains(show, "requests ") {
		t.Errorf("sessions show:\n%s", show)
	}
}

// caFile is the daemon's CA, for curl.
func (e *k8sEnv) caFile() string {
	out, err := e.d.Sluice(e.t, "ca", "--data-dir", e.d.DataDir)
	if err != nil {
		e.t.Fatalf("sluice ca: %v\n%s", err, out)
	}
	f := filepath.Join(e.work, "sluice-ca.crt")
	pem, _, _ := strings.Cut(out, "-----END CERTIFICATE-----")
	os.WriteFile(f, []byte(pem+"-----END CERTIFICATE-----\n"), 0o644)
	return f
}

func kubeServerName() string { return "kubernetes.sluice.internal" }

func TestK8sExec(t *testing.T) {
	e := startK8sEnv(t)
	e.uid, e.home = nobody(t), filepath.Join(e.work, "home")
	os.Mkdir(e.home, 0o755)
	os.Chown(e.home, e.uid, e.uid)

	// Held, then approved: the command runs.
	wait := e.background("kubectl exec web -- echo hello-from-the-pod")
	req := pendingHold(t, e.d)
	if req.Rule != "ci/hold/exec" {
		t.Errorf("pending request = %+v", req)
	}
	if out, err := e.d.Sluice(t, "approve", req.ID, "--socket", e.d.Socket); err != nil {
		t.Fatalf("sluice approve: %v\n%s", err, out)
	}
	if out, err := wait(); err != nil || !strings.Contains(out, "hello-from-the-pod") {
		t.Errorf("approved exec: %v\n%s", err, out)
	}

	// Held, then denied: kubectl shows the 403.
	marker := filepath.Join(e.work, "exec-ran")
	wait = e.background("kubectl exec web -- touch " + marker)
	req = pendingHold(t, e.d)
	if out, err := e.d.Sluice(t, "deny", req.ID, "--socket", e.d.Socket); err != nil {
		t.Fatalf("sluice deny: %v\n%s", err, out)
	}
	if out, err := wait(); err == nil || !strings.Contains(out, "ci/hold/exec") {
		t.Errorf("denied exec: %v\n%s", err, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the denied exec ran")
	}

	// With a terminal (script(1) gives kubectl one): recorded as a
	// terminal, and exported to asciicast.
	wait = e.background("printf 'echo typed-$((6*7))\\nexit\\n' | script -qec 'kubectl exec -it web -- sh' /dev/null")
	req = pendingHold(t, e.d)
	if out, err := e.d.Sluice(t, "approve", req.ID, "--socket", e.d.Socket); err != nil {
		t.Fatalf("sluice approve: %v\n%s", err, out)
	}
	if out, err := wait(); err != nil || !strings.Contains(out, "typed-42") {
		t.Fatalf("exec -it: %v\n%s", err, out)
	}
	var cast string
	testenv.WaitFor(t, 15*time.Second, "a k8s session whose asciicast holds the terminal", func() bool {
		for _, s := range listSessions(t, e.d) {
			if s.Target != "cluster" || s.End.IsZero() {
				continue
			}
			out, err := e.d.Sluice(t, "export", s.ID, "--socket", e.d.Socket, "--format", "asciicast")
			if err == nil && strings.Contains(out, "typed-42") {
				cast = out
				return true
			}
		}
		return false
	})
	if !strings.HasPrefix(cast, `{"version":2`) {
		t.Errorf("asciicast: %s", cast)
	}
	// sessions show plays the exec's terminal back too.
	found := false
	for _, s := range listSessions(t, e.d, "--target", "cluster") {
		if out, err := e.d.Sluice(t, "sessions", "show", "--socket", e.d.Socket, s.ID); err == nil && strings.Contains(out, "typed-42") {
			found = true
		}
	}
	if !found {
		t.Error("no sessions show of the cluster's sessions shows the exec's terminal (typed-42)")
	}

	// Over SPDY (client-go's SPDY executor): held, approved, recorded.
	bin := buildK8sClient(t, e.work)
	wait = e.background(bin + " exec -namespace app -pod web sh -c 'echo spdy-says-$((6*7))'")
	req = pendingHold(t, e.d)
	if out, err := e.d.Sluice(t, "approve", req.ID, "--socket", e.d.Socket); err != nil {
		t.Fatalf("sluice approve: %v\n%s", err, out)
	}
	if out, err := wait(); err != nil || out != "spdy-says-42\n" {
		t.Errorf("exec over SPDY: %v\n%q", err, out)
	}
	testenv.WaitFor(t, 15*time.Second, "the SPDY exec's stdout in a session's transcript", func() bool {
		for _, s := range listSessions(t, e.d, "--target", "cluster") {
			if out, err := e.d.Sluice(t, "sessions", "show", "--socket", e.d.Socket, s.ID); err == nil && strings.Contains(out, "spdy-says-42") {
				return true
			}
		}
		return false
	})

	// port-forward is refused.
	out, err := e.job("kubectl port-forward pod/web 18080:80")
	if err == nil || !strings.Contains(out, "ci/deny/port-forward") {
		t.Errorf("kubectl port-forward: %v\n%s", err, out)
	}
}

// TestK8sClientGo: a client-go program that asks for protobuf gets it
// where nothing is masked, and masked JSON for secrets, listed and
// watched.
func TestK8sClientGo(t *testing.T) {
	e := startK8sEnv(t)
	bin := buildK8sClient(t, e.work)
	out, err := e.job(bin + " check -namespace app -pod web")
	if err != nil {
		t.Fatalf("k8sclient check: %v\n%s", err, out)
	}
	got := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			got[fmt.Sprint(m["op"])] = m
		}
	}
	if got["get pod"]["name"] != "web" {
		t.Errorf("get pod: %v", got["get pod"])
	}
	for _, op := range []string{"list secrets", "watch secrets"} {
		data, _ := got[op]["data"].(map[string]any)
		if len(data) == 0 || data["app/password"] == secretValue || data["app/password"] == nil || data["app/owner"] == "ops@example.com" {
			t.Errorf("%s: %v, want app/password and app/owner masked", op, got[op])
		}
	}
}

// buildK8sClient builds the client-go program into dir.
func buildK8sClient(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "k8sclient")
	if out, err := exec.Command("go", "build", "-o", path, "./k8sclient").CombinedOutput(); err != nil {
		t.Fatalf("build k8sclient: %v\n%s", err, out)
	}
	return path
}

// TestK8sOpaque: a kubeconfig that pins the cluster's own CA and logs in
// with a client certificate cannot be decoded; the target says relay, so
// its flow is relayed opaquely and recorded as metadata.
func TestK8sOpaque(t *testing.T) {
	e := startK8sEnv(t)
	mtls := e.kube.ClientCertKubeconfig(t, e.kube.URL, e.kube.CAPEM, "ops", "system:masters")
	os.Chmod(mtls, 0o644)
	out, err := e.job("kubectl --kubeconfig " + mtls + " get secrets -A")
	if err != nil || !strings.Contains(out, "app") {
		t.Fatalf("kubectl with its own client certificate: %v\n%s", err, out)
	}
	e.d.WaitLog(t, "flow not inspected: relaying it opaquely", func(l testenv.LogLine) bool {
		return strings.Contains(l.String("why"), "does not trust Sluice's CA")
	})
}
