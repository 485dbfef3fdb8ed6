package k8s

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/ruleset"
)

// infoFactory resolves requests exactly as kube-apiserver does: it is the
// API server's own RequestInfoFactory, with the prefixes the server
// configures (k8s.io/apiserver's DefaultAPIPrefixes).
var infoFactory = &request.RequestInfoFactory{
	APIPrefixes:          sets.NewString("api", "apis"),
	GrouplessAPIPrefixes: sets.NewString("api"),
}

// errRequest is the class of requests Sluice refuses because it cannot
// tell what the API server would make of them: the refusal is a 400.
var errRequest = errors.New("request refused")

// resolve returns what rules see of r, without its body. A request whose
// path or query could be read two ways (an uncleaned path, an escaped
// slash, a repeated watch) is refused: Sluice decides on what the API
// server will do, so nothing may be left to interpretation.
func resolve(r *http.Request) (*ruleset.K8sRequest, error) {
	p := r.URL.Path
	switch {
	case p == "" || p[0] != '/':
		return nil, fmt.Errorf("%w: the path %q is not absolute", errRequest, p)
	case strings.Contains(r.URL.RawPath, "%2F") || strings.Contains(r.URL.RawPath, "%2f"):
		return nil, fmt.Errorf("%w: the path %q has an escaped slash", errRequest, r.URL.RawPath)
	case p != "/" && path.Clean(p) != strings.TrimSuffix(p, "/"):
		return nil, fmt.Errorf("%w: the path %q is not clean (it has //, . or .. segments)", errRequest, p)
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("%w: the query does not parse: %v", errRequest, err)
	}
	for _, k := range []string{"watch", "fieldSelector", "labelSelector"} {
		if len(q[k]) > 1 {
			return nil, fmt.Errorf("%w: the query repeats %s", errRequest, k)
		}
	}
	info, err := infoFactory.NewRequestInfo(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errRequest, err)
	}
	return &ruleset.K8sRequest{
		Verb:        info.Verb,
		IsResource:  info.IsResourceRequest,
		Group:       info.APIGroup,
		Version:     info.APIVersion,
		Resource:    info.Resource,
		Subresource: info.Subresource,
		Namespace:   info.Namespace,
		Name:        info.Name,
		Path:        p,
		UserAgent:   r.UserAgent(),
	}, nil
}

// hasBody reports whether rules see fields of k's request body: a create,
// update or patch of a resource.
func hasBody(k *ruleset.K8sRequest) bool {
	if !k.IsResource {
		return false
	}
	switch k.Verb {
	case ruleset.K8sCreate, ruleset.K8sUpdate, ruleset.K8sPatch:
		return true
	}
	return false
}

// Content types of request bodies (and of the patches of a PATCH).
const (
	ctJSON           = "application/json"
	ctYAML           = "application/yaml"
	ctJSONPatch      = "application/json-patch+json"
	ctMergePatch     = "application/merge-patch+json"
	ctStrategicPatch = "application/strategic-merge-patch+json"
	ctApplyYAML      = "application/apply-patch+yaml"
	ctProtobuf       = "application/vnd.kubernetes.protobuf"
)

// bodyFacts fills k's body fields from body, sent with Content-Type ct.
// A body Sluice cannot read (protobuf, CBOR, malformed JSON or YAML) is
// an error: rules about images and privileges could not be applied.
func bodyFacts(ct string, body []byte, k *ruleset.K8sRequest) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("%w: the request body's Content-Type %q does not parse", errRequest, ct)
	}
	var v any
	switch mt {
	case ctJSON, ctMergePatch, ctStrategicPatch, ctJSONPatch:
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return fmt.Errorf("%w: the JSON body does not parse: %v", errRequest, err)
		}
		if d.More() {
			return fmt.Errorf("%w: the JSON body holds more than one value", errRequest)
		}
	case ctYAML, ctApplyYAML:
		j, err := yaml.YAMLToJSONStrict(body)
		if err != nil {
			return fmt.Errorf("%w: the YAML body does not parse: %v", errRequest, err)
		}
		d := json.NewDecoder(bytes.NewReader(j))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return fmt.Errorf("%w: the YAML body does not parse: %v", errRequest, err)
		}
	case ctProtobuf:
		if v, err = protobufBody(body); err != nil {
			return fmt.Errorf("%w: the protobuf body cannot be read: %v", errRequest, err)
		}
	default:
		return fmt.Errorf("%w: Sluice reads JSON, YAML and protobuf request bodies, not %s; configure the client for JSON (client-go: rest.Config.ContentType = \"application/json\")", errRequest, mt)
	}
	f := facts{seen: map[string]bool{}}
	if mt == ctJSONPatch {
		ops, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%w: a JSON patch is a list of operations", errRequest)
		}
		for _, op := range ops {
			o, _ := op.(map[string]any)
			if name, _ := o["op"].(string); name == "copy" || name == "move" {
				// Their value is the server's, which Sluice does not
				// see: copying a true onto privileged would pass unseen.
				return fmt.Errorf("%w: a JSON patch's %s takes its value from the object on the server, which Sluice cannot see; send the value itself with add or replace", errRequest, name)
			}
			p, _ := o["path"].(string)
			f.patchOp(p, o["value"])
		}
	} else {
		if o, ok := v.(map[string]any); ok {
			k.ObjectKind, _ = o["kind"].(string)
		}
		f.walk(v, "")
	}
	k.Images, k.Privileged, k.HostPath, k.HostNetwork = f.images, f.privileged, f.hostPath, f.hostNetwork
	return nil
}

// facts collects a pod spec's fields from an object, wherever in it the
// spec is (a Pod's spec, a workload's template, a CronJob's job
// template): the walk looks at every container list and every
// securityContext, hostPath and hostNetwork, so no kind is missed.
type facts struct {
	images                            []string
	seen                              map[string]bool
	privileged, hostPath, hostNetwork bool
}

func (f *facts) image(v any) {
	if s, ok := v.(string); ok && !f.seen[s] {
		f.seen[s] = true
		f.images = append(f.images, s)
	}
}

// walk visits v, whose key in its parent object is key.
func (f *facts) walk(v any, key string) {
	switch x := v.(type) {
	case map[string]any:
		// In key order, so that the same body always lists its images
		// in the same order.
		for _, k := range slices.Sorted(maps.Keys(x)) {
			c := x[k]
			switch k {
			case "hostPath":
				if c != nil {
					f.hostPath = true
				}
			case "hostNetwork":
				if b, _ := c.(bool); b {
					f.hostNetwork = true
				}
			case "privileged":
				if b, _ := c.(bool); b && key == "securityContext" {
					f.privileged = true
				}
			case "image":
				if isContainerList(key) {
					f.image(c)
				}
			}
			f.walk(c, k)
		}
	case []any:
		for _, c := range x {
			if isContainerList(key) {
				if m, ok := c.(map[string]any); ok {
					f.image(m["image"])
				}
			}
			f.walk(c, key)
		}
	}
}

// isContainerList reports whether key names a pod spec's list of
// containers.
func isContainerList(key string) bool {
	return key == "containers" || key == "initContainers" || key == "ephemeralContainers"
}

// patchOp collects what one JSON patch operation sets: its value is
// walked as the object at its path, and a path ending in a field rules
// look at (.../image, .../privileged, .../hostNetwork, .../hostPath)
// counts as that field.
func (f *facts) patchOp(p string, value any) {
	parts := strings.Split(p, "/")
	last, parent := "", ""
	if n := len(parts); n > 0 {
		last = parts[n-1]
		for i := n - 2; i >= 0; i-- {
			if !isIndex(parts[i]) {
				parent = parts[i]
				break
			}
		}
	}
	switch last {
	case "image":
		f.image(value)
	case "privileged":
		if b, _ := value.(bool); b {
			f.privileged = true
		}
	case "hostNetwork":
		if b, _ := value.(bool); b {
			f.hostNetwork = true
		}
	case "hostPath":
		if value != nil {
			f.hostPath = true
		}
	}
	if slices.Contains(parts, "hostPath") {
		f.hostPath = true
	}
	key := last
	if isIndex(last) || last == "-" {
		key = parent
	}
	f.walk(value, key)
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Classify resolves a request line, "GET /api/v1/namespaces/a/pods" (the
// method may be left out: GET), into what rules see, for sluice rules
// test and explain. A body can't be given: its fields stay empty.
func Classify(text string) (ruleset.Statement, error) {
	line := strings.TrimSpace(text)
	method, target := "GET", line
	if i := strings.IndexByte(line, ' '); i > 0 {
		method, target = strings.ToUpper(line[:i]), strings.TrimSpace(line[i+1:])
	}
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: k8s\r\n\r\n")))
	if err != nil {
		return ruleset.Statement{}, fmt.Errorf("not a request line (METHOD /path): %v", err)
	}
	k, err := resolve(req)
	if err != nil {
		return ruleset.Statement{}, err
	}
	return ruleset.Statement{Kind: k.Verb, Text: method + " " + target, K8s: k}, nil
}
