package ruleset

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// A facet is a protocol family's own variable in when expressions: what
// its decoder reports about one command, beside the variables every
// protocol shares (identity, process, target and result). sql.* is the
// SQL statement of a postgres or mysql flow; ssh.* is one request of an
// ssh session (a shell, a command, a subsystem, a forward) and sftp.* one
// file operation of its SFTP subsystem; k8s.* is one request to a
// Kubernetes API server.
//
// facets is the one place facets are defined. The checks (checkVars,
// checkFacetTargets, the test blocks'), the type check, the compiled fast
// path (compileVar) and the HCL evaluation context all read it, so a
// protocol adds its facet by adding one entry here, plus the field its
// decoder fills in env (and Input) for the getters to read.
type facet struct {
	// name is the variable: sql, ssh, sftp, k8s.
	name string
	// aliases are older names of the same variable, with the same
	// attributes, values, stage and compiled path. statement is sql's.
	aliases []string
	// protocols are the target protocols whose decoders fill the facet.
	// Only policies covering a target of one of them may use it.
	protocols []string
	// attrs are the facet's attributes, in the order documentation lists
	// them; nil while the facet is reserved.
	attrs []facetAttr
	// text is the attribute holding the command's raw text, if any: a
	// ruleset that reads it is not decided by classification alone
	// (Match.ByClassification). Only sql has one: the enforcer keeps
	// decisions by classification for SQL statements alone, and decides
	// every ssh and k8s request by itself.
	text string
	// classified is set when a test block's query for a target of the
	// facet's protocols is classified into it, by the Classifier the
	// caller of RunTests gives (backed by the protocol's decoder).
	classified bool
	// reserved is set, instead of attrs, for a facet whose decoder this
	// build does not have: the diagnostic's detail when a rule uses it.
	// No facet is reserved at present; a protocol may name its variable
	// this way before its decoder arrives.
	reserved string
	// typ is the cty object type of attrs, built by init.
	typ cty.Type
}

// facetAttr is one attribute of a facet and how to read it from what the
// decoder reported for the decision being made. get is the attribute's
// compiled form itself (compileVar returns it as is), so reading a facet
// costs one call, and never fails.
type facetAttr struct {
	name string
	kind vkind // kStr, kNum, kBool or kList (of strings)
	get  cfn
}

// facets lists every facet (DESIGN.md, "One engine, many protocols").
//
// The ssh and sftp getters read Statement.SSH, and the k8s getters
// Statement.K8s, which are nil on every other protocol's statements (and
// on a test's statement = { ... }): they then read zero values, as sql.*
// reads an empty Statement.
var facets = []*facet{
	{
		name:       varSQL,
		aliases:    []string{varStatement},
		protocols:  []string{ProtoPostgres, ProtoMySQL},
		text:       "text",
		classified: true,
		attrs: []facetAttr{
			{"kind", kStr, func(en *env) (val, error) { return val{k: kStr, s: en.st.Kind}, nil }},
			{"tables", kList, func(en *env) (val, error) { return val{k: kList, l: en.st.Tables}, nil }},
			{"functions", kList, func(en *env) (val, error) { return val{k: kList, l: en.st.Functions}, nil }},
			{"flags", kList, func(en *env) (val, error) { return val{k: kList, l: en.st.Flags}, nil }},
			{"has_where", kBool, func(en *env) (val, error) { return val{k: kBool, b: en.st.HasWhere}, nil }},
			{"has_limit", kBool, func(en *env) (val, error) { return val{k: kBool, b: en.st.HasLimit}, nil }},
			{"text", kStr, func(en *env) (val, error) { return val{k: kStr, s: en.st.Text}, nil }},
		},
	},
	{
		name:       varSSH,
		protocols:  []string{ProtoSSH},
		classified: true,
		attrs: []facetAttr{
			sshStr("user", func(r *SSHRequest) string { return r.User }),
			sshStr("kind", func(r *SSHRequest) string { return r.Kind }),
			sshStr("command", func(r *SSHRequest) string { return r.Command }),
			sshList("argv", func(r *SSHRequest) []string { return r.Argv }),
			sshList("programs", func(r *SSHRequest) []string { return r.Programs }),
			sshStr("subsystem", func(r *SSHRequest) string { return r.Subsystem }),
			sshStr("forward_host", func(r *SSHRequest) string { return r.ForwardHost }),
			{"forward_port", kNum, func(en *env) (val, error) {
				if en.st.SSH == nil {
					return val{k: kNum}, nil
				}
				return val{k: kNum, n: float64(en.st.SSH.ForwardPort)}, nil
			}},
			sshList("env", func(r *SSHRequest) []string { return r.Env }),
			{"pty", kBool, func(en *env) (val, error) { return val{k: kBool, b: en.st.SSH != nil && en.st.SSH.Pty}, nil }},
			sshStr("term", func(r *SSHRequest) string { return r.Term }),
		},
	},
	{
		name:      varSFTP,
		protocols: []string{ProtoSSH},
		attrs: []facetAttr{
			sshStr("op", func(r *SSHRequest) string { return r.SFTPOp }),
			sshStr("path", func(r *SSHRequest) string { return r.SFTPPath }),
			sshStr("target", func(r *SSHRequest) string { return r.SFTPTarget }),
		},
	},
	{
		name:       varK8s,
		protocols:  []string{ProtoK8s},
		classified: true,
		attrs: []facetAttr{
			k8sStr("verb", func(r *K8sRequest) string { return r.Verb }),
			k8sBool("resource_request", func(r *K8sRequest) bool { return r.IsResource }),
			k8sStr("group", func(r *K8sRequest) string { return r.Group }),
			k8sStr("version", func(r *K8sRequest) string { return r.Version }),
			k8sStr("resource", func(r *K8sRequest) string { return r.Resource }),
			k8sStr("subresource", func(r *K8sRequest) string { return r.Subresource }),
			k8sStr("namespace", func(r *K8sRequest) string { return r.Namespace }),
			k8sStr("name", func(r *K8sRequest) string { return r.Name }),
			k8sStr("path", func(r *K8sRequest) string { return r.Path }),
			k8sStr("user_agent", func(r *K8sRequest) string { return r.UserAgent }),
			k8sStr("object_kind", func(r *K8sRequest) string { return r.ObjectKind }),
			{"images", kList, func(en *env) (val, error) {
				if en.st.K8s == nil {
					return val{k: kList}, nil
				}
				return val{k: kList, l: en.st.K8s.Images}, nil
			}},
			k8sBool("privileged", func(r *K8sRequest) bool { return r.Privileged }),
			k8sBool("host_path", func(r *K8sRequest) bool { return r.HostPath }),
			k8sBool("host_network", func(r *K8sRequest) bool { return r.HostNetwork }),
		},
	},
}

// k8sStr is a string attribute read from Statement.K8s: "" when it is
// nil.
func k8sStr(name string, get func(*K8sRequest) string) facetAttr {
	return facetAttr{name, kStr, func(en *env) (val, error) {
		if en.st.K8s == nil {
			return val{k: kStr}, nil
		}
		return val{k: kStr, s: get(en.st.K8s)}, nil
	}}
}

// k8sBool is a bool attribute read from Statement.K8s: false when it is
// nil.
func k8sBool(name string, get func(*K8sRequest) bool) facetAttr {
	return facetAttr{name, kBool, func(en *env) (val, error) {
		return val{k: kBool, b: en.st.K8s != nil && get(en.st.K8s)}, nil
	}}
}

// sshStr is a string attribute read from Statement.SSH: "" when it is nil.
func sshStr(name string, get func(*SSHRequest) string) facetAttr {
	return facetAttr{name, kStr, func(en *env) (val, error) {
		if en.st.SSH == nil {
			return val{k: kStr}, nil
		}
		return val{k: kStr, s: get(en.st.SSH)}, nil
	}}
}

// sshList is a list attribute read from Statement.SSH: empty when it is
// nil.
func sshList(name string, get func(*SSHRequest) []string) facetAttr {
	return facetAttr{name, kList, func(en *env) (val, error) {
		if en.st.SSH == nil {
			return val{k: kList}, nil
		}
		return val{k: kList, l: get(en.st.SSH)}, nil
	}}
}

// The facets' variables; varStatement (expr.go) is sql's older alias.
const (
	varSQL  = "sql"
	varSSH  = "ssh"
	varSFTP = "sftp"
	varK8s  = "k8s"
)

// facetByRoot maps every facet name and alias to its facet.
var facetByRoot = map[string]*facet{}

// sqlFacet, sshFacet, sftpFacet and k8sFacet are the facets a test block
// fills (statement, ssh, sftp and k8s).
var sqlFacet, sshFacet, sftpFacet, k8sFacet *facet

func init() {
	for _, f := range facets {
		if f.reserved == "" {
			attrs := make(map[string]cty.Type, len(f.attrs))
			for _, a := range f.attrs {
				attrs[a.name] = ctyKind(a.kind)
			}
			f.typ = cty.Object(attrs)
		}
		for _, n := range append([]string{f.name}, f.aliases...) {
			facetByRoot[n] = f
			rootNames = append(rootNames, n)
			if f.reserved == "" {
				fixedTypes[n] = f.typ
			}
		}
	}
	sqlFacet, sshFacet, sftpFacet, k8sFacet = facetByRoot[varSQL], facetByRoot[varSSH], facetByRoot[varSFTP], facetByRoot[varK8s]
}

// ownFacet reports whether protocol's commands are described by a facet
// other than sql: their Statement's SQL fields do not say all a rule may
// read of them.
func ownFacet(protocol string) bool {
	return slices.ContainsFunc(facets, func(f *facet) bool { return f != sqlFacet && f.speaks(protocol) })
}

// ctyKind is the cty type of a compiled value kind.
func ctyKind(k vkind) cty.Type {
	switch k {
	case kNum:
		return cty.Number
	case kBool:
		return cty.Bool
	case kList:
		return cty.List(cty.String)
	}
	return cty.String
}

// attr returns the facet's attribute called name, or nil.
func (f *facet) attr(name string) *facetAttr {
	for i := range f.attrs {
		if f.attrs[i].name == name {
			return &f.attrs[i]
		}
	}
	return nil
}

// speaks reports whether a target of protocol fills the facet.
func (f *facet) speaks(protocol string) bool { return hasString(f.protocols, protocol) }

// value is the facet's value for the decision ev is making.
func (f *facet) value(en *env) cty.Value {
	vals := make(map[string]cty.Value, len(f.attrs))
	for _, a := range f.attrs {
		v, _ := a.get(en) // facet getters never fail
		switch a.kind {
		case kStr:
			vals[a.name] = cty.StringVal(v.s)
		case kNum:
			vals[a.name] = cty.NumberFloatVal(v.n)
		case kBool:
			vals[a.name] = cty.BoolVal(v.b)
		case kList:
			vals[a.name] = stringList(v.l)
		}
	}
	return cty.ObjectVal(vals)
}

// protocolWords lists protocols for a sentence: "postgres or mysql".
func protocolWords(list []string, conj string) string {
	switch len(list) {
	case 0:
		return ""
	case 1:
		return list[0]
	}
	return strings.Join(list[:len(list)-1], ", ") + " " + conj + " " + list[len(list)-1]
}

// reservedFacet reports a use of a reserved facet.
func reservedFacet(f *facet, tr hcl.Traversal, e hcl.Expression) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity:   hcl.DiagError,
		Summary:    fmt.Sprintf("%s is reserved", tr.RootName()),
		Detail:     f.reserved,
		Subject:    tr[0].SourceRange().Ptr(),
		Expression: e,
	}
}

// checkFacetTargets reports each facet e uses that none of the policy's
// targets speaks: the facet would never describe a command there, and a
// guard such as target.protocol == "postgres" cannot change that. A
// policy covers every target of the ruleset with "*"; one whose targets
// did not all resolve is not checked (its error is already reported).
func (c *compiler) checkFacetTargets(p *policy, e hcl.Expression) {
	if p.targetsBad {
		return
	}
	covered := c.rs.targets
	if !p.all {
		covered = make([]*Target, 0, len(p.targets))
		for _, n := range p.targets {
			covered = append(covered, c.rs.byName[n])
		}
	}
	if len(covered) == 0 {
		return
	}
	seen := map[*facet]bool{}
	for _, tr := range e.Variables() {
		f := facetByRoot[tr.RootName()]
		if f == nil || f.reserved != "" || seen[f] {
			continue
		}
		seen[f] = true
		if slices.ContainsFunc(covered, func(t *Target) bool { return f.speaks(t.Protocol) }) {
			continue
		}
		root := tr.RootName()
		names := make([]string, len(covered))
		tcp := false
		for i, t := range covered {
			names[i] = fmt.Sprintf("%s (%s)", t.Name, t.Protocol)
			tcp = tcp || t.Protocol == ProtoTCP
		}
		scope, these := "targets "+protocolWords(names, "and"), "these targets"
		if len(covered) == 1 {
			scope, these = "target "+names[0], "this target"
		}
		if p.all {
			scope = `every target ("*"): ` + protocolWords(names, "and")
		}
		alias := ""
		if root != f.name {
			alias = fmt.Sprintf(" (%s is the older name of %s)", root, f.name)
		}
		detail := fmt.Sprintf("Policy %q covers %s. %s.*%s is filled only on %s flows, so on %s it never describes a command, and a guard such as target.protocol == %q does not change that.",
			p.name, scope, root, alias, protocolWords(f.protocols, "and"), these, f.protocols[0])
		if tcp {
			detail += ` tcp flows are never decoded: the only decision on them is the connection itself (kind "connect"), which a block without a when already decides.`
		}
		detail += fmt.Sprintf(" Move the rule to a policy for the %s targets, or add them to this policy's targets.", protocolWords(f.protocols, "or"))
		c.diags = append(c.diags, &hcl.Diagnostic{
			Severity:   hcl.DiagError,
			Summary:    fmt.Sprintf("%s used on a policy without %s targets", root, protocolWords(f.protocols, "or")),
			Detail:     detail,
			Subject:    tr[0].SourceRange().Ptr(),
			Expression: e,
		})
	}
}
