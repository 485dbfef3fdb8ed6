package k8s

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// maskRules is a ruleset with a k8s target whose mask rule masks Secrets'
// values by column and runs the email and secret detectors over every
// other value.
const maskRules = `
target "cluster" {
  protocol = "k8s"
  address  = ["127.0.0.1:6443"]
}
policy "ci" {
  targets = ["cluster"]
  mask "secrets" {
    columns = ["secrets.data", "secrets.stringData"]
    detect  = ["email", "secret"]
  }
}
default { action = "allow" }
`

// testMasker compiles the mask rule of maskRules, as the decider does for
// a request the rule fires on.
func testMasker(t testing.TB) *mask.Masker {
	t.Helper()
	rs, diags := ruleset.Parse(map[string][]byte{"k8s.hcl": []byte(maskRules)})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	d := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "cluster", Protocol: ruleset.ProtoK8s}}).
		Decide(&ruleset.Statement{Kind: "get", K8s: &ruleset.K8sRequest{Verb: "get", IsResource: true, Version: "v1", Resource: "secrets", Namespace: "a", Name: "s"}}, ruleset.Result{})
	if len(d.Masks) != 1 || d.Masks[0].ID != "ci/mask/secrets" {
		t.Fatalf("decision masks %v, want ci/mask/secrets", d.Masks)
	}
	m, err := mask.NewCache(bytes.Repeat([]byte{7}, 32)).Masker(d.Masks)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testPlan(t testing.TB) *mask.Plan { return testMasker(t).Plan(maskColumns) }

// maskBody masks a JSON body as filterResponse does and returns what the
// client gets.
func maskBody(t testing.TB, plan *mask.Plan, body, resource string) (out string, items int64, changed bool) {
	t.Helper()
	v, err := decodeJSON([]byte(body))
	if err != nil {
		t.Fatalf("test body: %v", err)
	}
	items, changed = objects(plan, v, resource)
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), items, changed
}

const (
	secretValue  = "hunter2-prod-database-password"
	secretURL    = "postgres://app:s3cr3t-pw@db:5432/app"
	ownerEmail   = "ops@example.com"
	redacted     = ruleset.DefaultReplacement
	b64Secret    = "aHVudGVyMi1wcm9kLWRhdGFiYXNlLXBhc3N3b3Jk" // base64(secretValue)
	lastAppliedS = `{"apiVersion":"v1","data":{"password":"` + b64Secret + `"},"kind":"Secret","metadata":{"annotations":{},"name":"db","namespace":"a"},"stringData":{"url":"` + secretURL + `"},"type":"Opaque"}`
)

// secretJSON is a Secret as the API server returns it after kubectl apply.
func secretJSON(name string) string {
	ann, _ := json.Marshal(lastAppliedS + "\n")
	return `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"` + name + `","namespace":"a","uid":"0b5e6f3c","resourceVersion":"42",
  "annotations":{"` + lastApplied + `":` + string(ann) + `,"team":"payments"}},
  "data":{"password":"` + b64Secret + `","user":"YXBw"},"stringData":{"url":"` + secretURL + `"},"type":"Opaque"}`
}

// leaks reports which of the secret's values, plain or base64, are in out.
func leaks(out string) []string {
	var found []string
	for _, v := range []string{secretValue, b64Secret, secretURL, "s3cr3t-pw", "YXBw"} {
		if strings.Contains(out, v) {
			found = append(found, v)
		}
	}
	return found
}

// checkSecret checks one masked Secret as a client decodes it: data's
// values still base64 (client-go decodes them into []byte) and masked,
// stringData masked, the last-applied annotation masked, the rest as it
// was.
func checkSecret(t *testing.T, s map[string]any) {
	t.Helper()
	data, _ := s["data"].(map[string]any)
	for k, v := range data {
		str, _ := v.(string)
		d, err := base64.StdEncoding.DecodeString(str)
		if err != nil {
			t.Errorf("data.%s = %q is not base64 after masking: %v", k, str, err)
			continue
		}
		if string(d) != redacted {
			t.Errorf("data.%s decodes to %q, want %q", k, d, redacted)
		}
	}
	if len(data) != 2 {
		t.Errorf("data has %d keys, want 2: %v", len(data), data)
	}
	if sd, _ := s["stringData"].(map[string]any); sd["url"] != redacted {
		t.Errorf("stringData.url = %v, want %q", sd["url"], redacted)
	}
	meta, _ := s["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	if ann[lastApplied] != redacted {
		t.Errorf("last-applied annotation = %v, want %q", ann[lastApplied], redacted)
	}
	if ann["team"] != "payments" || s["type"] != "Opaque" {
		t.Errorf("unmasked fields changed: annotations %v, type %v", ann, s["type"])
	}
}

func TestMaskSecret(t *testing.T) {
	out, items, changed := maskBody(t, testPlan(t), secretJSON("db"), "secrets")
	if items != 1 || !changed {
		t.Errorf("objects = %d, %v; want 1, true", items, changed)
	}
	if l := leaks(out); l != nil {
		t.Fatalf("the masked secret holds %q:\n%s", l, out)
	}
	var s map[string]any
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	checkSecret(t, s)
	// A Secret's values are masked by kind whatever the request's
	// resource (a create's answer, a generic client).
	out, _, _ = maskBody(t, testPlan(t), secretJSON("db"), "")
	if l := leaks(out); l != nil {
		t.Errorf("a Secret answering a request of no resource holds %q", l)
	}
}

func TestMaskSecretList(t *testing.T) {
	// A list's items say no kind: the request's resource tells.
	item := func(name string) string {
		return strings.Replace(secretJSON(name), `"apiVersion":"v1","kind":"Secret",`, "", 1)
	}
	body := `{"kind":"SecretList","apiVersion":"v1","metadata":{"resourceVersion":"42"},"items":[` + item("a") + `,` + item("b") + `]}`
	out, items, changed := maskBody(t, testPlan(t), body, "secrets")
	if items != 2 || !changed {
		t.Errorf("objects = %d, %v; want 2, true", items, changed)
	}
	if l := leaks(out); l != nil {
		t.Fatalf("the masked list holds %q:\n%s", l, out)
	}
	var list struct{ Items []map[string]any }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	for _, s := range list.Items {
		checkSecret(t, s)
	}
}

// tableJSON is kubectl get secrets' answer: a Table whose rows carry
// each object's metadata (includeObject=Metadata, kubectl's default), the
// last-applied annotation included.
func tableJSON() string {
	ann, _ := json.Marshal(lastAppliedS)
	return `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"42"},
  "columnDefinitions":[{"name":"Name","type":"string"},{"name":"Type","type":"string"},{"name":"Data","type":"string"}],
  "rows":[{"cells":["db","Opaque",2],"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",
    "metadata":{"name":"db","namespace":"a","annotations":{"` + lastApplied + `":` + string(ann) + `}}}},
   {"cells":["tls","kubernetes.io/tls",2],"object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"tls","namespace":"a"}}}]}`
}

func TestMaskTable(t *testing.T) {
	out, items, changed := maskBody(t, testPlan(t), tableJSON(), "secrets")
	if items != 2 || !changed {
		t.Errorf("objects = %d, %v; want 2, true", items, changed)
	}
	if l := leaks(out); l != nil {
		t.Fatalf("the masked Table holds %q:\n%s", l, out)
	}
	if !strings.Contains(out, `"cells":["db","Opaque",2]`) {
		t.Errorf("the Table's cells changed:\n%s", out)
	}
	// includeObject=Object: the rows carry whole Secrets.
	body := `{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[{"cells":["db"],"object":` + secretJSON("db") + `}]}`
	out, items, _ = maskBody(t, testPlan(t), body, "secrets")
	if l := leaks(out); items != 1 || l != nil {
		t.Errorf("a Table with whole objects: %d rows, holds %q", items, l)
	}
}

func TestMaskWatchEvent(t *testing.T) {
	for _, typ := range []string{"ADDED", "MODIFIED", "DELETED"} {
		out, items, changed := maskBody(t, testPlan(t), `{"type":"`+typ+`","object":`+secretJSON("db")+`}`, "secrets")
		if items != 1 || !changed {
			t.Errorf("%s: objects = %d, %v; want 1, true", typ, items, changed)
		}
		if l := leaks(out); l != nil {
			t.Errorf("%s: the masked event holds %q", typ, l)
		}
		var ev struct {
			Type   string
			Object map[string]any
		}
		if err := json.Unmarshal([]byte(out), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type != typ {
			t.Errorf("event type %q, want %q", ev.Type, typ)
		}
		checkSecret(t, ev.Object)
	}
}

// TestMaskWatchTable: kubectl get secrets -w asks for a watch of Tables
// (Accept: application/json;as=Table;v=v1;g=meta.k8s.io), each event's
// object a Table whose rows carry the metadata, last-applied annotation
// included.
func TestMaskWatchTable(t *testing.T) {

	out, _, changed := maskBody(t, testPlan(t), `{"type":"ADDED","object":`+tableJSON()+`}`, "secrets")
	if l := leaks(out); l != nil || !changed {
		t.Errorf("a watch event of a Table holds %q (changed %v):\n%s", l, changed, out)
	}
}

func TestMaskConfigMapDetector(t *testing.T) {
	body := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app","namespace":"a"},
  "data":{"owner":"contact ` + ownerEmail + ` on call","level":"debug","token":"Zq8Lp2Vx9Rt4Wm7Nc3Hb6Jk1"},"binaryData":{"blob":"` + base64.StdEncoding.EncodeToString([]byte("mail "+ownerEmail)) + `"}}`
	out, items, changed := maskBody(t, testPlan(t), body, "configmaps")
	if items != 1 || !changed {
		t.Errorf("objects = %d, %v; want 1, true", items, changed)
	}
	var cm struct {
		Data       map[string]string
		BinaryData map[string]string
	}
	if err := json.Unmarshal([]byte(out), &cm); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, ownerEmail) || !strings.HasPrefix(cm.Data["owner"], "contact ") || !strings.HasSuffix(cm.Data["owner"], " on call") {
		t.Errorf("data.owner = %q: want the email alone masked", cm.Data["owner"])
	}
	if cm.Data["level"] != "debug" {
		t.Errorf("data.level = %q, want it as it was", cm.Data["level"])
	}
	if strings.Contains(out, "Zq8Lp2Vx9Rt4Wm7Nc3Hb6Jk1") {
		t.Errorf("the secret detector missed data.token: %q", cm.Data["token"])
	}
	blob, err := base64.StdEncoding.DecodeString(cm.BinaryData["blob"])
	if err != nil || bytes.Contains(blob, []byte(ownerEmail)) || !bytes.HasPrefix(blob, []byte("mail ")) {
		t.Errorf("binaryData.blob decodes to %q, %v: want base64 with the email masked", blob, err)
	}
	// A ConfigMap with nothing to detect is not changed.
	if _, _, changed := maskBody(t, testPlan(t), `{"kind":"ConfigMap","data":{"level":"debug"}}`, "configmaps"); changed {
		t.Error("a ConfigMap with nothing to mask changed")
	}
}

func TestMaskPodEnv(t *testing.T) {
	body := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"a"},"spec":{
  "initContainers":[{"name":"init","image":"busybox","env":[{"name":"NOTIFY","value":"` + ownerEmail + `"}]}],
  "containers":[{"name":"app","image":"acme/app:1","env":[
    {"name":"ADMIN_EMAIL","value":"admin ` + ownerEmail + `"},
    {"name":"LOG_LEVEL","value":"debug"},
    {"name":"DB_PASSWORD","valueFrom":{"secretKeyRef":{"name":"db","key":"password"}}}]}]}}`
	out, items, changed := maskBody(t, testPlan(t), body, "pods")
	if items != 1 || !changed {
		t.Errorf("objects = %d, %v; want 1, true", items, changed)
	}
	if strings.Contains(out, ownerEmail) {
		t.Errorf("the pod's env holds the email:\n%s", out)
	}
	for _, keep := range []string{`"value":"debug"`, `"image":"acme/app:1"`, `"secretKeyRef":{"key":"password","name":"db"}`, `"value":"admin `} {
		if !strings.Contains(out, keep) {
			t.Errorf("the masked pod lost %s:\n%s", keep, out)
		}
	}
	// A pod list's items say no kind.
	list := `{"kind":"PodList","items":[{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","env":[{"name":"E","value":"` + ownerEmail + `"}]}]}}]}`
	if out, _, _ := maskBody(t, testPlan(t), list, "pods"); strings.Contains(out, ownerEmail) {
		t.Errorf("a pod list's env holds the email:\n%s", out)
	}
}

// TestMaskDryRun: in monitor mode nothing is masked, and the plan counts
// what would have been.
func TestMaskDryRun(t *testing.T) {
	for _, tc := range []struct{ name, body, resource string }{
		{"secret", secretJSON("db"), "secrets"},
		{"table", tableJSON(), "secrets"},
		{"configmap", `{"kind":"ConfigMap","data":{"owner":"` + ownerEmail + `"}}`, "configmaps"},
		{"pod", `{"kind":"Pod","spec":{"containers":[{"env":[{"name":"E","value":"` + ownerEmail + `"}]}]}}`, "pods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := testPlan(t)
			plan.DryRun = true
			out, _, _ := maskBody(t, plan, tc.body, tc.resource)
			want, _, _ := maskBody(t, nil, tc.body, tc.resource)
			if out != want {
				t.Errorf("dry run changed the body:\n%s\nwant\n%s", out, want)
			}
			if maskedValues(plan) == 0 {
				t.Error("the dry run counted nothing it would have masked")
			}
		})
	}
}

// TestMaskDryRunUnchanged: in monitor mode objects reports no change, so
// that filterResponse and watchFilter relay the server's bytes as they
// are rather than a re-encoding (keys sorted, <, > and & escaped).
func TestMaskDryRunUnchanged(t *testing.T) {

	plan := testPlan(t)
	plan.DryRun = true
	if _, _, changed := maskBody(t, plan, secretJSON("db"), "secrets"); changed {
		t.Error("a dry run reports the Secret changed")
	}
}

// TestMaskNilPlan: a request with no mask rule passes its objects as they
// are.
func TestMaskNilPlan(t *testing.T) {
	out, items, changed := maskBody(t, nil, secretJSON("db"), "secrets")
	if items != 1 || changed || !strings.Contains(out, b64Secret) {
		t.Errorf("objects(nil plan) = %d, %v", items, changed)
	}
	if items, changed := objects(testPlan(t), []any{"x"}, "secrets"); items != 0 || changed {
		t.Errorf("objects(a JSON list) = %d, %v; want 0, false", items, changed)
	}
}

// chunkReader returns its text in reads of the given sizes, cycling.
type chunkReader struct {
	b     []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := min(c.sizes[c.i%len(c.sizes)], len(p), len(c.b))
	c.i++
	copy(p, c.b[:n])
	c.b = c.b[n:]
	return n, nil
}

func TestLogMasker(t *testing.T) {
	long := strings.Repeat("x", maxLogLine+100) + " contact " + ownerEmail + " now\n"
	log := "2026-12-04T10:00:00Z starting\n" +
		"2026-12-04T10:00:01Z notify " + ownerEmail + " that the deploy is done\n" +
		long +
		"2026-12-04T10:00:02Z last line, no newline, mail " + ownerEmail
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return strings.NewReader(log) }},
		{"one byte", func() io.Reader { return iotest.OneByteReader(strings.NewReader(log)) }},
		{"split in the email", func() io.Reader { return &chunkReader{b: []byte(log), sizes: []int{41, 7, 3, 1000}} }},
		{"half reads", func() io.Reader { return iotest.HalfReader(strings.NewReader(log)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lm := newLogMasker(io.NopCloser(tc.r()), testPlan(t))
			// The client reads in small pieces too.
			out, err := io.ReadAll(iotest.HalfReader(lm))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(out, []byte(ownerEmail)) {
				t.Errorf("the log holds the email")
			}
			lines := strings.Split(string(out), "\n")
			if len(lines) != 4 {
				t.Fatalf("%d lines, want 4 (the last without newline)", len(lines))
			}
			if lines[0] != "2026-12-04T10:00:00Z starting" {
				t.Errorf("line 1 = %q", lines[0])
			}
			if !strings.HasPrefix(lines[1], "2026-12-04T10:00:01Z notify ") || !strings.HasSuffix(lines[1], " that the deploy is done") {
				t.Errorf("line 2 = %q: want the email alone masked", lines[1])
			}
			if !strings.HasPrefix(lines[2], strings.Repeat("x", maxLogLine+100)) || !strings.HasSuffix(lines[2], " now") {
				t.Errorf("the long line lost its text: %d bytes", len(lines[2]))
			}
			if !strings.HasPrefix(lines[3], "2026-12-04T10:00:02Z last line, no newline, mail ") {
				t.Errorf("line 4 = %q", lines[3])
			}
			if err := lm.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestLogMaskerDryRun: monitor mode passes the log as it is.
func TestLogMaskerDryRun(t *testing.T) {
	log := "a\nnotify " + ownerEmail + "\n" + strings.Repeat("y", 2*maxLogLine+3) + "\nend"
	plan := testPlan(t)
	plan.DryRun = true
	out, err := io.ReadAll(newLogMasker(io.NopCloser(iotest.OneByteReader(strings.NewReader(log))), plan))
	if err != nil || string(out) != log {
		t.Errorf("dry run changed the log (%d bytes, want %d): %v", len(out), len(log), err)
	}
	if maskedValues(plan) == 0 {
		t.Error("the dry run counted nothing it would have masked")
	}
}

// TestLogMaskerError: a read error of the server's log reaches the client
// after the lines before it.
func TestLogMaskerError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("one\ntwo "+ownerEmail+"\n"), iotest.ErrReader(io.ErrUnexpectedEOF))
	out, err := io.ReadAll(newLogMasker(io.NopCloser(r), testPlan(t)))
	if err != io.ErrUnexpectedEOF {
		t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
	}
	if !strings.HasPrefix(string(out), "one\ntwo ") || strings.Contains(string(out), ownerEmail) {
		t.Errorf("out = %q", out)
	}
}
