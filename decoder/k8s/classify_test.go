package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"

	"github.com/sluicehq/sluice/ruleset"
)

// readRequest parses a request line as the API server's HTTP server (Go's
// net/http) does, or reports why it does not parse.
func readRequest(method, target string) (*http.Request, error) {
	return http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: k8s\r\nUser-Agent: kubectl/v1.37.2\r\n\r\n")))
}

// mustResolve resolves a request line that must be accepted.
func mustResolve(t *testing.T, method, target string) *ruleset.K8sRequest {
	t.Helper()
	r, err := readRequest(method, target)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	k, err := resolve(r)
	if err != nil {
		t.Fatalf("resolve %s %s: %v", method, target, err)
	}
	return k
}

// checkRoundTrip checks that what Sluice forwards of an accepted request
// (its URL's RequestURI, the request line ReverseProxy writes) resolves
// again to what Sluice decided on: the API server sees the request Sluice
// judged, not another one.
func checkRoundTrip(t testing.TB, method string, r *http.Request, k *ruleset.K8sRequest) {
	t.Helper()
	uri := r.URL.RequestURI()
	r2, err := readRequest(method, uri)
	if err != nil {
		t.Fatalf("%s %s: the forwarded request line %q does not parse: %v", method, r.RequestURI, uri, err)
	}
	k2, err := resolve(r2)
	if err != nil {
		t.Fatalf("%s %s: the forwarded request line %q is refused: %v", method, r.RequestURI, uri, err)
	}
	if !reflect.DeepEqual(k, k2) {
		t.Fatalf("%s %s: forwarded as %q it resolves to\n%+v\nnot\n%+v", method, r.RequestURI, uri, *k2, *k)
	}
	info, err := infoFactory.NewRequestInfo(r2)
	if err != nil {
		t.Fatalf("%s %s: the API server cannot resolve the forwarded %q: %v", method, r.RequestURI, uri, err)
	}
	if info.Verb != k.Verb || info.Resource != k.Resource || info.Subresource != k.Subresource ||
		info.Namespace != k.Namespace || info.Name != k.Name || info.APIGroup != k.Group || info.IsResourceRequest != k.IsResource {
		t.Fatalf("%s %s: the API server resolves the forwarded %q to %+v, Sluice decided on %+v", method, r.RequestURI, uri, *info, *k)
	}
}

// kubectlRequests are the request shapes kubectl, helm and client-go send,
// with what the API server resolves each to.
var kubectlRequests = []struct {
	method, target string
	want           ruleset.K8sRequest
}{
	// kubectl get pod p -n a; get pods; get pods -A; get pods -w.
	{"GET", "/api/v1/namespaces/a/pods/p", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a", Name: "p"}},
	{"GET", "/api/v1/namespaces/a/pods?limit=500", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a"}},
	{"GET", "/api/v1/pods?limit=500", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "pods"}},
	{"GET", "/api/v1/namespaces/a/pods?resourceVersion=123&watch=true", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a"}},
	{"GET", "/api/v1/namespaces/a/pods?watch=1", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a"}},
	{"GET", "/api/v1/namespaces/a/pods?watch=false", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a"}},
	// The old /watch/ paths.
	{"GET", "/api/v1/watch/namespaces/a/secrets", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a"}},
	{"GET", "/api/v1/watch/secrets", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "secrets"}},
	{"GET", "/api/v1/watch/namespaces/a/secrets/s", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a", Name: "s"}},
	// A get by field selector (kubectl get secret s -w, informers on one object).
	{"GET", "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Ds&watch=true", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a", Name: "s"}},
	{"GET", "/api/v1/namespaces/a/secrets?labelSelector=app%3Dweb", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a"}},
	// HEAD is a get.
	{"HEAD", "/api/v1/namespaces/a/secrets/s", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a", Name: "s"}},
	// Writes.
	{"POST", "/api/v1/namespaces/a/pods?fieldManager=kubectl-client-side-apply", ruleset.K8sRequest{Verb: "create", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a"}},
	{"PUT", "/apis/apps/v1/namespaces/a/deployments/web", ruleset.K8sRequest{Verb: "update", IsResource: true, Group: "apps", Version: "v1", Resource: "deployments", Namespace: "a", Name: "web"}},
	{"PATCH", "/apis/apps/v1/namespaces/a/deployments/web?fieldManager=kubectl&force=true", ruleset.K8sRequest{Verb: "patch", IsResource: true, Group: "apps", Version: "v1", Resource: "deployments", Namespace: "a", Name: "web"}},
	{"DELETE", "/api/v1/namespaces/a/pods/p", ruleset.K8sRequest{Verb: "delete", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a", Name: "p"}},
	{"DELETE", "/api/v1/namespaces/a/pods?labelSelector=app%3Dweb", ruleset.K8sRequest{Verb: "deletecollection", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a"}},
	// Cluster-scoped resources.
	{"GET", "/api/v1/nodes", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "nodes"}},
	{"GET", "/api/v1/namespaces", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "namespaces"}},
	{"GET", "/api/v1/namespaces/a", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "namespaces", Namespace: "a", Name: "a"}},
	{"PUT", "/api/v1/namespaces/a/finalize", ruleset.K8sRequest{Verb: "update", IsResource: true, Version: "v1", Resource: "namespaces", Subresource: "finalize", Namespace: "a", Name: "a"}},
	{"POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", ruleset.K8sRequest{Verb: "create", IsResource: true, Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"}},
	{"DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", ruleset.K8sRequest{Verb: "delete", IsResource: true, Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles", Name: "admin"}},
	// Subresources.
	{"POST", "/api/v1/namespaces/a/pods/p/exec?command=sh&container=c&stdin=true&stdout=true&tty=true", ruleset.K8sRequest{Verb: "create", IsResource: true, Version: "v1", Resource: "pods", Subresource: "exec", Namespace: "a", Name: "p"}},
	{"GET", "/api/v1/namespaces/a/pods/p/exec?command=ls&command=-l&stdout=true", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "pods", Subresource: "exec", Namespace: "a", Name: "p"}},
	{"POST", "/api/v1/namespaces/a/pods/p/attach?container=c&stdin=true", ruleset.K8sRequest{Verb: "create", IsResource: true, Version: "v1", Resource: "pods", Subresource: "attach", Namespace: "a", Name: "p"}},
	{"POST", "/api/v1/namespaces/a/pods/p/portforward", ruleset.K8sRequest{Verb: "create", IsResource: true, Version: "v1", Resource: "pods", Subresource: "portforward", Namespace: "a", Name: "p"}},
	{"GET", "/api/v1/namespaces/a/pods/p/log?container=c&follow=true&tailLines=10", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "pods", Subresource: "log", Namespace: "a", Name: "p"}},
	{"GET", "/api/v1/namespaces/a/services/web:80/proxy/healthz", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "services", Subresource: "proxy", Namespace: "a", Name: "web:80"}},
	{"GET", "/api/v1/proxy/namespaces/a/pods/p/metrics", ruleset.K8sRequest{Verb: "proxy", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a", Name: "p"}},
	{"POST", "/api/v1/namespaces/a/pods/p/eviction", ruleset.K8sRequest{Verb: "create", IsResource: true, Version: "v1", Resource: "pods", Subresource: "eviction", Namespace: "a", Name: "p"}},
	{"PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale", ruleset.K8sRequest{Verb: "patch", IsResource: true, Group: "apps", Version: "v1", Resource: "deployments", Subresource: "scale", Namespace: "a", Name: "web"}},
	{"PUT", "/apis/apps/v1/namespaces/a/deployments/web/status", ruleset.K8sRequest{Verb: "update", IsResource: true, Group: "apps", Version: "v1", Resource: "deployments", Subresource: "status", Namespace: "a", Name: "web"}},
	{"PUT", "/api/v1/namespaces/a/status", ruleset.K8sRequest{Verb: "update", IsResource: true, Version: "v1", Resource: "namespaces", Subresource: "status", Namespace: "a", Name: "a"}},
	// CRD groups.
	{"GET", "/apis/cert-manager.io/v1/namespaces/a/certificates", ruleset.K8sRequest{Verb: "list", IsResource: true, Group: "cert-manager.io", Version: "v1", Resource: "certificates", Namespace: "a"}},
	{"PATCH", "/apis/argoproj.io/v1alpha1/namespaces/argo/applications/web/status", ruleset.K8sRequest{Verb: "patch", IsResource: true, Group: "argoproj.io", Version: "v1alpha1", Resource: "applications", Subresource: "status", Namespace: "argo", Name: "web"}},
	{"GET", "/apis/example.com/v1/widgets/w", ruleset.K8sRequest{Verb: "get", IsResource: true, Group: "example.com", Version: "v1", Resource: "widgets", Name: "w"}},
	// A trailing slash is the same request.
	{"GET", "/api/v1/namespaces/a/secrets/", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a"}},
	// Discovery and the server's own paths.
	{"GET", "/api", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/api/v1", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/apis", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/apis/apps", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/apis/apps/v1", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/version?timeout=32s", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/openapi/v3", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/openapi/v3/apis/apps/v1?hash=ABC", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/healthz", ruleset.K8sRequest{Verb: "get"}},
	{"GET", "/", ruleset.K8sRequest{Verb: "get"}},
	{"POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ruleset.K8sRequest{Verb: "create", IsResource: true, Group: "authorization.k8s.io", Version: "v1", Resource: "selfsubjectaccessreviews"}},
}

// TestResolveKubectl resolves the request shapes of kubectl and client-go
// as the API server does, and checks that each one, forwarded, is the
// request that was decided.
func TestResolveKubectl(t *testing.T) {
	for _, tc := range kubectlRequests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			r, err := readRequest(tc.method, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			k, err := resolve(r)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			want := tc.want
			want.Path, want.UserAgent = r.URL.Path, "kubectl/v1.37.2"
			if !reflect.DeepEqual(*k, want) {
				t.Errorf("resolve = %+v\nwant       %+v", *k, want)
			}
			checkRoundTrip(t, tc.method, r, k)
		})
	}
}

// TestResolveRefused: a request the API server could read another way
// than Sluice is refused, as a request error (a 400), before any rule.
func TestResolveRefused(t *testing.T) {
	for _, tc := range []struct{ method, target, why string }{
		{"GET", "/api/v1/namespaces/a/../b/secrets", "not clean"},
		{"GET", "/api/v1/namespaces/a/%2E%2E/b/secrets", "not clean"},
		{"GET", "//api/v1/secrets", "not clean"},
		{"GET", "/api//v1/secrets", "not clean"},
		{"GET", "/api/v1/secrets//", "not clean"},
		{"GET", "/api/v1/./secrets", "not clean"},
		{"GET", "/api/v1/secrets/.", "not clean"},
		{"GET", "/api/v1/namespaces/a/secrets%2Fx", "escaped slash"},
		{"GET", "/api/v1/namespaces/a/secrets%2fx", "escaped slash"},
		{"GET", "/api/v1/namespaces/a/secrets?watch=true&watch=false", "repeats watch"},
		{"GET", "/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Dx&fieldSelector=metadata.name%3Dy", "repeats fieldSelector"},
		{"GET", "/api/v1/namespaces/a/secrets?labelSelector=a&labelSelector=b", "repeats labelSelector"},
		{"GET", "/api/v1/namespaces/a/secrets?watch=true;watch=false", "does not parse"},
		{"GET", "/api/v1/namespaces/a/secrets?watch=%zz", "does not parse"},
		{"GET", "/api/v1/watch", "unable to determine"},
		{"GET", "/apis/apps/v1/proxy", "unable to determine"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			r, err := readRequest(tc.method, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			k, err := resolve(r)
			if !errors.Is(err, errRequest) {
				t.Fatalf("resolve = %+v, %v; want errRequest", k, err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}

// TestResolveOptions: a request Go's server reads with an absolute URI
// (a client talking to Sluice as a proxy) resolves by its path.
func TestResolveAbsoluteURI(t *testing.T) {
	k := mustResolve(t, "GET", "https://kubernetes.sluice.internal/api/v1/namespaces/a/secrets/s")
	if k.Verb != "get" || k.Resource != "secrets" || k.Namespace != "a" || k.Name != "s" || k.Path != "/api/v1/namespaces/a/secrets/s" {
		t.Errorf("resolve = %+v", *k)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		text string
		want ruleset.K8sRequest
	}{
		{"GET /api/v1/namespaces/a/pods", ruleset.K8sRequest{Verb: "list", IsResource: true, Version: "v1", Resource: "pods", Namespace: "a", Path: "/api/v1/namespaces/a/pods"}},
		{"/api/v1/namespaces/a/secrets/s", ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a", Name: "s", Path: "/api/v1/namespaces/a/secrets/s"}},
		{"  post   /api/v1/namespaces/a/pods/p/exec?command=sh  ", ruleset.K8sRequest{Verb: "create", IsResource: true, Version: "v1", Resource: "pods", Subresource: "exec", Namespace: "a", Name: "p", Path: "/api/v1/namespaces/a/pods/p/exec"}},
		{"GET /api/v1/secrets?watch=true", ruleset.K8sRequest{Verb: "watch", IsResource: true, Version: "v1", Resource: "secrets", Path: "/api/v1/secrets"}},
		{"DELETE /apis/apps/v1/namespaces/a/deployments", ruleset.K8sRequest{Verb: "deletecollection", IsResource: true, Group: "apps", Version: "v1", Resource: "deployments", Namespace: "a", Path: "/apis/apps/v1/namespaces/a/deployments"}},
		{"GET /version", ruleset.K8sRequest{Verb: "get", Path: "/version"}},
	} {
		st, err := Classify(tc.text)
		if err != nil {
			t.Errorf("Classify(%q): %v", tc.text, err)
			continue
		}
		if st.Kind != tc.want.Verb || st.K8s == nil || !reflect.DeepEqual(*st.K8s, tc.want) {
			t.Errorf("Classify(%q) = kind %q, %+v\nwant %+v", tc.text, st.Kind, st.K8s, tc.want)
		}
	}
	for _, text := range []string{"GET //api/v1/secrets", "GET /api/v1/namespaces/a/secrets%2Fx", "GET /api/v1/secrets?watch=1&watch=0"} {
		if _, err := Classify(text); !errors.Is(err, errRequest) {
			t.Errorf("Classify(%q) = %v, want errRequest", text, err)
		}
	}
	for _, text := range []string{"", "GET", "GET /a b c", "GET \x00"} {
		if st, err := Classify(text); err == nil {
			t.Errorf("Classify(%q) = %+v, want an error", text, st)
		}
	}
}

// isCleanPath reports whether p is a path the API server cannot read
// another way: absolute, without //, . or .. segments.
func isCleanPath(p string) bool {
	return p == "/" || (strings.HasPrefix(p, "/") && path.Clean(p) == strings.TrimSuffix(p, "/"))
}

func TestIsCleanPath(t *testing.T) {
	for _, tc := range kubectlRequests {
		k := mustResolve(t, tc.method, tc.target)
		if !isCleanPath(k.Path) {
			t.Errorf("%s: accepted path %q is not clean", tc.target, k.Path)
		}
	}
}

// Pod specs as kubectl sends them.
const (
	podJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"a"},
  "spec":{"initContainers":[{"name":"init","image":"busybox:1.36"}],
    "containers":[{"name":"app","image":"nginx:1.27","securityContext":{"privileged":true}},
                  {"name":"side","image":"envoy:v1.30","securityContext":{"privileged":false}}],
    "ephemeralContainers":[{"name":"debug","image":"debian:12"}],
    "volumes":[{"name":"root","hostPath":{"path":"/"}}],
    "hostNetwork":true}}`
	deploymentJSON = `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
  "spec":{"replicas":3,"template":{"metadata":{"labels":{"app":"web"}},
    "spec":{"containers":[{"name":"web","image":"ghcr.io/acme/web:1.2.3","env":[{"name":"image","value":"not-an-image"}]}]}}}}`
	cronJobJSON = `{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"backup"},
  "spec":{"schedule":"0 * * * *","jobTemplate":{"spec":{"template":{"spec":{
    "restartPolicy":"OnFailure",
    "containers":[{"name":"backup","image":"acme/backup:7","securityContext":{"privileged":true}}]}}}}}}`
	plainPodJSON = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"privileged":"true"},"annotations":{"hostNetwork":"true"}},
  "spec":{"containers":[{"name":"app","image":"nginx:1.27","securityContext":{"runAsNonRoot":true}}],
    "volumes":[{"name":"data","emptyDir":{}}],"hostNetwork":false}}`
)

// TestBodyFacts reads what rules see of the bodies kubectl, helm and
// client-go send: the kind, every image of a pod spec wherever the spec
// is, and its privileges.
func TestBodyFacts(t *testing.T) {
	type facts struct {
		Kind                              string
		Images                            []string
		Privileged, HostPath, HostNetwork bool
	}
	for _, tc := range []struct {
		name, ct, body string
		want           facts
	}{
		{"pod", "application/json", podJSON, facts{"Pod", []string{"busybox:1.36", "nginx:1.27", "envoy:v1.30", "debian:12"}, true, true, true}},
		{"pod charset", "application/json; charset=utf-8", plainPodJSON, facts{"Pod", []string{"nginx:1.27"}, false, false, false}},
		{"deployment template", "application/json", deploymentJSON, facts{"Deployment", []string{"ghcr.io/acme/web:1.2.3"}, false, false, false}},
		{"cronjob job template", "application/json", cronJobJSON, facts{"CronJob", []string{"acme/backup:7"}, true, false, false}},
		{"duplicate images once", "application/json", `{"kind":"Pod","spec":{"containers":[{"image":"a"},{"image":"b"},{"image":"a"}]}}`, facts{"Pod", []string{"a", "b"}, false, false, false}},
		{"pod security context is not a container's", "application/json", `{"kind":"Pod","spec":{"securityContext":{"runAsUser":0},"containers":[{"image":"a"}]}}`, facts{"Pod", []string{"a"}, false, false, false}},
		{"json patch image and host network", "application/json-patch+json",
			`[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil:latest"},{"op":"add","path":"/spec/hostNetwork","value":true}]`,
			facts{"", []string{"evil:latest"}, false, false, true}},
		{"json patch privileged", "application/json-patch+json",
			`[{"op":"add","path":"/spec/containers/0/securityContext/privileged","value":true}]`, facts{"", nil, true, false, false}},
		{"json patch container", "application/json-patch+json",
			`[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"x","image":"x:1","securityContext":{"privileged":true}}}]`, facts{"", []string{"x:1"}, true, false, false}},
		{"json patch containers list", "application/json-patch+json",
			`[{"op":"replace","path":"/spec/template/spec/initContainers","value":[{"name":"x","image":"x:2"}]}]`, facts{"", []string{"x:2"}, false, false, false}},
		{"json patch host path volume", "application/json-patch+json",
			`[{"op":"add","path":"/spec/template/spec/volumes/-","value":{"name":"r","hostPath":{"path":"/"}}}]`, facts{"", nil, false, true, false}},
		{"json patch host path field", "application/json-patch+json",
			`[{"op":"replace","path":"/spec/volumes/0/hostPath/path","value":"/etc"}]`, facts{"", nil, false, true, false}},
		{"json patch remove", "application/json-patch+json", `[{"op":"remove","path":"/spec/hostNetwork"}]`, facts{"", nil, false, false, false}},
		{"strategic merge patch", "application/strategic-merge-patch+json",
			`{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"web:2","securityContext":{"privileged":true}}],"hostNetwork":true}}}}`,
			facts{"", []string{"web:2"}, true, false, true}},
		{"kubectl debug ephemeral container", "application/strategic-merge-patch+json",
			`{"spec":{"ephemeralContainers":[{"name":"debugger-x","image":"busybox:1.36","securityContext":{"privileged":true},"stdin":true,"tty":true}]}}`,
			facts{"", []string{"busybox:1.36"}, true, false, false}},
		{"merge patch", "application/merge-patch+json", `{"spec":{"volumes":[{"name":"r","hostPath":{"path":"/var/run/docker.sock"}}]}}`, facts{"", nil, false, true, false}},
		{"apply yaml", "application/apply-patch+yaml", `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  template:
    spec:
      hostNetwork: true
      containers:
      - name: agent
        image: acme/agent:3
        securityContext:
          privileged: true
      volumes:
      - name: proc
        hostPath:
          path: /proc
`, facts{"DaemonSet", []string{"acme/agent:3"}, true, true, true}},
		{"yaml", "application/yaml", "kind: ConfigMap\ndata:\n  image: x\n", facts{"ConfigMap", nil, false, false, false}},
		{"no body", "", "  \n", facts{}},
		{"a string is not privileged", "application/json", `{"kind":"Pod","spec":{"hostNetwork":"true","containers":[{"image":"a","securityContext":{"privileged":"true"}}]}}`, facts{"Pod", []string{"a"}, false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k ruleset.K8sRequest
			if err := bodyFacts(tc.ct, []byte(tc.body), &k); err != nil {
				t.Fatalf("bodyFacts: %v", err)
			}
			// The images' order across container lists is checked by
			// TestBodyFactsImageOrder.
			got := facts{k.ObjectKind, sorted(k.Images), k.Privileged, k.HostPath, k.HostNetwork}
			tc.want.Images = sorted(tc.want.Images)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("bodyFacts = %+v\nwant        %+v", got, tc.want)
			}
		})
	}
}

func sorted(s []string) []string {
	if s == nil {
		return nil
	}
	return slices.Sorted(slices.Values(s))
}

// TestBodyFactsImageOrder: K8sRequest.Images is documented as the pod
// spec's images "in order"; the same body must give the same list every
// time (rules, recordings and sluice rules explain show it).
func TestBodyFactsImageOrder(t *testing.T) {

	var first []string
	for i := 0; i < 50; i++ {
		var k ruleset.K8sRequest
		if err := bodyFacts("application/json", []byte(podJSON), &k); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = k.Images
			continue
		}
		if !slices.Equal(k.Images, first) {
			t.Fatalf("call %d: images %q, first call %q", i, k.Images, first)
		}
	}
}

// TestBodyFactsJSONPatchCopy: a JSON patch's copy and move operations
// take their value from the object on the server, which Sluice does not
// see: one that lands on a field rules look at must be refused (or the
// field counted), else a rule on images or privileges is bypassed: copy
// a true (a pod template's enableServiceLinks defaults to true) onto a
// container's securityContext.privileged, or an image written earlier
// into an annotation onto a container's image.
func TestBodyFactsJSONPatchCopy(t *testing.T) {

	for _, tc := range []struct {
		name, patch string
		flagged     func(*ruleset.K8sRequest) bool
	}{
		{"copy onto privileged", `[{"op":"copy","from":"/spec/template/spec/enableServiceLinks","path":"/spec/template/spec/containers/0/securityContext/privileged"}]`,
			func(k *ruleset.K8sRequest) bool { return k.Privileged }},
		{"move onto hostNetwork", `[{"op":"move","from":"/spec/template/spec/automountServiceAccountToken","path":"/spec/template/spec/hostNetwork"}]`,
			func(k *ruleset.K8sRequest) bool { return k.HostNetwork }},
		{"copy onto an image", `[{"op":"copy","from":"/metadata/annotations/next","path":"/spec/template/spec/containers/0/image"}]`,
			func(*ruleset.K8sRequest) bool { return false }},
	} {
		var k ruleset.K8sRequest
		err := bodyFacts("application/json-patch+json", []byte(tc.patch), &k)
		if err == nil && !tc.flagged(&k) {
			t.Errorf("%s: accepted with %+v; want it refused (errRequest) or the field counted", tc.name, k)
		}
	}
}

// TestBodyFactsRefused: a body Sluice cannot read is refused, so a rule on
// images or privileges is never bypassed by sending something else.
func TestBodyFactsRefused(t *testing.T) {
	for _, tc := range []struct{ name, ct, body, why string }{
		{"malformed json", "application/json", `{"kind":"Pod",`, "JSON body does not parse"},
		{"two json values", "application/json", `{"kind":"ConfigMap"} {"kind":"Pod","spec":{"hostNetwork":true}}`, "more than one value"},
		{"json patch not a list", "application/json-patch+json", `{"op":"add"}`, "list of operations"},
		{"malformed yaml", "application/yaml", "kind: Pod\n  spec: [", "YAML body does not parse"},
		{"yaml duplicate key", "application/apply-patch+yaml", "kind: Pod\nspec:\n  hostNetwork: true\nspec:\n  hostNetwork: false\n", "YAML body does not parse"},
		{"cbor", "application/cbor", "\xd9\xd9\xf7\xa1dkindcPod", "not application/cbor"},
		{"text", "text/plain", "kind: Pod", "not text/plain"},
		{"no content type", "", `{"kind":"Pod"}`, "does not parse"},
		{"bad content type", "application/json;;", `{"kind":"Pod"}`, "does not parse"},
		{"protobuf without envelope", "application/vnd.kubernetes.protobuf", "\x0a\x02v1\x12\x03Pod", "protobuf body"},
		{"protobuf truncated", "application/vnd.kubernetes.protobuf", "k8s\x00\x0a\x10\x0a\x02v1", "protobuf body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k ruleset.K8sRequest
			err := bodyFacts(tc.ct, []byte(tc.body), &k)
			if !errors.Is(err, errRequest) {
				t.Fatalf("bodyFacts = %v (%+v), want errRequest", err, k)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("error %q does not say %q", err, tc.why)
			}
		})
	}
}

// encodeProtobuf encodes obj as client-go sends it with ContentType
// application/vnd.kubernetes.protobuf: the "k8s\0" envelope around a
// runtime.Unknown holding the object's apiVersion, kind and bytes.
func encodeProtobuf(t testing.TB, obj runtime.Object) []byte {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	if err := protobuf.NewSerializer(s, s).Encode(obj, &b); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b.Bytes(), []byte("k8s\x00")) {
		t.Fatalf("the serializer wrote no envelope: %q", b.Bytes()[:8])
	}
	return b.Bytes()
}

func TestBodyFactsProtobuf(t *testing.T) {
	yes := true
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "a"},
		Spec: corev1.PodSpec{
			HostNetwork:    true,
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox:1.36"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "nginx:1.27", SecurityContext: &corev1.SecurityContext{Privileged: &yes}},
			},
			Volumes: []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}},
		},
	}
	deploy := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "web", Image: "ghcr.io/acme/web:1.2.3"}},
		}}},
	}
	cron := &batchv1.CronJob{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"},
		Spec: batchv1.CronJobSpec{Schedule: "@hourly", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "b", Image: "acme/backup:7", SecurityContext: &corev1.SecurityContext{Privileged: &yes}}},
		}}}}},
	}
	role := &rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}, ObjectMeta: metav1.ObjectMeta{Name: "r"}}
	for _, tc := range []struct {
		name                              string
		obj                               runtime.Object
		kind                              string
		images                            []string
		privileged, hostPath, hostNetwork bool
	}{
		{"pod", pod, "Pod", []string{"busybox:1.36", "nginx:1.27"}, true, true, true},
		{"deployment", deploy, "Deployment", []string{"ghcr.io/acme/web:1.2.3"}, false, false, false},
		{"cronjob", cron, "CronJob", []string{"acme/backup:7"}, true, false, false},
		{"no pod spec", role, "ClusterRole", nil, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := encodeProtobuf(t, tc.obj)
			var k ruleset.K8sRequest
			if err := bodyFacts("application/vnd.kubernetes.protobuf", body, &k); err != nil {
				t.Fatalf("bodyFacts: %v", err)
			}
			if k.ObjectKind != tc.kind || !slices.Equal(sorted(k.Images), sorted(tc.images)) || k.Privileged != tc.privileged || k.HostPath != tc.hostPath || k.HostNetwork != tc.hostNetwork {
				t.Errorf("bodyFacts = kind %q images %q privileged %v hostPath %v hostNetwork %v", k.ObjectKind, k.Images, k.Privileged, k.HostPath, k.HostNetwork)
			}
			// The same object in JSON gives the same facts.
			j, err := json.Marshal(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			var kj ruleset.K8sRequest
			if err := bodyFacts("application/json", j, &kj); err != nil {
				t.Fatal(err)
			}
			if kj.ObjectKind != k.ObjectKind || !slices.Equal(sorted(kj.Images), sorted(k.Images)) || kj.Privileged != k.Privileged || kj.HostPath != k.HostPath || kj.HostNetwork != k.HostNetwork {
				t.Errorf("JSON facts %+v differ from protobuf facts %+v", kj, k)
			}
		})
	}
	// A pod spec kind with a body the serializer cannot decode is refused.
	body := encodeProtobuf(t, pod)
	var k ruleset.K8sRequest
	if err := bodyFacts("application/vnd.kubernetes.protobuf", body[:len(body)-3], &k); !errors.Is(err, errRequest) {
		t.Errorf("a truncated protobuf Pod: %v, want errRequest", err)
	}
}

func TestHasBody(t *testing.T) {
	for _, tc := range []struct {
		req  string
		want bool
	}{
		{"POST /api/v1/namespaces/a/pods", true},
		{"PUT /api/v1/namespaces/a/pods/p", true},
		{"PATCH /apis/apps/v1/namespaces/a/deployments/web", true},
		{"GET /api/v1/namespaces/a/pods", false},
		{"DELETE /api/v1/namespaces/a/pods/p", false},
		{"POST /apis/example.com/v1/other", true},
		{"POST /api", false},
	} {
		st, err := Classify(tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := hasBody(st.K8s); got != tc.want {
			t.Errorf("hasBody(%s) = %v, want %v", tc.req, got, tc.want)
		}
	}
}
