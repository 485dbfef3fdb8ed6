package ruleset

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// k8sConditions cover every k8s attribute, on both evaluation paths.
var k8sConditions = []struct {
	cond string
	fast bool
}{
	{`k8s.verb == "list" && k8s.resource == "secrets" && k8s.namespace == ""`, true},
	{`k8s.resource_request && k8s.group == "apps" && k8s.version == "v1"`, true},
	{`!k8s.resource_request && k8s.verb == "get"`, true},
	{`k8s.resource == "pods" && contains(["exec", "attach", "portforward"], k8s.subresource)`, true},
	{`k8s.name == "web-0" || glob("/api/v1/namespaces/kube-*", k8s.path)`, true},
	{`glob("kubectl/*", k8s.user_agent) && k8s.verb == "delete"`, true},
	{`k8s.object_kind == "Pod" && any_glob(["docker.io/*"], k8s.images)`, true},
	{`k8s.privileged || k8s.host_path`, true},
	{`k8s.host_network && k8s["namespace"] != "kube-system"`, true},
	{`length(k8s.images) > 1`, true},
	{`k8s.verb == "watch" && result.bytes > 100`, true},
	{`anytrue([for i in k8s.images : !regex("@sha256:", i)])`, false},
	{`join(",", k8s.images) == "nginx:1,busybox"`, false},
	{`[k8s][0].privileged == true`, false},
	{`k8s.images == [] || k8s.verb == "watch"`, false},
}

// k8sInputs are Kubernetes API requests, and statements without one.
func k8sInputs() []*Input {
	reqs := []*K8sRequest{
		nil,
		{Verb: K8sList, IsResource: true, Version: "v1", Resource: "secrets", Path: "/api/v1/secrets", UserAgent: "kubectl/v1.31.0 (linux/amd64)"},
		{Verb: K8sGet, IsResource: true, Version: "v1", Resource: "secrets", Namespace: "ci", Name: "registry"},
		{Verb: K8sCreate, IsResource: true, Version: "v1", Resource: "pods", Subresource: "exec", Namespace: "ci", Name: "web-0"},
		{Verb: K8sGet, IsResource: true, Version: "v1", Resource: "pods", Subresource: "portforward", Namespace: "ci", Name: "db-0"},
		{Verb: K8sPatch, IsResource: true, Group: "apps", Version: "v1", Resource: "deployments", Namespace: "ci", Name: "web",
			ObjectKind: "Deployment", Images: []string{"nginx:1", "busybox"}},
		{Verb: K8sCreate, IsResource: true, Version: "v1", Resource: "pods", Namespace: "kube-system", ObjectKind: "Pod",
			Images: []string{"docker.io/library/alpine:3"}, Privileged: true, HostPath: true, HostNetwork: true},
		{Verb: K8sCreate, IsResource: true, Version: "v1", Resource: "pods", Namespace: "ci", ObjectKind: "Pod",
			Images: []string{"registry.example/app@sha256:0123"}, HostNetwork: true},
		{Verb: K8sDelete, IsResource: true, Version: "v1", Resource: "namespaces", Name: "prod", Path: "/api/v1/namespaces/kube-public", UserAgent: "kubectl/v1.31.0"},
		{Verb: K8sWatch, IsResource: true, Version: "v1", Resource: "configmaps", Namespace: "ci"},
		{Verb: "get", Path: "/version"},
		{Verb: "get", Path: "/apis"},
	}
	results := []Result{{}, {Known: true, Bytes: 1000}}
	var out []*Input
	for _, r := range reqs {
		for _, res := range results {
			in := &Input{Result: res}
			in.Target = Endpoint{Name: "kube", Protocol: ProtoK8s, Addr: netip.MustParseAddrPort("10.0.0.8:6443")}
			in.Identity = Identity{Level: LevelOIDC, Claims: map[string]string{"repository": "acme/api"}}
			if r != nil {
				in.Statement = Statement{Kind: r.Verb, K8s: r}
			} else {
				// A SQL statement on a target the same policy covers:
				// the facet is empty.
				in.Target = Endpoint{Name: "pg", Protocol: ProtoPostgres}
				in.Statement = Statement{Kind: "select", Tables: []string{"secrets"}}
			}
			out = append(out, in)
		}
	}
	return out
}

// k8sReference evaluates x with HCL in a context built here, field by
// field from the K8sRequest: an oracle independent of the facet table.
func k8sReference(t *testing.T, rs *Ruleset, x *expr, in *Input) string {
	t.Helper()
	r := in.Statement.K8s
	if r == nil {
		r = &K8sRequest{}
	}
	vars := referenceVars(rs, in)
	vars["k8s"] = cty.ObjectVal(map[string]cty.Value{
		"verb": cty.StringVal(r.Verb), "resource_request": cty.BoolVal(r.IsResource),
		"group": cty.StringVal(r.Group), "version": cty.StringVal(r.Version),
		"resource": cty.StringVal(r.Resource), "subresource": cty.StringVal(r.Subresource),
		"namespace": cty.StringVal(r.Namespace), "name": cty.StringVal(r.Name), "path": cty.StringVal(r.Path),
		"user_agent": cty.StringVal(r.UserAgent), "object_kind": cty.StringVal(r.ObjectKind), "images": refList(r.Images),
		"privileged": cty.BoolVal(r.Privileged), "host_path": cty.BoolVal(r.HostPath), "host_network": cty.BoolVal(r.HostNetwork),
	})
	return referenceOutcome(t, x, &hcl.EvalContext{Variables: vars, Functions: rs.funcs})
}

// TestK8sFacet: every k8s.* condition decides the same compiled, through
// HCL and in a reference context built field by field, for Kubernetes
// requests of every shape and for SQL statements (no K8sRequest, so an
// empty facet, never a panic).
func TestK8sFacet(t *testing.T) {
	var sb strings.Builder
	sb.WriteString(facetTargets)
	sb.WriteString("policy \"mixed\" {\n  targets = [\"pg\", \"kube\"]\n")
	for i, c := range k8sConditions {
		if i%2 == 0 {
			fmt.Fprintf(&sb, "  deny \"r%d\" { when = %s }\n", i, c.cond)
		} else {
			fmt.Fprintf(&sb, "  hold \"r%d\" {\n    when = %s\n    approvers = [\"group:x\"]\n  }\n", i, c.cond)
		}
	}
	sb.WriteString("}\n")
	rs := mustParse(t, map[string]string{"r.hcl": sb.String()})
	if rs.readsText {
		t.Error("reading k8s.* marks the ruleset as reading SQL text")
	}
	for i, c := range k8sConditions {
		x := ruleExpr(t, rs, i)
		if (x.fast != nil) != c.fast {
			t.Errorf("%s: compiled %t, want %t", c.cond, x.fast != nil, c.fast)
		}
		fired := 0
		for _, in := range k8sInputs() {
			ref := k8sReference(t, rs, x, in)
			if got := evalBoth(rs, x, in); got != [2]string{ref, ref} {
				t.Errorf("%s: (compiled, HCL) %v, the reference %s for %+v %+v", c.cond, got, ref, in.Statement, in.Statement.K8s)
			}
			if strings.HasPrefix(ref, "fired true") {
				fired++
			}
		}
		if fired == 0 {
			t.Errorf("%s: fires on no input; the test does not exercise it", c.cond)
		}
	}
}

// TestK8sFacetDiagnostics: k8s.* is checked like every facet: attribute
// names, types, where it may be used, and which targets speak it.
func TestK8sFacetDiagnostics(t *testing.T) {
	tests := []struct {
		src, summary, detail string
		line, col            int
	}{
		{`policy "p" {
  targets = ["kube"]
  deny { when = k8s.verb == "delete" && k8s.resource == "namespaces" && !k8s.privileged }
}`, "", "", 0, 0},
		{`policy "p" {
  targets = ["kube"]
  deny { when = k8s.resorce == "secrets" }
}`, "Unsupported attribute", `k8s has no attribute "resorce". Did you mean "resource"?`, 3, 20},
		{`policy "p" {
  targets = ["kube"]
  deny { when = k8s.nothing_like_it == "x" }
}`, "Unsupported attribute", "Its attributes are group, host_network, host_path, images, name, namespace, object_kind, path, privileged, resource, resource_request, subresource, user_agent, verb, version.", 3, 20},
		{`policy "p" {
  targets = ["kube"]
  when    = k8s.namespace == "prod"
}`, "Statement variables not allowed here", "but not k8s", 3, 13},
		{`policy "p" {
  targets = ["kube"]
  deny { when = k8s.images == "nginx" }
}`, "List compared with a single value", "write contains(list, value)", 3, 17},
		{`policy "p" {
  targets = ["kube"]
  allow { when = k8s.verb }
}`, "Condition is not a boolean", "", 3, 18},
		{`policy "p" {
  targets = ["pg", "git"]
  deny { when = target.protocol == "k8s" && k8s.verb == "delete" }
}`, "k8s used on a policy without k8s targets", `k8s.* is filled only on k8s flows`, 3, 45},
		{`policy "p" {
  targets = ["*"]
  hold {
    when      = k8s.subresource == "exec"
    approvers = ["group:x"]
  }
}`, "", "", 0, 0},
	}
	for _, tt := range tests {
		_, diags := Parse(map[string][]byte{"t.hcl": []byte(facetTargets), "x.hcl": []byte(tt.src)})
		errs := errorsOf(diags)
		if tt.summary == "" {
			if len(errs) > 0 {
				t.Errorf("%s: want the ruleset to load: %v", tt.src, diags)
			}
			continue
		}
		if len(errs) != 1 {
			t.Errorf("%s: got %d errors, want 1: %v", tt.src, len(errs), diags)
			continue
		}
		d := errs[0]
		if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
			t.Errorf("got %q (%s) at %v, want %q containing %q at %d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
		}
	}
}

// k8sRulesetForTests has a k8s target, a postgres one, and a policy
// deciding Kubernetes requests.
const k8sRulesetForTests = `
target "cluster" {
  protocol = "k8s"
  address  = ["10.0.0.8:6443"]
}
target "pg" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "p" {
  targets = ["cluster", "pg"]
  deny "all-secrets" { when = k8s.resource == "secrets" && k8s.namespace == "" && contains(["list", "watch"], k8s.verb) }
  deny "privileged" { when = k8s.privileged || k8s.host_path || k8s.host_network }
  deny "images" { when = anytrue([for i in k8s.images : !glob("registry.example/*", i)]) }
  deny "discovery" { when = !k8s.resource_request && k8s.path == "/openapi/v2" }
  hold "exec" {
    when      = k8s.subresource == "exec"
    approvers = ["group:sre"]
  }
}
`

// TestK8sRuleTests: a k8s object in a test block becomes the Statement
// (and K8sRequest) the Kubernetes decoder would report, and a query on a
// k8s target (a request line) goes through the classifier.
func TestK8sRuleTests(t *testing.T) {
	rs := mustParse(t, map[string]string{"r.hcl": k8sRulesetForTests, "t.hcl": `
test "all secrets" {
  target      = "cluster"
  k8s         = { verb = "list", resource = "secrets" }
  expect      = "deny"
  expect_rule = "p/deny/all-secrets"
}
test "one namespace" {
  target = "cluster"
  k8s    = { verb = "list", resource = "secrets", namespace = "ci", version = "v1", path = "/api/v1/namespaces/ci/secrets", user_agent = "kubectl/v1.31.0" }
  expect = "allow"
}
test "privileged pod" {
  target      = "cluster"
  k8s         = { verb = "create", resource = "pods", namespace = "ci", object_kind = "Pod", images = ["registry.example/app:1"], privileged = true }
  expect      = "deny"
  expect_rule = "p/deny/privileged"
}
test "foreign image" {
  target      = "cluster"
  k8s         = { verb = "patch", group = "apps", version = "v1", resource = "deployments", namespace = "ci", name = "web", images = ["registry.example/app:1", "docker.io/evil:latest"] }
  expect      = "deny"
  expect_rule = "p/deny/images"
}
test "exec" {
  target      = "cluster"
  k8s         = { verb = "create", resource = "pods", subresource = "exec", namespace = "ci", name = "web-0" }
  expect      = "hold"
  expect_rule = "p/hold/exec"
}
test "openapi" {
  target      = "cluster"
  k8s         = { verb = "get", path = "/openapi/v2" }
  expect      = "deny"
  expect_rule = "p/deny/discovery"
}
test "said not a resource request" {
  target = "cluster"
  k8s    = { verb = "get", resource = "secrets", resource_request = false, host_network = true, host_path = false }
  expect = "deny"
}
test "connection" {
  target = "cluster"
  expect = "allow"
}
test "query" {
  target      = "cluster"
  query       = "GET /api/v1/secrets"
  expect      = "deny"
  expect_rule = "p/deny/all-secrets"
}
`})
	want := map[string]Statement{
		"all secrets": {Kind: K8sList, K8s: &K8sRequest{Verb: K8sList, IsResource: true, Resource: "secrets"}},
		"one namespace": {Kind: K8sList, K8s: &K8sRequest{Verb: K8sList, IsResource: true, Version: "v1", Resource: "secrets", Namespace: "ci",
			Path: "/api/v1/namespaces/ci/secrets", UserAgent: "kubectl/v1.31.0"}},
		"privileged pod": {Kind: K8sCreate, K8s: &K8sRequest{Verb: K8sCreate, IsResource: true, Resource: "pods", Namespace: "ci", ObjectKind: "Pod",
			Images: []string{"registry.example/app:1"}, Privileged: true}},
		"foreign image": {Kind: K8sPatch, K8s: &K8sRequest{Verb: K8sPatch, IsResource: true, Group: "apps", Version: "v1", Resource: "deployments",
			Namespace: "ci", Name: "web", Images: []string{"registry.example/app:1", "docker.io/evil:latest"}}},
		"exec":                        {Kind: K8sCreate, K8s: &K8sRequest{Verb: K8sCreate, IsResource: true, Resource: "pods", Subresource: "exec", Namespace: "ci", Name: "web-0"}},
		"openapi":                     {Kind: "get", K8s: &K8sRequest{Verb: "get", Path: "/openapi/v2"}},
		"said not a resource request": {Kind: "get", K8s: &K8sRequest{Verb: "get", Resource: "secrets", HostNetwork: true}},
		"connection":                  {Kind: KindConnect},
		"query":                       {}, // classified when the test runs
	}
	for _, tc := range rs.tests {
		w, ok := want[tc.name]
		if !ok {
			t.Errorf("no expectation for test %q", tc.name)
			continue
		}
		if !reflect.DeepEqual(tc.in.Statement, w) {
			t.Errorf("%s: statement %+v %+v, want %+v %+v", tc.name, tc.in.Statement, tc.in.Statement.K8s, w, w.K8s)
		}
	}
	var asked []string
	classify := func(protocol, text string) (Statement, error) {
		asked = append(asked, protocol+": "+text)
		k := &K8sRequest{Verb: K8sList, IsResource: true, Version: "v1", Resource: "secrets", Path: "/api/v1/secrets"}
		return Statement{Kind: k.Verb, Text: text, K8s: k}, nil
	}
	for _, r := range rs.RunTests(classify) {
		if !r.Passed {
			t.Errorf("%s: %s", r.Name, r.Message)
		}
	}
	if want := []string{"k8s: GET /api/v1/secrets"}; !reflect.DeepEqual(asked, want) {
		t.Errorf("classified %q, want %q", asked, want)
	}
}

// TestK8sRuleTestDiagnostics: the mistakes a test block can make with k8s.
func TestK8sRuleTestDiagnostics(t *testing.T) {
	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"k8s on postgres", `test "t" {
  target = "pg"
  k8s    = { verb = "get" }
  expect = "deny"
}`, "Kubernetes request for a postgres target", "Target pg speaks postgres, and k8s describes a request to a Kubernetes API server.", 3, 3},
		{"with a statement", `test "t" {
  target    = "cluster"
  statement = { kind = "get" }
  k8s       = { verb = "get" }
  expect    = "deny"
}`, "Conflicting arguments", "this one also has statement", 4, 3},
		{"with a query", `test "t" {
  target = "cluster"
  query  = "kubectl get pods"
  k8s    = { verb = "list", resource = "pods" }
  expect = "deny"
}`, "Conflicting arguments", "this one also has query", 4, 3},
		{"no verb", `test "t" {
  target = "cluster"
  k8s    = { resource = "pods" }
  expect = "deny"
}`, "Missing attribute", "k8s needs verb.", 3, 12},
		{"bad verb", `test "t" {
  target = "cluster"
  k8s    = { verb = "lsit", resource = "pods" }
  expect = "deny"
}`, "Invalid value for k8s.verb", `got "lsit". Did you mean "list"?`, 3, 21},
		{"upper-case method", `test "t" {
  target = "cluster"
  k8s    = { verb = "GET", path = "/version" }
  expect = "deny"
}`, "Invalid value for k8s.verb", `k8s.verb must be one of "get", "list"`, 3, 21},
		{"method of a resource request", `test "t" {
  target = "cluster"
  k8s    = { verb = "post", resource = "pods" }
  expect = "deny"
}`, "HTTP method as a resource verb", "POST is create", 3, 21},
		{"resource verb without a resource", `test "t" {
  target = "cluster"
  k8s    = { verb = "list", path = "/api/v1/pods" }
  expect = "deny"
}`, "Resource verb without a resource", `add resource = "pods"`, 3, 21},
		{"said not a resource request", `test "t" {
  target = "cluster"
  k8s    = { verb = "watch", resource = "pods", resource_request = false }
  expect = "deny"
}`, "Resource verb without a resource", "this one names no resource", 3, 21},
		{"unknown attribute", `test "t" {
  target = "cluster"
  k8s    = { verb = "get", kind = "Pod" }
  expect = "deny"
}`, "Unsupported attribute", `k8s has no attribute "kind"`, 3, 28},
		{"wrong type", `test "t" {
  target = "cluster"
  k8s    = { verb = "create", resource = "pods", images = "nginx" }
  expect = "deny"
}`, "Incorrect value type", "k8s.images must be list of string", 3, 59},
		{"bool as a string", `test "t" {
  target = "cluster"
  k8s    = { verb = "create", resource = "pods", privileged = "yes" }
  expect = "deny"
}`, "Incorrect value type", "k8s.privileged must be bool", 3, 63},
		{"subresource alone", `test "t" {
  target = "cluster"
  k8s    = { verb = "get", subresource = "exec" }
  expect = "deny"
}`, "Subresource without a resource", `such as resource = "pods", subresource = "exec"`, 3, 42},
		{"not an object", `test "t" {
  target = "cluster"
  k8s    = "get pods"
  expect = "deny"
}`, "Incorrect attribute value type", "k8s must be an object", 3, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"r.hcl": []byte(k8sRulesetForTests), "t.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "t.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at t.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}

// TestK8sMask: a mask on a k8s target may name Kubernetes fields as
// columns (resource.field) beside detectors, in one block.
func TestK8sMask(t *testing.T) {
	rs := mustParse(t, map[string]string{"m.hcl": `
target "cluster" {
  protocol = "k8s"
  address  = ["10.0.0.8:6443"]
}
policy "p" {
  targets = ["cluster"]
  mask "values" {
    when    = k8s.resource_request
    columns = ["secrets.data", "secrets.stringData", "configmaps.*"]
    detect  = ["secret", "jwt", "private_key"]
    using   = "hash"
  }
}
`})
	in := &Input{Statement: Statement{Kind: K8sGet, K8s: &K8sRequest{Verb: K8sGet, IsResource: true, Version: "v1", Resource: "secrets", Namespace: "ci", Name: "x"}}}
	in.Target = Endpoint{Name: "cluster", Protocol: ProtoK8s}
	d := rs.Evaluate(in)
	if d.Action != Mask || len(d.Masks) != 1 || d.Masks[0].ID != "p/mask/values" {
		t.Fatalf("got %s by %s with %d masks, want mask by p/mask/values", d.Action, d.Rule.ID, len(d.Masks))
	}
	m := d.Masks[0].Mask
	if !reflect.DeepEqual(m.Columns, []string{"secrets.data", "secrets.stringData", "configmaps.*"}) || !reflect.DeepEqual(m.Detect, []string{"secret", "jwt", "private_key"}) || m.Using != "hash" {
		t.Errorf("mask spec %+v", m)
	}
}

// k8sTarget is a k8s target whose credential block is body.
func k8sTarget(body string) string {
	return fmt.Sprintf(`target "cluster" {
  protocol = "k8s"
  address  = ["10.0.0.8:6443"]
  credential "deployer" {
    user     = "system:serviceaccount:ci:deployer"
    policies = ["*"]
%s
  }
}
policy "p" {
  targets = ["cluster"]
  credential "deployer" {}
}
`, body)
}

// TestK8sCredentials: a k8s credential reads a bearer token (token_*)
// or a client certificate with its key (key_*), says which in k8s_auth,
// defaulted from the source, and is granted as on any other target.
func TestK8sCredentials(t *testing.T) {
	tests := []struct {
		name, body string
		auth       string
		src        SecretSource
	}{
		{"token file", `token_file = "/etc/sluice/secrets/../secrets/ci-token"`, K8sToken,
			SecretSource{File: "/etc/sluice/secrets/ci-token"}},
		{"token env, said", "token_env = \"KUBE_CI_TOKEN\"\nk8s_auth = \"token\"", K8sToken,
			SecretSource{Env: "KUBE_CI_TOKEN"}},
		{"token command, cached", "token_command = [\"/usr/local/bin/kube-token\", \"ci\"]\ncache_for = \"10m\"", K8sToken,
			SecretSource{Command: []string{"/usr/local/bin/kube-token", "ci"}, CacheFor: 10 * time.Minute}},
		{"certificate file", `key_file = "/etc/sluice/secrets/ci-client.pem"`, K8sClientCertificate,
			SecretSource{File: "/etc/sluice/secrets/ci-client.pem"}},
		{"certificate env, said", "key_env = \"KUBE_CI_CLIENT_CERT\"\nk8s_auth = \"client_certificate\"", K8sClientCertificate,
			SecretSource{Env: "KUBE_CI_CLIENT_CERT"}},
		{"certificate command, cached", "key_command = [\"/usr/local/bin/kube-cert\"]\ncache_for = \"1h\"", K8sClientCertificate,
			SecretSource{Command: []string{"/usr/local/bin/kube-cert"}, CacheFor: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := mustParse(t, map[string]string{"c.hcl": k8sTarget(tt.body)})
			cr := rs.Target("cluster").Credential("deployer")
			if cr.K8sAuth != tt.auth || !reflect.DeepEqual(cr.Source, tt.src) || cr.User != "system:serviceaccount:ci:deployer" || cr.SSHAuth != "" || cr.CertTTL != 0 {
				t.Errorf("got auth %q, source %+v, user %q, ssh_auth %q, ttl %s; want %q, %+v", cr.K8sAuth, cr.Source, cr.User, cr.SSHAuth, cr.CertTTL, tt.auth, tt.src)
			}
			m := rs.Match(Flow{Identity: Identity{Level: LevelOIDC},
				Target: Endpoint{Name: "cluster", Protocol: ProtoK8s, Addr: netip.MustParseAddrPort("10.0.0.8:6443")}})
			g, err := m.Grant()
			if err != nil || g == nil || g.Credential != cr || g.Rule != "p/credential/deployer" {
				t.Fatalf("Grant: %+v %v", g, err)
			}
			m = rs.Match(Flow{Identity: Identity{Level: LevelUnverified}, Target: Endpoint{Name: "cluster", Protocol: ProtoK8s}})
			if _, err := m.Grant(); err == nil {
				t.Fatal("a flow without a verified identity was granted a credential")
			}
		})
	}
	// Credentials of other protocols have no K8sAuth.
	rs := mustParse(t, map[string]string{"c.hcl": sshTarget(`key_file = "/k"`)})
	if got := rs.Target("web").Credential("deploy").K8sAuth; got != "" {
		t.Errorf("ssh credential: K8sAuth %q", got)
	}
}

// TestK8sCredentialDiagnostics: each mistake in a k8s credential block,
// and each k8s-only attribute elsewhere, is one error at the range to
// fix, saying how.
func TestK8sCredentialDiagnostics(t *testing.T) {
	// Line 7 of k8sTarget is the first line of body; the block is at 4:3.
	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"no source", k8sTarget(`k8s_auth = "token"`), "One secret source",
			"exactly one of token_file, token_env, token_command (a bearer token) or key_file, key_env, key_command (a PEM bundle holding the client certificate", 4, 3},
		{"token and certificate", k8sTarget("token_env = \"T\"\nkey_file = \"/k\""), "One secret source",
			"this one has key_file and token_env; keep one", 4, 3},
		{"two tokens", k8sTarget("token_env = \"T\"\ntoken_file = \"/t\""), "One secret source",
			"this one has token_file and token_env; keep one", 4, 3},
		{"password", k8sTarget(`password_env = "KUBE_PW"`), "password_env on a k8s target",
			"A Kubernetes API server takes no password: use token_env to read a bearer token, or key_file, key_env or key_command", 7, 1},
		{"password file", k8sTarget(`password_file = "/p"`), "password_file on a k8s target", "use token_file", 7, 1},
		{"inline password", k8sTarget("token_env = \"T\"\npassword = \"hunter2\""), "Secret in the ruleset",
			"read a bearer token with token_file (a root-only file), token_env (a variable of the daemon) or token_command, or a client certificate", 8, 1},
		{"relative token file", k8sTarget(`token_file = "secrets/t"`), "Relative path",
			`token_file must be an absolute path, such as "/etc/sluice/secrets/deployer".`, 7, 14},
		{"bad token env", k8sTarget(`token_env = "A=B"`), "Invalid variable name", `such as "KUBE_CI_TOKEN"`, 7, 13},
		{"bad key env", k8sTarget(`key_env = ""`), "Invalid variable name", `such as "KUBE_CI_CLIENT_CERT"`, 7, 11},
		{"relative token command", k8sTarget(`token_command = ["kube-token"]`), "Invalid command",
			`the program must be an absolute path, such as ["/usr/local/bin/kube-token", "deployer"]`, 7, 17},
		{"unknown k8s_auth", k8sTarget("token_env = \"T\"\nk8s_auth = \"bearer\""), "Invalid value for k8s_auth",
			`k8s_auth must be one of "token", "client_certificate"; got "bearer".`, 8, 12},
		{"token with a certificate", k8sTarget("key_file = \"/k\"\nk8s_auth = \"token\""), "Token authentication with a certificate",
			"but this credential reads a client certificate and key (key_file). Remove k8s_auth to authenticate with the certificate", 8, 12},
		{"certificate with a token", k8sTarget("token_env = \"T\"\nk8s_auth = \"client_certificate\""), "Certificate authentication with a token",
			`but this credential reads a bearer token (token_env). Read the certificate and its private key (one PEM bundle) with key_file, key_env or key_command instead, or set k8s_auth = "token".`, 8, 12},
		{"ssh_auth on k8s", k8sTarget("token_env = \"T\"\nssh_auth = \"password\""), "ssh_auth on a k8s target",
			`a k8s credential says how it authenticates to the API server with k8s_auth ("token" or "client_certificate")`, 8, 1},
		{"cert_ttl on k8s", k8sTarget("key_env = \"C\"\ncert_ttl = \"5m\""), "cert_ttl needs a certificate login", "on an ssh target", 8, 1},
		{"cache_for on a token file", k8sTarget("token_file = \"/t\"\ncache_for = \"5m\""), "cache_for needs a command",
			"password_command, key_command and token_command only", 8, 1},
		{"empty user", strings.Replace(k8sTarget(`token_env = "T"`), `"system:serviceaccount:ci:deployer"`, `""`, 1), "Empty user",
			"the name of the identity it authenticates to the API server as", 5, 16},
		{"token on postgres", `target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user      = "app"
    token_env = "APP_TOKEN"
    policies  = ["*"]
  }
}`, "token_env on a postgres target", "token_env reads a bearer token, which only k8s targets authenticate with; a postgres credential reads its password with password_file", 6, 5},
		{"token on ssh", sshTarget(`token_file = "/t"`), "token_file on an ssh target",
			"an ssh credential reads a password (password_file, password_env or password_command) or an SSH private key", 8, 1},
		{"k8s_auth on mysql", `target "db" {
  protocol = "mysql"
  address  = ["10.0.0.5:3306"]
  credential "app" {
    user         = "app"
    password_env = "APP_PW"
    k8s_auth     = "token"
    policies     = ["*"]
  }
}`, "k8s_auth on a mysql target", "a mysql credential always logs in with its password. Remove k8s_auth.", 7, 5},
		{"k8s_auth on ssh", sshTarget("key_file = \"/k\"\nk8s_auth = \"client_certificate\""), "k8s_auth on an ssh target",
			"an ssh credential says how it logs in with ssh_auth", 9, 1},
		{"credential on tcp", `target "raw" {
  protocol = "tcp"
  address  = ["10.0.0.9:9000"]
  credential "x" {
    user      = "x"
    token_env = "T"
    k8s_auth  = "token"
    policies  = ["*"]
  }
}`, "Credential injection not supported", "implemented for postgres, mysql, ssh and k8s targets; tcp targets", 4, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"c.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "c.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at c.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}

// TestUpstreamCA: upstream_ca is an absolute path on the targets whose
// server certificates Sluice verifies (k8s, postgres, mysql), with
// upstream_tls verify-ca or verify-full; k8s targets verify-full by
// default.
func TestUpstreamCA(t *testing.T) {
	rs := mustParse(t, map[string]string{"u.hcl": `
target "cluster" {
  protocol    = "k8s"
  address     = ["10.0.0.8:6443"]
  upstream_ca = "/etc/sluice/ca/../ca/cluster.pem"
}
target "db" {
  protocol     = "postgres"
  address      = ["10.0.0.5:5432"]
  upstream_tls = "verify-ca"
  upstream_ca  = "/etc/sluice/ca/db.pem"
}
target "shop" {
  protocol     = "mysql"
  address      = ["10.0.0.6:3306"]
  upstream_tls = "verify-full"
  upstream_ca  = "/etc/sluice/ca/shop.pem"
}
target "plain" {
  protocol = "k8s"
  address  = ["10.0.0.9:6443"]
}
`})
	for name, want := range map[string][2]string{
		"cluster": {TLSVerifyFull, "/etc/sluice/ca/cluster.pem"},
		"db":      {TLSVerifyCA, "/etc/sluice/ca/db.pem"},
		"shop":    {TLSVerifyFull, "/etc/sluice/ca/shop.pem"},
		"plain":   {TLSVerifyFull, ""},
	} {
		tg := rs.Target(name)
		if got := [2]string{tg.UpstreamTLS, tg.UpstreamCA}; got != want {
			t.Errorf("%s: upstream_tls and upstream_ca %q, want %q", name, got, want)
		}
	}

	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"relative", `target "t" {
  protocol    = "k8s"
  address     = ["*:6443"]
  upstream_ca = "ca.pem"
}`, "Relative path", `upstream_ca must be an absolute path, such as "/etc/sluice/ca/t.pem".`, 4, 17},
		{"on ssh", `target "t" {
  protocol    = "ssh"
  address     = ["*:22"]
  upstream_ca = "/etc/sluice/ca.pem"
}`, "upstream_ca not supported", "Sluice checks their hosts' keys against known_hosts", 4, 3},
		{"on tcp", `target "t" {
  protocol    = "tcp"
  address     = ["*:9000"]
  upstream_ca = "/etc/sluice/ca.pem"
}`, "upstream_ca not supported", "tcp targets are relayed as they are", 4, 3},
		{"postgres by default prefers", `target "t" {
  protocol    = "postgres"
  address     = ["*:5432"]
  upstream_ca = "/etc/sluice/ca.pem"
}`, "upstream_ca without verification", `a postgres target's upstream_tls is "prefer" unless it says otherwise. Set upstream_tls = "verify-full" (or "verify-ca"), or remove upstream_ca.`, 4, 3},
		{"k8s that does not verify", `target "t" {
  protocol     = "k8s"
  address      = ["*:6443"]
  upstream_tls = "require"
  upstream_ca  = "/etc/sluice/ca.pem"
}`, "upstream_ca without verification", `this target's upstream_tls is "require"`, 5, 3},
		{"not a string", `target "t" {
  protocol    = "k8s"
  address     = ["*:6443"]
  upstream_ca = ["/a.pem"]
}`, "Incorrect attribute value type", "upstream_ca must be a string", 4, 17},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"u.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "u.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at u.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}
