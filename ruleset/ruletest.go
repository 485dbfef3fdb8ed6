package ruleset

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

var testSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "target", Required: true},
	{Name: "address"},
	{Name: "identity"},
	{Name: "identity_level"},
	{Name: "process"},
	{Name: "query"},
	{Name: "statement"},
	{Name: "ssh"},
	{Name: "sftp"},
	{Name: "k8s"},
	{Name: "result"},
	{Name: "expect", Required: true},
	{Name: "expect_rule"},
	{Name: "expect_record"},
	{Name: "expect_credential"},
}}

// ruleTest is one compiled test block.
type ruleTest struct {
	name         string
	rng          hcl.Range
	in           Input
	query        string
	hasQuery     bool
	expect       Action
	expectRule   string
	expectRecord RecordLevel
	checkRecord  bool
	// expectCred is the credential the flow must be granted, "none" for
	// a refusal, or "" when the test does not check.
	expectCred string
}

// Classifier turns a command's text into a Statement for a protocol
// ("postgres", "mysql", "ssh", "k8s"): a SQL statement, for ssh an exec
// request (Statement.SSH) running the text as its command line, and for
// k8s the Kubernetes API request (Statement.K8s) of a request line such
// as "GET /api/v1/namespaces/ci/pods", resolved as the API server
// resolves it (without a body, so the object's fields stay empty). The CLI
// passes one backed by the protocol decoders' parsers, so this package
// stays free of SQL and shell parsing. An error fails the test that
// needed it.
type Classifier func(protocol, text string) (Statement, error)

// TestResult is the outcome of one test block.
type TestResult struct {
	Name     string
	Range    hcl.Range // the test block's header
	Passed   bool
	Decision Decision // what the ruleset decided; zero if the test could not run
	// Message says why the test failed, in one sentence; empty if it passed.
	Message string
}

// Tests returns how many test blocks the ruleset has.
func (rs *Ruleset) Tests() int { return len(rs.tests) }

// RunTests runs every test block in source order. Tests compare the
// computed Action, so they mean the same in monitor mode. classify may be
// nil when no test uses query.
func (rs *Ruleset) RunTests(classify Classifier) []TestResult {
	results := make([]TestResult, 0, len(rs.tests))
	for _, t := range rs.tests {
		res := TestResult{Name: t.name, Range: t.rng}
		in := t.in
		if t.hasQuery {
			if classify == nil {
				res.Message = "the test has a query but no classifier was given"
				results = append(results, res)
				continue
			}
			st, err := classify(in.Target.Protocol, t.query)
			if err != nil {
				res.Message = fmt.Sprintf("classify query: %v", err)
				results = append(results, res)
				continue
			}
			in.Statement = st
		}
		d := rs.Evaluate(&in)
		res.Decision = d
		var why []string
		if d.Action != t.expect {
			why = append(why, fmt.Sprintf("expected %s, got %s by %s", t.expect, d.Action, d.Rule.ID))
		}
		if t.expectRule != "" && d.Rule.ID != t.expectRule {
			why = append(why, fmt.Sprintf("expected rule %s, got %s", t.expectRule, d.Rule.ID))
		}
		if t.checkRecord && d.Record != t.expectRecord {
			why = append(why, fmt.Sprintf("expected record %s, got %s", t.expectRecord, d.Record))
		}
		if d.Err != nil {
			why = append(why, fmt.Sprintf("evaluation failed: %v", d.Err))
		}
		if t.expectCred != "" {
			got := "none"
			g, err := rs.match(&in.Flow, nil).Grant()
			if g != nil {
				got = g.Credential.Name
			}
			if got != t.expectCred {
				msg := fmt.Sprintf("expected credential %s, got %s", t.expectCred, got)
				if err != nil {
					msg += " (" + err.Error() + ")"
				}
				why = append(why, msg)
			}
		}
		res.Passed = len(why) == 0
		res.Message = strings.Join(why, "; ")
		results = append(results, res)
	}
	return results
}

func (c *compiler) test(b *hcl.Block) {
	name := b.Labels[0]
	content, d := b.Body.Content(testSchema)
	c.diags = append(c.diags, d...)
	if !c.define("test", name, b.LabelRanges[0]) {
		return
	}
	t := &ruleTest{name: name, rng: b.DefRange}
	if a := content.Attributes["target"]; a != nil {
		if s, ok := c.str(a); ok {
			tg := c.rs.byName[s]
			if tg == nil {
				names := make([]string, len(c.rs.targets))
				for i, x := range c.rs.targets {
					names[i] = x.Name
				}
				detail := fmt.Sprintf("No target named %q is defined in this ruleset.", s)
				if sg := suggest(s, names); sg != "" {
					detail += fmt.Sprintf(" Did you mean %q?", sg)
				}
				c.errorf(a.Expr.Range(), "Unknown target", "%s", detail)
			} else {
				t.in.Target = Endpoint{Name: tg.Name, Protocol: tg.Protocol}
			}
		}
	}
	if a := content.Attributes["address"]; a != nil {
		if s, ok := c.str(a); ok {
			ap, err := netip.ParseAddrPort(s)
			if err != nil {
				c.errorf(a.Expr.Range(), "Invalid address", "address must be an IP and port, such as \"10.0.0.5:5432\": %s.", err)
			}
			t.in.Target.Addr = ap
		}
	}
	if a := content.Attributes["identity"]; a != nil {
		vals := c.object(a, nil, nil)
		t.in.Identity.Claims = make(map[string]string, len(vals))
		for k, v := range vals {
			t.in.Identity.Claims[k] = v.AsString()
		}
		t.in.Identity.Level = LevelOIDC
	}
	if a := content.Attributes["identity_level"]; a != nil {
		t.in.Identity.Level, _ = c.keyword(a, []string{LevelOIDC, LevelUnverified, LevelNone})
	}
	if a := content.Attributes["process"]; a != nil {
		vals := c.object(a, processType.AttributeTypes(), nil)
		p := &t.in.Process
		p.PID, p.UID, p.GID = intAttr(vals, "pid"), intAttr(vals, "uid"), intAttr(vals, "gid")
		p.Exe, p.Comm, p.Cgroup, p.Unit = strAttr(vals, "exe"), strAttr(vals, "comm"), strAttr(vals, "cgroup"), strAttr(vals, "unit")
	}
	q, st := content.Attributes["query"], content.Attributes["statement"]
	sshA, sftpA := content.Attributes["ssh"], content.Attributes["sftp"]
	k8sA := content.Attributes["k8s"]
	tg := c.rs.byName[t.in.Target.Name]
	switch {
	case q != nil && st != nil:
		c.errorf(st.NameRange, "Conflicting arguments", "Give a test either query (text for the protocol's classifier) or statement (an already classified statement), not both.")
	case k8sA != nil && (q != nil || st != nil || sshA != nil || sftpA != nil):
		other := firstAttr(q, st, sshA, sftpA)
		c.errorf(k8sA.NameRange, "Conflicting arguments", "Give a test one request: k8s describes a Kubernetes API request, and this one also has %s. Write another test block for the other request.", other.Name)
	case (q != nil || st != nil) && (sshA != nil || sftpA != nil):
		other, req := firstAttr(q, st), firstAttr(sshA, sftpA)
		c.errorf(req.NameRange, "Conflicting arguments", "Give a test one request: query (text for the protocol's classifier), statement (an already classified SQL statement), or ssh and sftp (an already classified SSH request); this one also has %s. For an ssh target, query = \"pg_dump prod\" is classified as an exec request running that command line.", other.Name)
	case k8sA != nil:
		c.k8sRequest(t, tg, k8sA)
	case q != nil:
		t.query, t.hasQuery = c.str(q)
		if tg != nil && !slices.ContainsFunc(facets, func(f *facet) bool { return f.classified && f.speaks(tg.Protocol) }) {
			var protos, vars []string
			for _, f := range facets {
				if f.classified {
					protos = append(protos, f.protocols...)
					vars = append(vars, f.name+".*")
				}
			}
			c.errorf(q.Expr.Range(), "Query for a target without a classifier",
				"Target %s speaks %s, and only %s commands are classified from text (into %s): a query for it cannot be classified. Leave query out to test the connection decision, or give statement = { kind = \"...\" }.",
				tg.Name, tg.Protocol, protocolWords(protos, "and"), protocolWords(vars, "and"))
		}
	case sshA != nil || sftpA != nil:
		c.sshRequest(t, tg, sshA, sftpA)
	case st != nil:
		// statement stays accepted on every target: rulesets written
		// before facets describe other protocols' commands with it.
		vals := c.object(st, sqlFacet.typ.AttributeTypes(), []string{"kind"})
		s := &t.in.Statement
		s.Kind, s.Text = strAttr(vals, "kind"), strAttr(vals, "text")
		s.Tables, s.Functions = listAttr(vals, "tables"), listAttr(vals, "functions")
		s.Flags = sortedSet(listAttr(vals, "flags"))
		s.HasWhere, s.HasLimit = boolAttr(vals, "has_where"), boolAttr(vals, "has_limit")
	default:
		t.in.Statement.Kind = KindConnect
	}
	if a := content.Attributes["result"]; a != nil {
		vals := c.object(a, resultType.AttributeTypes(), nil)
		t.in.Result = Result{Known: true, Rows: intAttr(vals, "rows"), Bytes: intAttr(vals, "bytes")}
	}
	if a := content.Attributes["expect"]; a != nil {
		if s, ok := c.keyword(a, actionNames[:]); ok {
			t.expect, _ = ParseAction(s)
		}
	}
	if a := content.Attributes["expect_rule"]; a != nil {
		if s, ok := c.str(a); ok {
			if c.rs.rules[s] == nil {
				ids := make([]string, 0, len(c.rs.rules))
				for id := range c.rs.rules {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				detail := fmt.Sprintf("No rule has the ID %q. Rule IDs look like policy/deny/label, policy/hold[0], policy/default or default.", s)
				if sg := suggest(s, ids); sg != "" {
					detail = fmt.Sprintf("No rule has the ID %q. Did you mean %q?", s, sg)
				}
				c.errorf(a.Expr.Range(), "Unknown rule", "%s", detail)
			}
			t.expectRule = s
		}
	}
	if a := content.Attributes["expect_record"]; a != nil {
		t.expectRecord, t.checkRecord = c.record(a)
	}
	if a := content.Attributes["expect_credential"]; a != nil {
		if s, ok := c.str(a); ok {
			if tg := c.rs.byName[t.in.Target.Name]; s != "none" && tg != nil && tg.Credential(s) == nil {
				c.errorf(a.Expr.Range(), "Unknown credential", "Target %s has no credential named %q; expect a credential it defines, or \"none\" for a refused flow.", tg.Name, s)
			}
			t.expectCred = s
		}
	}
	c.rs.tests = append(c.rs.tests, t)
}

// firstAttr returns the first of attrs that is set.
func firstAttr(attrs ...*hcl.Attribute) *hcl.Attribute {
	for _, a := range attrs {
		if a != nil {
			return a
		}
	}
	return nil
}

// k8sVerbs are the values of k8s.verb a test may give: the verbs of
// resource requests (K8sGet ... K8sDeleteCollection, and proxy, which the
// API server still names for its old /proxy/ paths), then the HTTP
// methods, lower case, that name the verb of every other request.
var k8sVerbs = []string{K8sGet, K8sList, K8sWatch, K8sCreate, K8sUpdate, K8sPatch, K8sDelete, K8sDeleteCollection, "proxy",
	"post", "put", "head", "options"}

// httpOnlyVerbs and resourceOnlyVerbs are the k8s verbs only requests for
// no resource, and only resource requests, have.
var (
	httpOnlyVerbs     = []string{"post", "put", "head", "options"}
	resourceOnlyVerbs = []string{K8sList, K8sWatch, K8sCreate, K8sUpdate, K8sDeleteCollection, "proxy"}
)

// k8sRequest fills a test's Statement.K8s from its k8s object: a
// Kubernetes API request as its decoder reports it, already resolved.
// Statement.Kind is its verb. resource_request defaults to whether the
// object names a resource, as the API server decides it from the path.
func (c *compiler) k8sRequest(t *ruleTest, tg *Target, a *hcl.Attribute) {
	if tg != nil && tg.Protocol != ProtoK8s {
		c.errorf(a.NameRange, "Kubernetes request for a "+tg.Protocol+" target", "Target %s speaks %s, and k8s describes a request to a Kubernetes API server. Test a k8s target, or give this one a query or a statement.", tg.Name, tg.Protocol)
		return
	}
	vals := c.object(a, k8sFacet.typ.AttributeTypes(), []string{"verb"})
	r := &K8sRequest{
		Verb: strAttr(vals, "verb"), Group: strAttr(vals, "group"), Version: strAttr(vals, "version"),
		Resource: strAttr(vals, "resource"), Subresource: strAttr(vals, "subresource"),
		Namespace: strAttr(vals, "namespace"), Name: strAttr(vals, "name"), Path: strAttr(vals, "path"),
		UserAgent: strAttr(vals, "user_agent"), ObjectKind: strAttr(vals, "object_kind"),
		Images:     listAttr(vals, "images"),
		Privileged: boolAttr(vals, "privileged"), HostPath: boolAttr(vals, "host_path"), HostNetwork: boolAttr(vals, "host_network"),
	}
	r.IsResource = r.Resource != ""
	if _, ok := vals["resource_request"]; ok {
		r.IsResource = boolAttr(vals, "resource_request")
	}
	_, hasVerb := vals["verb"]
	switch {
	case hasVerb && !hasString(k8sVerbs, r.Verb):
		detail := fmt.Sprintf("k8s.verb must be one of %s; got %q.", quoteList(k8sVerbs), r.Verb)
		if sg := suggest(r.Verb, k8sVerbs); sg != "" {
			detail += fmt.Sprintf(" Did you mean %q?", sg)
		}
		c.errorf(itemRange(a, "verb"), "Invalid value for k8s.verb", "%s", detail)
	case hasVerb && r.IsResource && hasString(httpOnlyVerbs, r.Verb):
		c.errorf(itemRange(a, "verb"), "HTTP method as a resource verb", "%q is the verb of a request for no resource; the API server names a resource request's verb: POST is create, PUT update, GET get, list or watch, DELETE delete or deletecollection. Write that verb, or leave resource out.", r.Verb)
	case hasVerb && !r.IsResource && hasString(resourceOnlyVerbs, r.Verb):
		c.errorf(itemRange(a, "verb"), "Resource verb without a resource", "%q is the verb of a resource request, and this one names no resource; add resource = \"pods\" (or the resource it is about), or give a request for no resource its HTTP method, such as \"get\" or \"post\".", r.Verb)
	}
	if r.Subresource != "" && r.Resource == "" {
		c.errorf(itemRange(a, "subresource"), "Subresource without a resource", "k8s.subresource %q is a subresource of a resource, such as resource = \"pods\", subresource = \"exec\"; add the resource.", r.Subresource)
	}
	t.in.Statement.Kind = r.Verb
	t.in.Statement.K8s = r
}

// sshKinds are the values of ssh.kind.
var sshKinds = []string{SSHShell, SSHExec, SSHSubsystem, SSHDirectTCPIP, SSHTCPIPForward, SSHAgentForward, SSHX11}

// sftpOps are the values of sftp.op (SSHRequest.SFTPOp).
var sftpOps = []string{"read", "write", "remove", "rename", "mkdir", "rmdir", "setstat", "symlink", "link", "list", "stat", "readlink"}

// sshRequest fills a test's Statement.SSH from its ssh and sftp objects:
// an SSH request as its decoder reports it, already classified (programs
// are not derived from command here; a query is). With sftp, the request
// is one SFTP operation: kind subsystem, subsystem sftp, Statement.Kind
// "sftp".
func (c *compiler) sshRequest(t *ruleTest, tg *Target, sshA, sftpA *hcl.Attribute) {
	if tg != nil && tg.Protocol != ProtoSSH {
		a := sshA
		if a == nil {
			a = sftpA
		}
		c.errorf(a.NameRange, "SSH request for a "+tg.Protocol+" target", "Target %s speaks %s, and %s describes a request of an ssh session. Test an ssh target, or give this one a query or a statement.", tg.Name, tg.Protocol, a.Name)
		return
	}
	r := &SSHRequest{}
	if sshA != nil {
		vals := c.object(sshA, sshFacet.typ.AttributeTypes(), nil)
		r.User, r.Kind, r.Command = strAttr(vals, "user"), strAttr(vals, "kind"), strAttr(vals, "command")
		r.Argv, r.Programs = listAttr(vals, "argv"), listAttr(vals, "programs")
		r.Subsystem, r.ForwardHost, r.Term = strAttr(vals, "subsystem"), strAttr(vals, "forward_host"), strAttr(vals, "term")
		r.Env, r.Pty = sortedSet(listAttr(vals, "env")), boolAttr(vals, "pty")
		if v, ok := vals["forward_port"]; ok {
			bf := v.AsBigFloat()
			n, acc := bf.Int64()
			if !bf.IsInt() || acc != 0 || n < 0 || n > 65535 {
				c.errorf(itemRange(sshA, "forward_port"), "Invalid port", "ssh.forward_port must be a port number, from 0 (a unix socket forward) to 65535.")
			}
			r.ForwardPort = int(n)
		}
		_, hasKind := vals["kind"]
		switch {
		case hasKind && !hasString(sshKinds, r.Kind):
			detail := fmt.Sprintf("ssh.kind must be one of %s; got %q.", quoteList(sshKinds), r.Kind)
			if sg := suggest(r.Kind, sshKinds); sg != "" {
				detail += fmt.Sprintf(" Did you mean %q?", sg)
			}
			c.errorf(itemRange(sshA, "kind"), "Invalid value for ssh.kind", "%s", detail)
		case !hasKind && sftpA == nil && vals != nil:
			c.errorf(sshA.Expr.Range(), "Missing attribute", "ssh needs kind, the request's kind: one of %s.", quoteList(sshKinds))
		case sftpA != nil && hasKind && r.Kind != SSHSubsystem:
			c.errorf(itemRange(sshA, "kind"), "Conflicting arguments", "sftp describes an operation of the sftp subsystem, so ssh.kind is %q; remove ssh.kind, or sftp to test a %s request.", SSHSubsystem, r.Kind)
		case sftpA != nil && r.Subsystem != "" && r.Subsystem != "sftp":
			c.errorf(itemRange(sshA, "subsystem"), "Conflicting arguments", "sftp describes an operation of the sftp subsystem, so ssh.subsystem is \"sftp\"; remove ssh.subsystem, or sftp to test a request of the %s subsystem.", r.Subsystem)
		}
	}
	t.in.Statement.Kind = r.Kind
	if r.Kind == SSHExec {
		t.in.Statement.Text = r.Command
	}
	if sftpA != nil {
		vals := c.object(sftpA, sftpFacet.typ.AttributeTypes(), []string{"op"})
		r.Kind, r.Subsystem = SSHSubsystem, "sftp"
		r.SFTPOp, r.SFTPPath, r.SFTPTarget = strAttr(vals, "op"), strAttr(vals, "path"), strAttr(vals, "target")
		if _, ok := vals["op"]; ok && !hasString(sftpOps, r.SFTPOp) {
			detail := fmt.Sprintf("sftp.op must be one of %s; got %q.", quoteList(sftpOps), r.SFTPOp)
			if sg := suggest(r.SFTPOp, sftpOps); sg != "" {
				detail += fmt.Sprintf(" Did you mean %q?", sg)
			}
			c.errorf(itemRange(sftpA, "op"), "Invalid value for sftp.op", "%s", detail)
		}
		t.in.Statement.Kind = KindSFTP
	}
	t.in.Statement.SSH = r
}

// itemRange is the range of the value of key in an object attribute, or
// the attribute's value when it has no such item.
func itemRange(a *hcl.Attribute, key string) hcl.Range {
	if oc, ok := a.Expr.(*hclsyntax.ObjectConsExpr); ok {
		for _, item := range oc.Items {
			if k, d := item.KeyExpr.Value(nil); !d.HasErrors() && k.Type() == cty.String && !k.IsNull() && k.AsString() == key {
				return item.ValueExpr.Range()
			}
		}
	}
	return a.Expr.Range()
}

// object decodes a static object attribute. With a schema, keys must be
// in it and values convert to its types; without one, every value must be
// a string.
func (c *compiler) object(a *hcl.Attribute, schema map[string]cty.Type, required []string) map[string]cty.Value {
	oc, ok := a.Expr.(*hclsyntax.ObjectConsExpr)
	if !ok {
		c.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s must be an object, such as { name = \"value\" }.", a.Name)
		return nil
	}
	out := map[string]cty.Value{}
	for _, item := range oc.Items {
		kv, d := item.KeyExpr.Value(nil)
		c.diags = append(c.diags, d...)
		if d.HasErrors() {
			continue
		}
		if kv.IsNull() || kv.Type() != cty.String {
			c.errorf(item.KeyExpr.Range(), "Invalid key", "Keys of %s must be names or strings.", a.Name)
			continue
		}
		key := kv.AsString()
		v, d := item.ValueExpr.Value(nil)
		c.diags = append(c.diags, d...)
		if d.HasErrors() {
			continue
		}
		want := cty.String
		if schema != nil {
			ty, ok := schema[key]
			if !ok {
				names := make([]string, 0, len(schema))
				for n := range schema {
					names = append(names, n)
				}
				sort.Strings(names)
				detail := fmt.Sprintf("%s has no attribute %q; its attributes are %s.", a.Name, key, strings.Join(names, ", "))
				if sg := suggest(key, names); sg != "" {
					detail = fmt.Sprintf("%s has no attribute %q. Did you mean %q?", a.Name, key, sg)
				}
				c.errorf(item.KeyExpr.Range(), "Unsupported attribute", "%s", detail)
				continue
			}
			want = ty
		}
		cv, err := convert.Convert(v, want)
		if err != nil || cv.IsNull() || (v.Type() != want && (want == cty.String || want == cty.Bool)) || !elementsAre(v, want) {
			c.errorf(item.ValueExpr.Range(), "Incorrect value type", "%s.%s must be %s; got %s.", a.Name, key, want.FriendlyName(), v.Type().FriendlyName())
			continue
		}
		out[key] = cv
	}
	for _, r := range required {
		if _, ok := out[r]; !ok {
			c.errorf(a.Expr.Range(), "Missing attribute", "%s needs %s.", a.Name, r)
		}
	}
	return out
}

// elementsAre reports whether every element of a list or tuple value has
// want's element type, so that statement = { flags = [1] } is an error
// rather than the string "1". Other values pass.
func elementsAre(v cty.Value, want cty.Type) bool {
	if !want.IsListType() || !v.CanIterateElements() {
		return true
	}
	for it := v.ElementIterator(); it.Next(); {
		if _, e := it.Element(); e.Type() != want.ElementType() {
			return false
		}
	}
	return true
}

func intAttr(vals map[string]cty.Value, k string) int64 {
	v, ok := vals[k]
	if !ok {
		return 0
	}
	n, _ := v.AsBigFloat().Int64()
	return n
}

func strAttr(vals map[string]cty.Value, k string) string {
	v, ok := vals[k]
	if !ok {
		return ""
	}
	return v.AsString()
}

func boolAttr(vals map[string]cty.Value, k string) bool {
	v, ok := vals[k]
	return ok && v.True()
}

func listAttr(vals map[string]cty.Value, k string) []string {
	v, ok := vals[k]
	if !ok {
		return nil
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		out = append(out, e.AsString())
	}
	return out
}

// sortedSet sorts list and drops duplicates, the form decoders give
// Statement.Flags.
func sortedSet(list []string) []string {
	sort.Strings(list)
	return slices.Compact(list)
}
