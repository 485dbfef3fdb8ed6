package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	authenticationv1 "k8s.io/api/authentication/v1"
)

// The users every Kube's token file defines (--token-auth-file).
const (
	// KubeAdminUser is in group system:masters: RBAC allows it anything.
	KubeAdminUser = "sluice-admin"
	// KubeUser has no role binding: RBAC allows it only what
	// system:authenticated may do (discovery, self-subject reviews)
	// until a test binds it a role.
	KubeUser = "ci-user"
)

// KubeNode is the name of the Node every Kube registers for its fake
// kubelet; Kube.Pod binds pods to it.
const KubeNode = "sluice-test-node"

// Kube is a real Kubernetes API server the test started: kube-apiserver
// and etcd v1.37 (built by scripts/build-kube.sh), both on 127.0.0.1, with
// token and client-certificate authentication, RBAC, TokenRequest for
// service accounts, and a fake kubelet (Kubelet) behind the one Node, so
// that exec, attach, port-forward and logs reach something. No controller
// manager or scheduler runs: nothing creates service accounts, schedules
// pods, runs containers or fills the aggregated cluster roles (admin,
// edit and view are empty: bind a role of the test's own); Pod binds a pod
// to the node and reports it Running itself.
//
// Everything is stopped and removed at cleanup. A Kube belongs to the test
// that started it; its methods may be called from the test's goroutines.
type Kube struct {
	// URL is https://127.0.0.1:PORT, the API server's address.
	URL  string
	Host string // 127.0.0.1
	Port int

	// CAPEM is the PEM certificate of the CA that signed the API server's
	// serving certificate (for 127.0.0.1, ::1, localhost, kubernetes and
	// kubernetes.default.svc) and the kubelet's; CAFile holds it.
	CAPEM  []byte
	CAFile string
	// ClientCAPEM is the CA the API server trusts for client
	// certificates (--client-ca-file); ClientCAFile holds it. ClientCert
	// and ClientCertKubeconfig issue certificates from it.
	ClientCAPEM  []byte
	ClientCAFile string

	// AdminToken authenticates as KubeAdminUser, UserToken as KubeUser.
	// Never log them.
	AdminToken string
	UserToken  string
	// AdminKubeconfig and UserKubeconfig are kubeconfig files with the
	// tokens above and URL, readable by the test's user only.
	AdminKubeconfig string
	UserKubeconfig  string

	// Kubectl is kubectl v1.37 from the same build as the server.
	Kubectl string
	// Bin holds kube-apiserver, etcd and kubectl.
	Bin string
	// Dir holds the certificates, keys, token file, etcd's data and the
	// logs (etcd.log, kube-apiserver.log); it is removed at cleanup.
	Dir string

	// Client is a client-go clientset authenticated as KubeAdminUser.
	Client kubernetes.Interface
	// Kubelet is the fake kubelet of KubeNode.
	Kubelet *Kubelet

	ca, clientCA *kubeCA
	etcd, server *kubeProcess
}

// KubeOptions tune StartKube. The zero value is what most tests want.
type KubeOptions struct {
	// ServerArgs are extra kube-apiserver flags, after StartKube's own:
	// for a flag given twice, a single value's last one wins, and list
	// values (--disable-admission-plugins) add up.
	ServerArgs []string
}

// KubeBin returns the directory holding kube-apiserver, etcd and kubectl:
// SLUICE_KUBE_BIN when set, or else scripts/build-kube.sh's cache entry
// for the versions internal/testenv/kubetools pins. It never builds
// them (about 20 minutes on 2 cores, more than go test's default
// timeout): scripts/install-deps.sh does, once per version.
func KubeBin() (string, error) {
	dir, err := cachedBuild("SLUICE_KUBE_BIN", "build-kube.sh", "kube-apiserver, etcd and kubectl are")
	if err != nil {
		return "", err
	}
	for _, p := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return "", fmt.Errorf("no %s in %s: run scripts/build-kube.sh", p, dir)
		}
	}
	return dir, nil
}

// repoRoot is the repository's root directory, found from this file's
// path as RepoFile does.
func repoRoot() string {
	_, self, _, _ := runtime.Caller(0) // internal/testenv/kube.go
	return filepath.Join(filepath.Dir(self), "..", "..")
}

// StartKube starts etcd, the fake kubelet and kube-apiserver, registers
// KubeNode, and returns once the API server's /readyz answers ok. It
// needs no root, but skips under go test -short, like every test that
// starts servers, and skips when the programs are not built (KubeBin)
// unless SLUICE_E2E=required, which fails instead.
func StartKube(t testing.TB, o KubeOptions) *Kube {
	t.Helper()
	if testing.Short() {
		t.Skip("starts kube-apiserver and etcd: not run under -short")
	}
	bin, err := KubeBin()
	Need(t, err == nil, fmt.Sprint(err))
	dir := t.TempDir()
	k := &Kube{
		Host:       "127.0.0.1",
		Kubectl:    filepath.Join(bin, "kubectl"),
		Bin:        bin,
		Dir:        dir,
		AdminToken: RandName("admin-") + RandName(""),
		UserToken:  RandName("user-") + RandName(""),
	}
	start := time.Now()
	k.writeCredentials(t)

	// The kubelet first: the API server is told its CA, and the node
	// registered below points at its port.
	k.Kubelet = startKubelet(t, k.ca, k.clientCA, filepath.Join(dir, "kubelet"))
	k.startEtcd(t)
	k.startServer(t, o)

	k.AdminKubeconfig = Kubeconfig(t, k.URL, k.CAPEM, k.AdminToken, KubeconfigOptions{Path: filepath.Join(dir, "admin.kubeconfig")})
	k.UserKubeconfig = Kubeconfig(t, k.URL, k.CAPEM, k.UserToken, KubeconfigOptions{Path: filepath.Join(dir, "user.kubeconfig")})
	cfg, err := clientcmd.BuildConfigFromFlags("", k.AdminKubeconfig)
	if err != nil {
		t.Fatalf("load %s: %v", k.AdminKubeconfig, err)
	}
	k.Client, err = kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("make a client: %v", err)
	}
	k.registerNode(t)
	t.Logf("kube-apiserver ready at %s in %v", k.URL, time.Since(start).Round(time.Millisecond))
	return k
}

// writeCredentials makes the CAs, the serving and kubelet-client
// certificates, the service account key and the token file.
func (k *Kube) writeCredentials(t testing.TB) {
	t.Helper()
	var err error
	if k.ca, err = newKubeCA("sluice test kubernetes CA"); err != nil {
		t.Fatal(err)
	}
	if k.clientCA, err = newKubeCA("sluice test kubernetes client CA"); err != nil {
		t.Fatal(err)
	}
	k.CAPEM, k.ClientCAPEM = k.ca.certPEM, k.clientCA.certPEM
	k.CAFile, k.ClientCAFile = k.path("ca.crt"), k.path("client-ca.crt")
	writeFile(t, k.CAFile, string(k.CAPEM), 0o644)
	writeFile(t, k.ClientCAFile, string(k.ClientCAPEM), 0o644)

	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 0, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	k.writePair(t, k.ca, serving, "apiserver")
	// The API server shows this to the kubelet, which checks it against
	// the client CA.
	kubeletClient := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	k.writePair(t, k.clientCA, kubeletClient, "apiserver-kubelet-client")

	// TokenRequest signs service account tokens with this key.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, k.path("sa.key"), string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})), 0o600)

	// token,user,uid,"group,group"
	tokens := fmt.Sprintf("%s,%s,%s-uid,\"system:masters\"\n%s,%s,%s-uid\n",
		k.AdminToken, KubeAdminUser, KubeAdminUser, k.UserToken, KubeUser, KubeUser)
	writeFile(t, k.path("tokens.csv"), tokens, 0o600)
}

// writePair issues tmpl from ca and writes name.crt and name.key in Dir.
func (k *Kube) writePair(t testing.TB, ca *kubeCA, tmpl *x509.Certificate, name string) {
	t.Helper()
	certPEM, keyPEM, err := ca.issue(tmpl)
	if err != nil {
		t.Fatalf("issue %s certificate: %v", name, err)
	}
	writeFile(t, k.path(name+".crt"), string(certPEM), 0o644)
	writeFile(t, k.path(name+".key"), string(keyPEM), 0o600)
}

func (k *Kube) path(name string) string { return filepath.Join(k.Dir, name) }

// startEtcd starts etcd with its data in Dir/etcd, its client and peer
// URLs on free ports of 127.0.0.1, and waits until /health says true.
func (k *Kube) startEtcd(t testing.TB) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		client := "http://" + net.JoinHostPort(k.Host, strconv.Itoa(FreePort(t, k.Host)))
		peer := "http://" + net.JoinHostPort(k.Host, strconv.Itoa(FreePort(t, k.Host)))
		data := k.path("etcd")
		os.RemoveAll(data)
		p := startKubeProcess(t, k.path("etcd.log"), filepath.Join(k.Bin, "etcd"),
			"--name=sluice-test", "--data-dir="+data,
			"--listen-client-urls="+client, "--advertise-client-urls="+client,
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
			"--initial-cluster=sluice-test="+peer, "--initial-cluster-state=new",
			// A test's data need not survive a crash.
			"--unsafe-no-fsync", "--log-level=warn")
		healthy := func() bool {
			resp, err := http.Get(client + "/health")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK && bytes.Contains(b, []byte(`"health":"true"`))
		}
		switch err := p.waitFor(30*time.Second, healthy); {
		case err == nil:
			k.etcd = p
			k.etcd.url = client
			return
		case strings.Contains(p.log(), "address already in use"):
			p.stop()
			continue
		default:
			p.stop()
			t.Fatalf("etcd: %v\n%s", err, p.log())
		}
	}
	t.Fatal("etcd: no free ports after 5 attempts")
}

// startServer starts kube-apiserver on a free port of 127.0.0.1 and waits
// until /readyz answers ok.
func (k *Kube) startServer(t testing.TB, o KubeOptions) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		k.Port = FreePort(t, k.Host)
		k.URL = "https://" + net.JoinHostPort(k.Host, strconv.Itoa(k.Port))
		args := []string{
			"--etcd-servers=" + k.etcd.url,
			"--bind-address=" + k.Host, "--advertise-address=" + k.Host,
			"--secure-port=" + strconv.Itoa(k.Port),
			// Nothing is written to /var/run/kubernetes.
			"--cert-dir=" + k.path("certs"),
			"--tls-cert-file=" + k.path("apiserver.crt"), "--tls-private-key-file=" + k.path("apiserver.key"),
			"--client-ca-file=" + k.ClientCAFile,
			"--token-auth-file=" + k.path("tokens.csv"),
			"--authorization-mode=Node,RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + k.path("sa.key"),
			"--service-account-signing-key-file=" + k.path("sa.key"),
			"--service-cluster-ip-range=10.0.0.0/24",
			// No endpoints for the kubernetes service: nothing but the
			// test reaches the server, and at 127.0.0.1.
			"--endpoint-reconciler-type=none",
			// The ServiceAccount admission plugin refuses pods whose
			// service account does not exist, and no controller creates
			// the namespaces' default ones.
			"--disable-admission-plugins=ServiceAccount",
			// How the server reaches the fake kubelet: its node's
			// InternalIP, its certificate checked against the CA, and a
			// client certificate of its own.
			"--kubelet-preferred-address-types=InternalIP",
			"--kubelet-certificate-authority=" + k.CAFile,
			"--kubelet-client-certificate=" + k.path("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + k.path("apiserver-kubelet-client.key"),
			"--profiling=false",
		}
		args = append(args, o.ServerArgs...)
		p := startKubeProcess(t, k.path("kube-apiserver.log"), filepath.Join(k.Bin, "kube-apiserver"), args...)
		switch err := p.waitFor(2*time.Minute, k.ready); {
		case err == nil:
			k.server = p
			return
		case strings.Contains(p.log(), "address already in use"):
			p.stop()
			continue
		default:
			p.stop()
			t.Fatalf("kube-apiserver: %v\n%s", err, tail(p.log(), 60))
		}
	}
	t.Fatal("kube-apiserver: no free port after 5 attempts")
}

// ready reports whether the API server's /readyz answers ok.
func (k *Kube) ready() bool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(k.CAPEM)
	c := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	defer c.CloseIdleConnections()
	req, err := http.NewRequest("GET", k.URL+"/readyz", nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+k.AdminToken)
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && string(b) == "ok"
}

// registerNode creates KubeNode with the fake kubelet's address and port
// and a Ready condition, as a kubelet registers itself. No node
// controller runs, so it stays Ready.
func (k *Kube) registerNode(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: KubeNode, Labels: map[string]string{
		"kubernetes.io/hostname": KubeNode, "kubernetes.io/os": "linux",
	}}}
	created, err := k.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("register node %s: %v", KubeNode, err)
	}
	now := metav1.Now()
	created.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: k.Kubelet.Host},
			{Type: corev1.NodeHostName, Address: KubeNode},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.Kubelet.Port)}},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "fake kubelet of testenv.StartKube", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: runtime.GOARCH,
			ContainerRuntimeVersion: "fake://0",
		},
	}
	// The node declares no features (status.declaredFeatures): without
	// ExtendWebSocketsToKubelet, the API server translates a client's
	// WebSocket exec and attach (v5.channel.k8s.io) and port-forward
	// tunnel into SPDY towards the kubelet, which is all the fake one
	// speaks (a real kubelet that declares it translates them itself).
	if _, err := k.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set node %s's status: %v", KubeNode, err)
	}
}

// Command returns kubectl with --kubeconfig kubeconfig and args, its
// discovery cache in Dir. The caller runs it.
func (k *Kube) Command(kubeconfig string, args ...string) *exec.Cmd {
	cmd := exec.Command(k.Kubectl, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECACHEDIR="+k.path("kubectl-cache"))
	return cmd
}

// Run runs kubectl as KubeAdminUser and returns its standard output; it
// fails t, with kubectl's standard error, when kubectl fails.
func (k *Kube) Run(t testing.TB, args ...string) string {
	t.Helper()
	return k.run(t, nil, args...)
}

// Apply runs kubectl apply as KubeAdminUser on manifest (YAML or JSON,
// several documents allowed) and returns kubectl's output.
func (k *Kube) Apply(t testing.TB, manifest string) string {
	t.Helper()
	return k.run(t, strings.NewReader(manifest), "apply", "-f", "-")
}

func (k *Kube) run(t testing.TB, stdin io.Reader, args ...string) string {
	t.Helper()
	cmd := k.Command(k.AdminKubeconfig, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Namespace creates namespace name (one that exists is left as it is).
func (k *Kube) Namespace(t testing.TB, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := k.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// Secret creates an Opaque secret in namespace ns with data.
func (k *Kube) Secret(t testing.TB, ns, name string, data map[string]string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Type: corev1.SecretTypeOpaque, StringData: data}
	created, err := k.Client.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create secret %s/%s: %v", ns, name, err)
	}
	return created
}

// ServiceAccount creates service account name in namespace ns (one that
// exists is left as it is). No controller creates the namespaces'
// "default" accounts: a test that wants one makes it here.
func (k *Kube) ServiceAccount(t testing.TB, ns, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := k.Client.CoreV1().ServiceAccounts(ns).Create(context.Background(), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create service account %s/%s: %v", ns, name, err)
	}
}

// Token returns a token for service account ns/name, valid for an hour,
// from the TokenRequest API (what `kubectl create token` asks for).
func (k *Kube) Token(t testing.TB, ns, name string) string {
	t.Helper()
	hour := int64(3600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}
	got, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for %s/%s: %v", ns, name, err)
	}
	return got.Status.Token
}

// Pod creates pod name in namespace ns on KubeNode, with one container
// "app" (image busybox, which never runs), and reports it Running and
// Ready in its status, as the kubelet would. Commands that exec or attach
// to it run on this machine, as the test's user (see Kubelet).
func (k *Kube) Pod(t testing.TB, ns, name string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			// No scheduler runs: the pod is bound at creation.
			NodeName:   KubeNode,
			Containers: []corev1.Container{{Name: "app", Image: "busybox", Command: []string{"sleep", "infinity"}}},
		},
	}
	created, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    k.Kubelet.Host,
		PodIP:     k.Kubelet.Host,
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "busybox", ImageID: "fake://busybox", ContainerID: "fake://" + ns + "_" + name + "_app",
			Ready: true, Started: &[]bool{true}[0],
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	running, err := k.Client.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("report pod %s/%s running: %v", ns, name, err)
	}
	return running
}

// KubeconfigOptions are the optional parts of the kubeconfig Kubeconfig
// writes.
type KubeconfigOptions struct {
	// Path is where to write it; by default a new file in a t.TempDir.
	Path string
	// TLSServerName is the name the client checks the server's
	// certificate for (tls-server-name), and sends as SNI, instead of the
	// server URL's host.
	TLSServerName string
	// Namespace is the context's default namespace.
	Namespace string
	// ProxyURL is the cluster's proxy-url (http, https or socks5).
	ProxyURL string
	// ClientCertPEM and ClientKeyPEM authenticate the user with a client
	// certificate (client-certificate-data, client-key-data), instead of
	// or as well as the token.
	ClientCertPEM, ClientKeyPEM []byte
}

// Kubeconfig writes a kubeconfig with one cluster (server, trusting
// caPEM), one user (bearer token; none when token is "") and one current
// context, and returns its path. At most one KubeconfigOptions may be
// given. The file is mode 0600, owned by the test's user.
func Kubeconfig(t testing.TB, server string, caPEM []byte, token string, extra ...KubeconfigOptions) string {
	t.Helper()
	var o KubeconfigOptions
	switch len(extra) {
	case 0:
	case 1:
		o = extra[0]
	default:
		t.Fatal("Kubeconfig: at most one KubeconfigOptions")
	}
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "kubeconfig")
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sluice-test"] = &clientcmdapi.Cluster{
		Server: server, CertificateAuthorityData: caPEM, TLSServerName: o.TLSServerName, ProxyURL: o.ProxyURL,
	}
	cfg.AuthInfos["sluice-test"] = &clientcmdapi.AuthInfo{
		Token: token, ClientCertificateData: o.ClientCertPEM, ClientKeyData: o.ClientKeyPEM,
	}
	cfg.Contexts["sluice-test"] = &clientcmdapi.Context{Cluster: "sluice-test", AuthInfo: "sluice-test", Namespace: o.Namespace}
	cfg.CurrentContext = "sluice-test"
	if err := clientcmd.WriteToFile(*cfg, o.Path); err != nil {
		t.Fatalf("write kubeconfig %s: %v", o.Path, err)
	}
	return o.Path
}

// ClientCert issues a client certificate from the client CA for user
// (the certificate's common name) in groups (its organisations), as the
// API server reads them, valid for a day. It returns the certificate and
// its key, PEM.
func (k *Kube) ClientCert(t testing.TB, user string, groups ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := k.clientCA.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		t.Fatalf("issue a client certificate for %s: %v", user, err)
	}
	return certPEM, keyPEM
}

// ClientCertKubeconfig writes a kubeconfig for server (trusting caPEM)
// that authenticates as user in groups with a client certificate from
// ClientCert (mutual TLS, no token), and returns its path. Pass k.URL and
// k.CAPEM to reach the API server directly.
func (k *Kube) ClientCertKubeconfig(t testing.TB, server string, caPEM []byte, user string, groups ...string) string {
	t.Helper()
	certPEM, keyPEM := k.ClientCert(t, user, groups...)
	return Kubeconfig(t, server, caPEM, "", KubeconfigOptions{ClientCertPEM: certPEM, ClientKeyPEM: keyPEM})
}

// RESTConfig returns a client-go configuration for the API server with
// token as the bearer token.
func (k *Kube) RESTConfig(token string) *rest.Config {
	return &rest.Config{Host: k.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: k.CAPEM}}
}

// kubeCA is a test certificate authority: an ECDSA P-256 key and its
// self-signed certificate, valid for a day.
type kubeCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

func newKubeCA(name string) (*kubeCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("make CA %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &kubeCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// issue signs tmpl (its subject, names and extended key usages) with a
// new ECDSA P-256 key, valid for a day, and returns both, PEM.
func (ca *kubeCA) issue(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = randSerial()
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// kubeProcess is etcd or kube-apiserver: a process group the test
// started, logging into a file, killed if the test binary dies first
// (Pdeathsig) and stopped at cleanup.
type kubeProcess struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has been waited for
	logPath string
	url     string // etcd's client URL
}

// startKubeProcess starts path with args, its output appended to
// logPath, and registers its stop at cleanup; on a failed test, the log's
// tail goes into the test's output.
func startKubeProcess(t testing.TB, logPath, path string, args ...string) *kubeProcess {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(path), err)
	}
	p := &kubeProcess{cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s:\n%s", filepath.Base(logPath), tail(p.log(), 40))
		}
	})
	return p
}

// waitFor polls cond every 100 ms until it holds, the process exits or d
// passes.
func (p *kubeProcess) waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", filepath.Base(p.cmd.Path), p.cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", filepath.Base(p.cmd.Path), d)
		}
	}
	return nil
}

// stop sends SIGTERM to the process group and kills it after 10 s. It
// may be called again.
func (p *kubeProcess) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	stopGroup(p.cmd, p.done, syscall.SIGTERM, 10*time.Second)
}

func (p *kubeProcess) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
