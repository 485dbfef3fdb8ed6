// Command demokube runs a private Kubernetes API server for the README's
// demo and the benchmark: testenv.StartKube's kube-apiserver v1.37.2 and
// etcd on 127.0.0.1, with the fake kubelet behind its one node (exec'd
// commands run on this machine, as demokube's user, in the kubelet's
// directory). It sets up what a CI job deploys to: namespaces ci and app,
// service account ci/deployer bound to cluster-admin, an Opaque secret
// app/app (a password and an owner's email) and a Running pod app/web.
//
// It prints shell assignments on the first line, then serves until
// SIGINT or SIGTERM, when it stops every process it started and removes
// what it wrote below -dir:
//
//	KUBE_URL    the API server, https://127.0.0.1:PORT
//	KUBE_CA     the cluster's CA certificate (PEM)
//	KUBE_ADMIN  an admin kubeconfig (system:masters), for setup and checks
//	KUBE_TOKEN  a file holding a service account token of ci/deployer,
//	            valid for an hour: a k8s target's token_file (0600)
//	KUBE_DIRECT a kubeconfig straight to the API server with that token,
//	            namespace app: what the benchmark's direct mode uses
//	KUBECTL     kubectl v1.37.2, from the same build
//
//	demokube -dir DIR
//
// The programs come from scripts/build-kube.sh's cache (testenv.KubeBin);
// demokube never builds them, and fails saying so when they are missing.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/sluicehq/sluice/internal/testenv"
)

func main() {
	fs := flag.NewFlagSet("demokube", flag.ExitOnError)
	dir := fs.String("dir", "", "directory for the cluster's files (removed at exit; required)")
	fs.Parse(os.Args[1:])
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "demokube: -dir is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "demokube: %v\n", err)
		os.Exit(1)
	}
	p := testenv.NewProgram("demokube", *dir)

	// A signal during startup stops what has started so far.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		p.Exit(0)
	}()

	k := testenv.StartKube(p, testenv.KubeOptions{})
	k.Namespace(p, "ci")
	k.Namespace(p, "app")
	k.ServiceAccount(p, "ci", "deployer")
	k.Apply(p, `apiVersion: rbac.authorization.k8s.io/v1
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
	k.Secret(p, "app", "app", map[string]string{"password": "hunter2-prod-database-password", "owner": "ops@example.com"})
	k.Pod(p, "app", "web")

	token := k.Token(p, "ci", "deployer")
	tokenFile := filepath.Join(p.TempDir(), "deployer.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		p.Fatal(err)
	}
	direct := testenv.Kubeconfig(p, k.URL, k.CAPEM, token, testenv.KubeconfigOptions{
		Path: filepath.Join(filepath.Dir(tokenFile), "direct.kubeconfig"), Namespace: "app",
	})

	fmt.Printf("KUBE_URL=%s KUBE_CA=%s KUBE_ADMIN=%s KUBE_TOKEN=%s KUBE_DIRECT=%s KUBECTL=%s\n",
		k.URL, k.CAFile, k.AdminKubeconfig, tokenFile, direct, k.Kubectl)
	select {} // until a signal: the goroutine above exits
}
