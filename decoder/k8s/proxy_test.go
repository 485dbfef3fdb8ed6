package k8s

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// kubectl's Accept headers.
const (
	// kubectl get (human-readable output): a Table, else JSON.
	acceptTable = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
	// client-go with ContentType protobuf (controllers, kubectl's
	// discovery of some versions).
	acceptProtobuf = "application/vnd.kubernetes.protobuf, */*"
)

func TestRewriteAccept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		accept []string
		want   string
		toYAML bool
	}{
		{"kubectl table", []string{acceptTable}, "application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json", false},
		{"json", []string{"application/json"}, "application/json", false},
		{"none", nil, "application/json", false},
		{"protobuf only", []string{"application/vnd.kubernetes.protobuf"}, "application/json", false},
		{"protobuf table", []string{"application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io"}, "application/json", false},
		{"protobuf then anything", []string{acceptProtobuf}, "*/*", false},
		{"cbor", []string{"application/cbor"}, "application/json", false},
		{"yaml only", []string{"application/yaml"}, "application/json", true},
		{"yaml then json", []string{"application/yaml, application/json"}, "application/json", true},
		{"yaml and a table", []string{"application/yaml", "application/json;as=Table;v=v1;g=meta.k8s.io"}, "application/json;as=Table;v=v1;g=meta.k8s.io", false},
		{"yaml and anything", []string{"application/yaml, */*"}, "*/*", false},
		{"several headers", []string{"application/vnd.kubernetes.protobuf", "application/json;stream=watch"}, "application/json;stream=watch", false},
		{"garbage kept out", []string{"not a type, ;;, application/json"}, "application/json", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, a := range tc.accept {
				h.Add("Accept", a)
			}
			toYAML := rewriteAccept(h)
			if got := h.Values("Accept"); len(got) != 1 || got[0] != tc.want {
				t.Errorf("Accept = %q, want %q", got, tc.want)
			}
			if toYAML != tc.toYAML {
				t.Errorf("toYAML = %v, want %v", toYAML, tc.toYAML)
			}
		})
	}
}

func TestRefusedHeaders(t *testing.T) {
	for _, tc := range []struct {
		header, value string
		refused       bool
	}{
		{"Impersonate-User", "system:admin", true},
		{"Impersonate-Group", "system:masters", true},
		{"Impersonate-Uid", "0", true},
		{"Impersonate-Extra-Scopes", "view", true},
		{"Impersonate-Extra-acme.com%2fproject", "x", true},
		{"Authorization", "Bearer x", false},
		{"X-Impersonate-User", "x", false},
		{"User-Agent", "kubectl/v1.37.2", false},
	} {
		r := httptest.NewRequest("GET", "/api/v1/namespaces/a/secrets", nil)
		r.Header.Set(tc.header, tc.value)
		err := refusedHeaders(r)
		if tc.refused != (err != nil) {
			t.Errorf("%s: refusedHeaders = %v, want refused %v", tc.header, err, tc.refused)
		}
		if err != nil && (!errors.Is(err, errRequest) || !strings.Contains(err.Error(), "impersonation")) {
			t.Errorf("%s: error %q is not an impersonation errRequest", tc.header, err)
		}
	}
	// Over HTTP/2 header names arrive in lower case, as they are in
	// the map when a client sets it directly.
	r := httptest.NewRequest("GET", "/api/v1/secrets", nil)
	r.Header["impersonate-user"] = []string{"system:admin"}
	if err := refusedHeaders(r); err == nil {
		t.Error("a lower-case impersonate-user header passes")
	}
}

func TestRefusal(t *testing.T) {
	deny := func(k *ruleset.K8sRequest, text string) *decoder.Command {
		return &decoder.Command{
			Cmd: enforcer.Command{Text: text, Statement: ruleset.Statement{Kind: "x", Text: text, K8s: k}},
			Verdict: enforcer.Verdict{Action: ruleset.Deny, Decision: ruleset.Decision{Action: ruleset.Deny,
				Rule: &ruleset.Rule{ID: "ci/deny/secrets-all-namespaces"}, Reason: "reading secrets across all namespaces"}},
		}
	}
	for _, tc := range []struct {
		name string
		c    *decoder.Command
		want string
	}{
		{"list across namespaces", deny(&ruleset.K8sRequest{Verb: "list", IsResource: true, Resource: "secrets"}, "GET /api/v1/secrets"),
			"sluice: list secrets in all namespaces denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
		{"watch across namespaces", deny(&ruleset.K8sRequest{Verb: "watch", IsResource: true, Resource: "secrets"}, "GET /api/v1/secrets?watch=true"),
			"sluice: watch secrets in all namespaces denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
		{"get one", deny(&ruleset.K8sRequest{Verb: "get", IsResource: true, Resource: "secrets", Namespace: "a", Name: "db"}, "GET /api/v1/namespaces/a/secrets/db"),
			"sluice: get secrets db in namespace a denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
		{"cluster scoped", deny(&ruleset.K8sRequest{Verb: "delete", IsResource: true, Resource: "clusterroles", Name: "admin"}, "DELETE /apis/rbac.authorization.k8s.io/v1/clusterroles/admin"),
			"sluice: delete clusterroles admin denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
		{"subresource", deny(&ruleset.K8sRequest{Verb: "create", IsResource: true, Resource: "pods", Subresource: "exec", Namespace: "a", Name: "p"}, "POST /api/v1/namespaces/a/pods/p/exec"),
			"sluice: create pods/exec p in namespace a denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
		{"not a resource", deny(&ruleset.K8sRequest{Verb: "get", Path: "/version"}, "GET /version"),
			"sluice: GET /version denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
		{"not resolved", deny(nil, "GET //api/v1/secrets"),
			"sluice: GET //api/v1/secrets denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces"},
	} {
		if got := refusal(tc.c); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	held := deny(&ruleset.K8sRequest{Verb: "create", IsResource: true, Resource: "pods", Subresource: "exec", Namespace: "a", Name: "p"}, "POST /x")
	held.Verdict.Action = ruleset.Hold
	held.Verdict.Decision.Rule = nil
	held.Verdict.Decision.Reason = "exec into a pod needs a human"
	if got, want := refusal(held), "sluice: create pods/exec p in namespace a held, and cannot wait for approval, by rule sluice/unknown: exec into a pod needs a human"; got != want {
		t.Errorf("hold:\n got %q\nwant %q", got, want)
	}
}

// TestWriteStatus: a refusal is a metav1.Status kubectl prints as
// "Error from server (Forbidden): <message>".
func TestWriteStatus(t *testing.T) {
	w := httptest.NewRecorder()
	writeStatus(w, http.StatusForbidden, "Forbidden", "sluice: get secrets db in namespace a denied by rule r: no")
	if w.Code != http.StatusForbidden || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("code %d, content type %q", w.Code, w.Header().Get("Content-Type"))
	}
	var st metav1.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Kind != "Status" || st.APIVersion != "v1" || st.Status != metav1.StatusFailure || st.Reason != metav1.StatusReasonForbidden ||
		st.Code != http.StatusForbidden || st.Message != "sluice: get secrets db in namespace a denied by rule r: no" {
		t.Errorf("status = %+v", st)
	}
	if w.Header().Get("Content-Length") != itoa(w.Body.Len()) {
		t.Errorf("Content-Length %q for %d bytes", w.Header().Get("Content-Length"), w.Body.Len())
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestReadLine(t *testing.T) {
	const max = 64
	for _, tc := range []struct {
		name, in string
		want     string
		err      error
	}{
		{"short", "{\"type\":\"ADDED\"}\nnext", "{\"type\":\"ADDED\"}\n", nil},
		{"longer than the buffer", strings.Repeat("a", 40) + "\n", strings.Repeat("a", 40) + "\n", nil},
		{"exactly max", strings.Repeat("b", max-1) + "\n", strings.Repeat("b", max-1) + "\n", nil},
		{"one over max", strings.Repeat("c", max) + "\n", "", errEventTooLong},
		{"far over max, no newline", strings.Repeat("d", 10*max), "", errEventTooLong},
		{"last line without newline", "tail", "tail", io.EOF},
		{"empty", "", "", io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
			got, err := readLine(br, max)
			if err != tc.err || string(got) != tc.want {
				t.Errorf("readLine = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
	// Lines one after another.
	br := bufio.NewReaderSize(strings.NewReader("one\ntwo\n\nthree"), 16)
	var got []string
	for {
		l, err := readLine(br, max)
		got = append(got, string(l))
		if err != nil {
			break
		}
	}
	if strings.Join(got, "|") != "one\n|two\n|\n|three" {
		t.Errorf("lines %q", got)
	}
}

func TestIsUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name       string
		connection []string
		upgrade    string
		want       bool
	}{
		{"websocket", []string{"Upgrade"}, "websocket", true},
		{"spdy", []string{"Upgrade"}, "SPDY/3.1", true},
		{"token list", []string{"keep-alive, upgrade"}, "websocket", true},
		{"second header", []string{"keep-alive", " UPGRADE "}, "websocket", true},
		{"no upgrade header", []string{"Upgrade"}, "", false},
		{"no connection header", nil, "websocket", false},
		{"other token", []string{"close"}, "websocket", false},
		{"token as substring", []string{"upgraded"}, "websocket", false},
	} {
		r := httptest.NewRequest("GET", "/api/v1/namespaces/a/pods/p/exec", nil)
		for _, c := range tc.connection {
			r.Header.Add("Connection", c)
		}
		if tc.upgrade != "" {
			r.Header.Set("Upgrade", tc.upgrade)
		}
		if got := isUpgrade(r); got != tc.want {
			t.Errorf("%s: isUpgrade = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIsStreamMaskable(t *testing.T) {
	for _, tc := range []struct {
		req              string
		stream, maskable bool
	}{
		{"POST /api/v1/namespaces/a/pods/p/exec", true, true},
		{"GET /api/v1/namespaces/a/pods/p/attach", true, true},
		{"POST /api/v1/namespaces/a/pods/p/portforward", true, true},
		{"GET /api/v1/namespaces/a/services/s/proxy/x", true, false},
		{"GET /api/v1/proxy/namespaces/a/pods/p", true, true},
		{"GET /api/v1/namespaces/a/pods/p/log", false, true},
		{"GET /api/v1/namespaces/a/secrets", false, true},
		{"GET /api/v1/namespaces/a/configmaps/c", false, true},
		{"GET /apis/apps/v1/namespaces/a/deployments", false, false},
		{"GET /apis/example.com/v1/namespaces/a/secrets", false, false},
		{"GET /version", false, false},
	} {
		st, err := Classify(tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if isStream(st.K8s) != tc.stream || maskable(st.K8s) != tc.maskable {
			t.Errorf("%s: isStream %v maskable %v, want %v %v", tc.req, isStream(st.K8s), maskable(st.K8s), tc.stream, tc.maskable)
		}
	}
}

func TestMayMask(t *testing.T) {
	for _, tc := range []struct {
		resource, body string
		want           bool
	}{
		{"secrets", `{"kind":"SecretList","items":[]}`, true},
		{"configmaps", `{}`, true},
		{"pods", `{"kind":"Pod","spec":{"containers":[{"image":"a"}]}}`, false},
		{"pods", `{"kind":"Pod","spec":{"containers":[{"env":[]}]}}`, true},
		{"pods", `{"kind":"Pod","metadata":{"annotations":{"` + lastApplied + `":"{}"}}}`, true},
	} {
		if got := mayMask(tc.resource, []byte(tc.body)); got != tc.want {
			t.Errorf("mayMask(%s, %s) = %v, want %v", tc.resource, tc.body, got, tc.want)
		}
	}
}

func TestAuthorize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		up     upstream
		client string
		want   string
	}{
		{"placeholder dropped", upstream{}, "Bearer " + PlaceholderToken, ""},
		{"client's own kept", upstream{}, "Bearer own", "Bearer own"},
		{"injected token", upstream{inject: true, bearer: "Bearer injected"}, "Bearer own", "Bearer injected"},
		{"injected certificate", upstream{inject: true}, "Bearer own", ""},
		{"injected over placeholder", upstream{inject: true, bearer: "Bearer injected"}, "Bearer " + PlaceholderToken, "Bearer injected"},
	} {
		h := http.Header{}
		h.Set("Authorization", tc.client)
		tc.up.authorize(h)
		if got := h.Get("Authorization"); got != tc.want || len(h.Values("Authorization")) > 1 {
			t.Errorf("%s: Authorization %q, want %q", tc.name, h.Values("Authorization"), tc.want)
		}
	}
}

// engineRules: the e2e ruleset's rules that need no human.
const engineRules = `
target "cluster" {
  protocol = "k8s"
  address  = ["127.0.0.1:6443"]
}
policy "ci" {
  targets = ["cluster"]
  deny "secrets-all-namespaces" {
    when   = k8s.resource == "secrets" && k8s.namespace == "" && contains(["get", "list", "watch"], k8s.verb)
    reason = "reading secrets across all namespaces"
  }
  deny "privileged" {
    when   = k8s.privileged || k8s.host_network || k8s.host_path
    reason = "no privileged pods from CI"
  }
  mask "secrets" {
    when    = !contains(["exec", "attach", "portforward", "proxy"], k8s.subresource)
    columns = ["secrets.data", "secrets.stringData"]
    detect  = ["email"]
  }
}
default { action = "deny" }
`

// apiRequest is what the stand-in API server received.
type apiRequest struct {
	method, uri, accept, auth string
	body                      string
}

// startEngine serves a session (the engine's ServeHTTP, over plain HTTP
// for the test's client) in front of an httptest TLS server standing in
// for the API server, and returns the session's URL and what the API
// server received.
func startEngine(t *testing.T, api http.HandlerFunc) (string, <-chan apiRequest) {
	t.Helper()
	got := make(chan apiRequest, 16)
	apiSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- apiRequest{r.Method, r.URL.RequestURI(), r.Header.Get("Accept"), r.Header.Get("Authorization"), string(b)}
		api(w, r)
	}))
	t.Cleanup(apiSrv.Close)
	rs, diags := ruleset.Parse(map[string][]byte{"k8s.hcl": []byte(engineRules)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	match := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "cluster", Protocol: ruleset.ProtoK8s}})
	sess := enforcer.NewSession(ctx, match, nil, 0, hclog.NewNullLogger())
	tr := apiSrv.Client().Transport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	s := &session{
		ctx:     ctx,
		f:       &decoder.Flow{Dest: netip.MustParseAddrPort(apiSrv.Listener.Addr().String()), Match: match, Session: sess},
		sess:    sess,
		decider: decoder.Decider{Session: sess, Masks: mask.NewCache(bytes.Repeat([]byte{7}, 32))},
		log:     hclog.NewNullLogger(),
		up:      &upstream{tr: tr, inject: true, bearer: "Bearer injected-token"},
		refused: newRefusals(),
	}
	front := httptest.NewServer(s)
	t.Cleanup(front.Close)
	return front.URL, got
}

// do sends one request as kubectl would, with sluice kubeconfig's
// placeholder token, and returns the answer's status and body.
func do(t *testing.T, method, url, accept, ct, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+PlaceholderToken)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// statusOfBody decodes a refusal.
func statusOfBody(t *testing.T, body string) metav1.Status {
	t.Helper()
	var st metav1.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Kind != "Status" {
		t.Fatalf("not a Status (%v): %s", err, body)
	}
	return st
}

func TestEngine(t *testing.T) {
	url, got := startEngine(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/secrets/db") && strings.Contains(r.Header.Get("Accept"), "as=Table"):
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, tableJSON())
		case strings.HasSuffix(r.URL.Path, "/secrets/db"):
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, secretJSON("db"))
		case strings.HasSuffix(r.URL.Path, "/secrets") && r.URL.Query().Get("watch") == "true":
			w.Header().Set("Content-Type", "application/json;stream=watch")
			for _, typ := range []string{"ADDED", "MODIFIED"} {
				io.WriteString(w, `{"type":"`+typ+`","object":`+strings.ReplaceAll(secretJSON("db"), "\n", "")+"}\n")
				w.(http.Flusher).Flush()
			}
		case strings.HasSuffix(r.URL.Path, "/log"):
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "start\nnotify "+ownerEmail+" done\n")
		case r.Method == "POST":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","items":[]}`)
		}
	})
	next := func() apiRequest {
		t.Helper()
		select {
		case r := <-got:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("the API server got no request")
		}
		return apiRequest{}
	}
	nothing := func() {
		t.Helper()
		select {
		case r := <-got:
			t.Fatalf("a refused request reached the API server: %+v", r)
		default:
		}
	}

	// kubectl get secret db -o json: masked, the injected token in
	// place of the placeholder, JSON asked for.
	code, _, body := do(t, "GET", url+"/api/v1/namespaces/a/secrets/db", "application/vnd.kubernetes.protobuf, */*", "", "")
	if r := next(); r.auth != "Bearer injected-token" || r.accept != "*/*" {
		t.Errorf("the API server got Authorization %q, Accept %q", r.auth, r.accept)
	}
	if l := leaks(body); code != 200 || l != nil {
		t.Errorf("get secret: %d, holds %q:\n%s", code, l, body)
	}

	// kubectl get secret db (a Table): the rows' annotations masked.
	code, _, body = do(t, "GET", url+"/api/v1/namespaces/a/secrets/db", acceptTable, "", "")
	if r := next(); !strings.HasPrefix(r.accept, "application/json;as=Table;v=v1;g=meta.k8s.io") {
		t.Errorf("the API server got Accept %q", r.accept)
	}
	if l := leaks(body); code != 200 || l != nil {
		t.Errorf("get secret as a Table: %d, holds %q:\n%s", code, l, body)
	}

	// kubectl get secret db -o yaml asks for YAML only: masked YAML.
	code, h, body := do(t, "GET", url+"/api/v1/namespaces/a/secrets/db", "application/yaml", "", "")
	if r := next(); r.accept != "application/json" {
		t.Errorf("the API server got Accept %q", r.accept)
	}
	if l := leaks(body); code != 200 || l != nil || h.Get("Content-Type") != "application/yaml" || !strings.Contains(body, "kind: Secret") {
		t.Errorf("get secret -o yaml: %d %q, holds %q:\n%s", code, h.Get("Content-Type"), l, body)
	}

	// A watch: every event masked.
	code, _, body = do(t, "GET", url+"/api/v1/namespaces/a/secrets?watch=true", "application/json", "", "")
	next()
	if l := leaks(body); code != 200 || l != nil || strings.Count(body, "\n") != 2 {
		t.Errorf("watch: %d, holds %q:\n%s", code, l, body)
	}

	// A pod log: masked line by line.
	code, _, body = do(t, "GET", url+"/api/v1/namespaces/a/pods/p/log", "", "", "")
	next()
	if code != 200 || strings.Contains(body, ownerEmail) || !strings.HasPrefix(body, "start\nnotify ") {
		t.Errorf("log: %d %q", code, body)
	}

	// kubectl get secrets -A: refused with kubectl's own kind of error.
	code, _, body = do(t, "GET", url+"/api/v1/secrets?limit=500", acceptTable, "", "")
	nothing()
	if st := statusOfBody(t, body); code != 403 || st.Reason != metav1.StatusReasonForbidden ||
		st.Message != "sluice: list secrets in all namespaces denied by rule ci/deny/secrets-all-namespaces: reading secrets across all namespaces" {
		t.Errorf("get secrets -A: %d %+v", code, st)
	}

	// A privileged pod is refused; a plain one is created as sent.
	code, _, body = do(t, "POST", url+"/api/v1/namespaces/a/pods", "", "application/json", podJSON)
	nothing()
	if st := statusOfBody(t, body); code != 403 || !strings.Contains(st.Message, "ci/deny/privileged") {
		t.Errorf("privileged pod: %d %+v", code, st)
	}
	code, _, _ = do(t, "POST", url+"/api/v1/namespaces/a/pods", "", "application/json", plainPodJSON)
	if r := next(); code != 201 || r.body != plainPodJSON || r.method != "POST" || r.uri != "/api/v1/namespaces/a/pods" {
		t.Errorf("plain pod: %d, the API server got %+v", code, r)
	}

	// Requests Sluice cannot judge are 400s that never reach the server.
	for _, tc := range []struct {
		method, path, ct, body string
		hdr                    []string
	}{
		{"GET", "/api/v1/namespaces/a/secrets/db", "", "", []string{"Impersonate-User", "system:admin"}},
		{"GET", "/api/v1/namespaces/a/secrets%2Fdb", "", "", nil},
		{"GET", "/api/v1/namespaces/a/secrets?watch=false&watch=true", "", "", nil},
		{"POST", "/api/v1/namespaces/a/pods", "application/cbor", "\xa1dkindcPod", nil},
		{"POST", "/api/v1/namespaces/a/pods", "application/json", `{"kind":"Pod",`, nil},
	} {
		code, _, body := do(t, tc.method, url+tc.path, "", tc.ct, tc.body, tc.hdr...)
		nothing()
		if st := statusOfBody(t, body); code != 400 || st.Reason != metav1.StatusReasonBadRequest {
			t.Errorf("%s %s: %d %+v", tc.method, tc.path, code, st)
		}
	}
}
