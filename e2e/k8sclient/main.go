// Command k8sclient is a client-go program for the Kubernetes tests and
// benchmark: it runs as a CI job would, with a kubeconfig, and prints
// what it got as JSON lines.
//
//	k8sclient check -kubeconfig F -namespace NS -pod P   get, list and watch, in protobuf and JSON
//	k8sclient bench -kubeconfig F -namespace NS -pod P -n 500   timed gets of one pod
//	k8sclient exec -kubeconfig F -namespace NS -pod P CMD...    run CMD in the pod over SPDY (client-go's SPDY executor)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8sclient check|bench [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	ns := fs.String("namespace", "default", "namespace")
	pod := fs.String("pod", "", "pod to get")
	n := fs.Int("n", 500, "bench: requests")
	protobuf := fs.Bool("protobuf", true, "ask for protobuf, as client-go's typed clients can")
	fs.Parse(os.Args[2:])
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail("kubeconfig", err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit
	if *protobuf {
		cfg.ContentType = "application/vnd.kubernetes.protobuf"
		cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	switch os.Args[1] {
	case "check":
		check(ctx, cfg, *ns, *pod)
	case "bench":
		bench(ctx, cfg, *ns, *pod, *n)
	case "exec":
		execSPDY(ctx, cfg, *ns, *pod, fs.Args())
	default:
		fail("usage", fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

// execSPDY runs cmd in the pod's container "app" over SPDY, the
// protocol kubectl used before WebSocket and client-go programs still
// use, with the command's stdout and stderr passed through.
func execSPDY(ctx context.Context, cfg *rest.Config, ns, pod string, cmd []string) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail("client", err)
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "app", Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		fail("spdy executor", err)
	}
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: os.Stdout, Stderr: os.Stderr}); err != nil {
		fail("exec", err)
	}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "k8sclient: %s: %v\n", what, err)
	os.Exit(1)
}

func out(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// check gets the pod, lists services (neither needs masking, so protobuf
// passes), lists and watches the namespace's secrets (masked), and prints
// what it read.
func check(ctx context.Context, cfg *rest.Config, ns, pod string) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail("client", err)
	}
	p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		fail("get pod", err)
	}
	out(map[string]any{"op": "get pod", "name": p.Name, "node": p.Spec.NodeName})
	svcs, err := cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		fail("list services", err)
	}
	out(map[string]any{"op": "list services", "items": len(svcs.Items)})
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fail("list secrets", err)
	}
	out(map[string]any{"op": "list secrets", "data": secretData(secrets.Items)})
	timeout := int64(5)
	w, err := cs.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: "0", TimeoutSeconds: &timeout})
	if err != nil {
		fail("watch secrets", err)
	}
	var seen []corev1.Secret
	for ev := range w.ResultChan() {
		if s, ok := ev.Object.(*corev1.Secret); ok {
			seen = append(seen, *s)
			if len(seen) == len(secrets.Items) {
				break
			}
		} else if st, ok := ev.Object.(*metav1.Status); ok {
			out(map[string]any{"op": "watch secrets", "error": st.Message})
			w.Stop()
			return
		}
	}
	w.Stop()
	out(map[string]any{"op": "watch secrets", "data": secretData(seen)})
}

// secretData is every secret's data, name/key -> value.
func secretData(items []corev1.Secret) map[string]string {
	m := map[string]string{}
	for _, s := range items {
		for k, v := range s.Data {
			m[s.Name+"/"+k] = string(v)
		}
	}
	return m
}

// bench gets the pod n times, one request at a time, and prints the
// latencies' median and 90th percentile in microseconds and the rate.
func bench(ctx context.Context, cfg *rest.Config, ns, pod string, n int) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fail("client", err)
	}
	// One warm-up request opens the connection.
	if _, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{}); err != nil {
		fail("get pod", err)
	}
	lat := make([]time.Duration, 0, n)
	start := time.Now()
	for range n {
		t0 := time.Now()
		if _, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{}); err != nil {
			fail("get pod", err)
		}
		lat = append(lat, time.Since(t0))
	}
	total := time.Since(start)
	slices.Sort(lat)
	out(map[string]any{"op": "bench", "n": n, "p50_us": lat[n/2].Microseconds(), "p90_us": lat[n*9/10].Microseconds(),
		"per_second": float64(n) / total.Seconds()})
}
