package k8s

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/ruleset"
)

// The fuzz targets check properties of what Sluice decides on and what
// it lets through:
//
//   - FuzzResolve: resolving never panics; a refusal is a request error;
//     an accepted request has a clean path and, forwarded, is resolved
//     by the API server's code to exactly what Sluice decided on.
//   - FuzzMaskSecret: no value of a Secret (data or stringData, plain
//     or base64) reaches the client once masked, whatever its keys and
//     values and whether it comes alone, in a list, a Table or a watch
//     event.
//   - FuzzBodyFacts: reading a body never panics, and a container whose
//     securityContext says privileged: true is flagged wherever the pod
//     spec is and whatever else the body holds, in JSON and in YAML.

func FuzzResolve(f *testing.F) {
	for _, tc := range kubectlRequests {
		f.Add(tc.method, tc.target)
	}
	for _, s := range []string{
		"/api/v1/namespaces/a/../b/secrets", "//api/v1/secrets", "/api/v1/namespaces/a/secrets%2Fx",
		"/api/v1/secrets?watch=true&watch=false", "/api/v1/./secrets", "/api/v1/namespaces/a/secrets/%2e%2e",
		"/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3D..", "/api/v1/namespaces/%61/secrets",
		"/apis/apps/v1/watch/namespaces/a/deployments/web", "/api/v1/namespaces/a/secrets/x%3Fwatch=true",
		"/api/v1/namespaces/a/secrets?fieldSelector=metadata.name%3Dx%2Cmetadata.namespace%3Da",
		"/api/v1/namespaces/a/pods/p/exec?command=sh;id", "/api/v1/namespaces/a/secrets%252Fx",
	} {
		f.Add("GET", s)
	}
	f.Fuzz(func(t *testing.T, method, target string) {
		r, err := readRequest(method, target)
		if err != nil {
			return // Go's server would not read it either
		}
		k, err := resolve(r)
		if err != nil {
			if !errors.Is(err, errRequest) {
				t.Fatalf("%s %q: refused with %v, not errRequest", method, target, err)
			}
			return
		}
		if k.Path != r.URL.Path || !isCleanPath(k.Path) {
			t.Fatalf("%s %q: accepted path %q is not clean", method, target, k.Path)
		}
		if raw := strings.ToLower(r.URL.EscapedPath()); strings.Contains(raw, "%2f") {
			t.Fatalf("%s %q: accepted with an escaped slash (%s)", method, target, raw)
		}
		checkRoundTrip(t, method, r, k)
		// sluice rules test and explain (Classify) see the same request.
		if method == strings.ToUpper(method) && !strings.ContainsAny(method+target, " \t\r\n") {
			st, err := Classify(method + " " + target)
			if err != nil {
				t.Fatalf("Classify(%s %q): %v, but the request is accepted", method, target, err)
			}
			want := *k
			want.UserAgent = ""
			if !reflect.DeepEqual(*st.K8s, want) || st.Kind != k.Verb {
				t.Fatalf("Classify(%s %q) = %+v, the proxy decides on %+v", method, target, *st.K8s, want)
			}
		}
	})
}

// secretShape wraps a Secret's JSON as a response carries it.
func secretShape(shape byte, secret string) string {
	switch shape % 4 {
	case 1:
		return `{"kind":"SecretList","apiVersion":"v1","metadata":{},"items":[` + secret + `]}`
	case 2:
		return `{"type":"MODIFIED","object":` + secret + `}`
	case 3:
		return `{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[{"cells":["x"],"object":` + secret + `}]}`
	}
	return secret
}

// fuzzSecret is a Secret applied with kubectl apply: data key1 (base64 of
// val1, or val1 itself when raw), stringData key2, and the last-applied
// annotation holding both.
func fuzzSecret(key1, val1, key2, val2 string, raw bool) string {
	d := base64.StdEncoding.EncodeToString([]byte(val1))
	if raw {
		d = val1
	}
	applied, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "s"},
		"data": map[string]string{key1: d}, "stringData": map[string]string{key2: val2}})
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata":   map[string]any{"name": "s", "namespace": "a", "annotations": map[string]string{lastApplied: string(applied)}},
		"data":       map[string]string{key1: d},
		"stringData": map[string]string{key2: val2},
		"type":       "Opaque",
	})
	return string(b)
}

func FuzzMaskSecret(f *testing.F) {
	f.Add("password", secretValue, "url", secretURL, false, byte(0))
	f.Add("tls.key", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n", "token", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", false, byte(1))
	f.Add(".dockerconfigjson", `{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"}}}`, "config.yaml", "password: \"s3cr3t<&>\"\n", false, byte(2))
	f.Add("k", "not base64 at all!!", "k", "\u00e9\u00e8 unicode \u2028 value", true, byte(3))
	f.Add("password", "password", "Opaque", "metadata", false, byte(0))
	f.Add("a", "12345678", "b", "\x00\x01\x02\xff\xfe binary", false, byte(1))
	masker := testMasker(f)
	f.Fuzz(func(t *testing.T, key1, val1, key2, val2 string, raw bool, shape byte) {
		plan := masker.Plan(maskColumns)
		out, _, _ := maskBody(t, plan, secretShape(shape, fuzzSecret(key1, val1, key2, val2, raw)), "secrets")
		// What the body holds whatever the values: the keys, the names,
		// the masks' replacement.
		skeleton, _, _ := maskBody(t, masker.Plan(maskColumns), secretShape(shape, fuzzSecret(key1, "", key2, "", raw)), "secrets")
		for _, v := range []string{val1, val2} {
			if len(v) < 8 {
				continue
			}
			esc, _ := json.Marshal(v)
			for _, form := range []string{v, string(esc[1 : len(esc)-1]), base64.StdEncoding.EncodeToString([]byte(v))} {
				if strings.Contains(out, form) && !strings.Contains(skeleton, form) {
					t.Fatalf("the masked response holds the value %q (as %q):\n%s", v, form, out)
				}
			}
		}
		// The masked data is still base64, as client-go decodes it.
		if !raw {
			var v any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatal(err)
			}
			for _, s := range findSecrets(v) {
				data, _ := s["data"].(map[string]any)
				for k, x := range data {
					if str, _ := x.(string); func() bool { _, err := base64.StdEncoding.DecodeString(str); return err != nil }() {
						t.Fatalf("data %q = %q is not base64 after masking", k, x)
					}
				}
			}
		}
	})
}

// findSecrets returns the Secrets of a decoded response, wherever they are.
func findSecrets(v any) []map[string]any {
	var out []map[string]any
	switch x := v.(type) {
	case map[string]any:
		if x["kind"] == "Secret" {
			return []map[string]any{x}
		}
		for _, c := range x {
			out = append(out, findSecrets(c)...)
		}
	case []any:
		for _, c := range x {
			out = append(out, findSecrets(c)...)
		}
	}
	return out
}

// bodyCTs are the content types FuzzBodyFacts reads a body as.
var bodyCTs = []string{ctJSON, ctYAML, ctJSONPatch, ctMergePatch, ctStrategicPatch, ctApplyYAML, ctProtobuf, "application/cbor", ""}

// podSpecAt wraps a pod spec where each kind keeps it.
func podSpecAt(where byte, spec map[string]any) map[string]any {
	switch where % 5 {
	case 1:
		return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "spec": map[string]any{"template": map[string]any{"spec": spec}}}
	case 2:
		return map[string]any{"apiVersion": "batch/v1", "kind": "CronJob", "spec": map[string]any{"jobTemplate": map[string]any{"spec": map[string]any{"template": map[string]any{"spec": spec}}}}}
	case 3:
		return map[string]any{"spec": map[string]any{"template": map[string]any{"spec": spec}}} // a strategic merge patch
	case 4:
		return map[string]any{"apiVersion": "v1", "kind": "PodTemplate", "template": map[string]any{"spec": spec}}
	}
	return map[string]any{"apiVersion": "v1", "kind": "Pod", "spec": spec}
}

func FuzzBodyFacts(f *testing.F) {
	for _, b := range []string{podJSON, deploymentJSON, cronJobJSON, plainPodJSON,
		`[{"op":"add","path":"/spec/containers/0/securityContext/privileged","value":true}]`,
		"kind: Pod\nspec:\n  containers:\n  - image: a\n    securityContext:\n      privileged: true\n",
		`{"spec":{"containers":[{"name":"c","securityContext":null}]}}`, `null`, `[]`, `"x"`, `{"containers":{"image":1}}`,
	} {
		for i := range bodyCTs {
			f.Add(byte(i), []byte(b), "nginx:1.27", byte(i))
		}
	}
	yes := true
	pb := encodeProtobuf(f, &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "a", SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}})
	f.Add(byte(6), pb, "a", byte(0))
	f.Add(byte(6), pb[:len(pb)/2], "a", byte(1))
	f.Fuzz(func(t *testing.T, ct byte, body []byte, image string, where byte) {
		image = string([]rune(image)) // as JSON carries it: invalid UTF-8 becomes U+FFFD
		// Whatever the body and its type: no panic, and a refusal is a
		// request error.
		var k ruleset.K8sRequest
		if err := bodyFacts(bodyCTs[int(ct)%len(bodyCTs)], body, &k); err != nil && !errors.Is(err, errRequest) {
			t.Fatalf("bodyFacts: %v is not errRequest", err)
		}
		// A privileged container, with the fuzzer's JSON (if the body is
		// JSON) beside it in the container, its securityContext and the
		// pod spec, is flagged, and its image seen.
		var extra any
		if json.Unmarshal(body, &extra) != nil {
			extra = string(body)
		}
		spec := map[string]any{
			"extra":          extra,
			"initContainers": []any{map[string]any{"name": "init", "image": "init:1", "extra": extra}},
			"containers": []any{
				map[string]any{"name": "other", "extra": extra, "securityContext": extra},
				map[string]any{"name": "c", "image": image, "extra": extra, "securityContext": map[string]any{"privileged": true, "extra": extra}},
			},
		}
		j, err := json.Marshal(podSpecAt(where, spec))
		if err != nil {
			t.Skip(err) // the fuzzer's value does not encode
		}
		bodies := []struct {
			ct   string
			body []byte
		}{{ctJSON, j}, {ctStrategicPatch, j}}
		// YAML when the fuzzer's strings can be written in it (YAML has
		// no way to write most control characters).
		if y, err := yaml.JSONToYAML(j); err == nil {
			bodies = append(bodies, struct {
				ct   string
				body []byte
			}{ctApplyYAML, y})
		}
		for _, tc := range bodies {
			var k ruleset.K8sRequest
			if err := bodyFacts(tc.ct, tc.body, &k); err != nil {
				t.Fatalf("%s: bodyFacts refused a pod spec: %v\n%s", tc.ct, err, tc.body)
			}
			if !k.Privileged {
				t.Fatalf("%s: the privileged container is not flagged:\n%s", tc.ct, tc.body)
			}
			if !slices.Contains(k.Images, image) || !slices.Contains(k.Images, "init:1") {
				t.Fatalf("%s: images %q miss %q or init:1:\n%s", tc.ct, k.Images, image, tc.body)
			}
		}
		// The same container added by a JSON patch.
		op, _ := json.Marshal([]any{map[string]any{"op": "add", "path": "/spec/template/spec/containers/-",
			"value": map[string]any{"name": "c", "image": image, "extra": extra, "securityContext": map[string]any{"privileged": true}}}})
		k = ruleset.K8sRequest{}
		if err := bodyFacts(ctJSONPatch, op, &k); err != nil || !k.Privileged || !slices.Contains(k.Images, image) {
			t.Fatalf("json patch: %v, privileged %v, images %q:\n%s", err, k.Privileged, k.Images, op)
		}
	})
}
