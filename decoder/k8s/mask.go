package k8s

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"

	"github.com/sluicehq/sluice/enforcer/mask"
)

// The mask columns of Kubernetes values: mask rules name them as
// "table.column", with the resource as the table and the field as the
// column. secrets.data and secrets.stringData are a Secret's values;
// configmaps.data and configmaps.binaryData a ConfigMap's; pods.env the
// env values of a pod's containers; pods.log the lines of a pod's log.
// Detectors run over every one of them that no column pattern masks.
const (
	colSecretData = iota
	colSecretStringData
	colConfigMapData
	colConfigMapBinaryData
	colPodEnv
	colPodLog
)

var maskColumns = []mask.Column{
	colSecretData:          {Table: "secrets", Name: "data"},
	colSecretStringData:    {Table: "secrets", Name: "stringData"},
	colConfigMapData:       {Table: "configmaps", Name: "data"},
	colConfigMapBinaryData: {Table: "configmaps", Name: "binaryData"},
	colPodEnv:              {Table: "pods", Name: "env"},
	colPodLog:              {Table: "pods", Name: "log"},
}

// lastApplied is the annotation kubectl apply keeps the applied object
// in, values included: a Secret's data in clear text.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// objects masks the API objects of one response body (or request body,
// for the recording) with plan: a single object, the items of a list, the
// objects of a Table's rows, or a watch event's object. resource is the
// request's resource, for objects that do not say their kind (a list's
// items, a Table's partial metadata). It returns how many objects the
// body held (a list's items, a Table's rows) and whether it changed
// anything.
func objects(plan *mask.Plan, v any, resource string) (items int64, changed bool) {
	o, ok := v.(map[string]any)
	if !ok {
		return 0, false
	}
	if ev, ok := o["object"].(map[string]any); ok && o["type"] != nil {
		// A watch event: of one object, or of a Table of them (kubectl
		// get -w asks for Tables).
		return objects(plan, ev, resource)
	}
	if list, ok := o["items"].([]any); ok {
		for _, it := range list {
			if m, ok := it.(map[string]any); ok && object(plan, m, resource) {
				changed = true
			}
		}
		return int64(len(list)), changed
	}
	if o["kind"] == "Table" {
		rows, _ := o["rows"].([]any)
		for _, r := range rows {
			row, _ := r.(map[string]any)
			if m, ok := row["object"].(map[string]any); ok && object(plan, m, resource) {
				changed = true
			}
		}
		return int64(len(rows)), changed
	}
	return 1, object(plan, o, resource)
}

// object masks one API object, by its kind or else the request's
// resource.
func object(plan *mask.Plan, o map[string]any, resource string) bool {
	if plan == nil {
		return false
	}
	switch o["kind"] {
	case "Secret":
		resource = "secrets"
	case "ConfigMap":
		resource = "configmaps"
	case "Pod":
		resource = "pods"
	}
	changed := false
	switch resource {
	case "secrets":
		changed = values(plan, o["data"], colSecretData, true)
		changed = values(plan, o["stringData"], colSecretStringData, false) || changed
		changed = annotation(plan, o, colSecretData) || changed
	case "configmaps":
		changed = values(plan, o["data"], colConfigMapData, false)
		changed = values(plan, o["binaryData"], colConfigMapBinaryData, true) || changed
		changed = annotation(plan, o, colConfigMapData) || changed
	case "pods":
		spec, _ := o["spec"].(map[string]any)
		for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
			cs, _ := spec[list].([]any)
			for _, c := range cs {
				cm, _ := c.(map[string]any)
				env, _ := cm["env"].([]any)
				for _, e := range env {
					if em, ok := e.(map[string]any); ok {
						if s, ok := em["value"].(string); ok {
							if out, ok := apply(plan, colPodEnv, s, false); ok {
								em["value"], changed = out, true
							}
						}
					}
				}
			}
		}
		changed = annotation(plan, o, colPodEnv) || changed
	}
	return changed
}

// values masks the values of a map of strings (a Secret's data), base64
// encoded when b64 is set.
func values(plan *mask.Plan, v any, col int, b64 bool) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	changed := false
	for k, x := range m {
		if s, ok := x.(string); ok {
			if out, ok := apply(plan, col, s, b64); ok {
				m[k], changed = out, true
			}
		}
	}
	return changed
}

// annotation masks the last-applied-configuration annotation of o as a
// value of col: it holds the object as kubectl applied it, values and
// all.
func annotation(plan *mask.Plan, o map[string]any, col int) bool {
	meta, _ := o["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	s, ok := ann[lastApplied].(string)
	if !ok {
		return false
	}
	if _, masked := plan.Masked(col); masked {
		// Masked whole, by the column's function (not under monitor
		// mode, where apply changes nothing).
		out, ok := apply(plan, col, s, false)
		if ok {
			ann[lastApplied] = out
		}
		return ok
	}
	// Detectors only: the annotation is JSON, and the detectors look for
	// values in its text.
	if out, ok := apply(plan, col, s, false); ok {
		ann[lastApplied] = out
		return true
	}
	return false
}

// apply masks one value of col. b64 says the value is base64 on the
// wire: it is decoded, masked and encoded again, so that clients that
// decode it (client-go, kubectl's jsonpath | base64 -d) read the masked
// text. A masking function that says NULL gives the empty value.
func apply(plan *mask.Plan, col int, s string, b64 bool) (string, bool) {
	v := []byte(s)
	if b64 {
		if d, err := base64.StdEncoding.DecodeString(s); err == nil {
			v = d
		} else {
			b64 = false // not base64 after all: masked as it is
		}
	}
	out, null, changed := plan.Apply(col, v, nil)
	if !changed || plan.DryRun {
		return s, false
	}
	if null {
		out = nil
	}
	if b64 {
		return base64.StdEncoding.EncodeToString(out), true
	}
	return string(out), true
}

// decodeJSON decodes one JSON value keeping numbers as they were written.
func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// logMasker masks a pod log's text line by line with col pods.log, as it
// streams (kubectl logs -f).
type logMasker struct {
	src  *bufio.Reader
	body io.Closer
	plan *mask.Plan
	out  []byte
	err  error
}

// maxLogLine bounds a log line held for masking; a longer one is masked
// in pieces of this size.
const maxLogLine = 64 << 10

func newLogMasker(body io.ReadCloser, plan *mask.Plan) *logMasker {
	return &logMasker{src: bufio.NewReaderSize(body, maxLogLine), body: body, plan: plan}
}

func (l *logMasker) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		line, err := l.src.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			err = nil
		}
		l.err = err
		if len(line) > 0 {
			masked, null, changed := l.plan.Apply(colPodLog, line, nil)
			switch {
			case !changed || l.plan.DryRun:
				l.out = append(l.out[:0], line...)
			case null:
				l.out = append(l.out[:0], '\n')
			default:
				l.out = append(l.out[:0], masked...)
				if line[len(line)-1] == '\n' && (len(masked) == 0 || masked[len(masked)-1] != '\n') {
					l.out = append(l.out, '\n')
				}
			}
		}
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

func (l *logMasker) Close() error { return l.body.Close() }
