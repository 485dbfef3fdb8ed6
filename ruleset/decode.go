package ruleset

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

var rootSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "mode"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "target", LabelNames: []string{"name"}},
		{Type: "policy", LabelNames: []string{"name"}},
		{Type: "default"},
		{Type: "test", LabelNames: []string{"name"}},
		{Type: "detector", LabelNames: []string{"name"}},
	},
}

var detectorSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "pattern", Required: true},
	{Name: "description"},
}}

var targetSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "protocol", Required: true},
		{Name: "address", Required: true},
		{Name: "upstream_tls"},
		{Name: "upstream_ca"},
		{Name: "resolve_every"},
		{Name: "undecoded"},
		{Name: "known_hosts"},
		{Name: "upstream_pool"},
		{Name: "description"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "credential", LabelNames: []string{"name"}}},
}

var defaultSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "action"}, {Name: "record"}, {Name: "reason"},
}}

var policyAttrs = []string{"targets", "when", "record", "default_action", "description"}

var ruleKinds = map[string]Action{"deny": Deny, "hold": Hold, "mask": Mask, "allow": Allow}

func ruleSchema(kind Action) *hcl.BodySchema {
	s := &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "when"}, {Name: "reason"}, {Name: "record"}}}
	switch kind {
	case Hold:
		s.Attributes = append(s.Attributes,
			hcl.AttributeSchema{Name: "approvers", Required: true},
			hcl.AttributeSchema{Name: "timeout"},
			hcl.AttributeSchema{Name: "min_approvals"})
	case Mask:
		s.Attributes = append(s.Attributes,
			hcl.AttributeSchema{Name: "columns"},
			hcl.AttributeSchema{Name: "detect"},
			hcl.AttributeSchema{Name: "using"},
			hcl.AttributeSchema{Name: "keep"},
			hcl.AttributeSchema{Name: "replacement"})
	}
	return s
}

var (
	protocols      = []string{ProtoPostgres, ProtoMySQL, ProtoSSH, ProtoK8s, ProtoTCP}
	tlsModes       = []string{TLSDisable, TLSPrefer, TLSRequire, TLSVerifyCA, TLSVerifyFull}
	undecodedModes = []string{UndecodedRelay, UndecodedRefuse}
)

// pendingExpr is a when expression waiting for its type check, which
// needs every identity attribute the ruleset uses.
type pendingExpr struct {
	x    *expr
	attr hcl.Range
}

type compiler struct {
	rs      *Ruleset
	diags   hcl.Diagnostics
	idAttrs map[string]bool
	pending []pendingExpr
	defined map[string]hcl.Range // "kind name" -> first definition
	// credPolicies are checked once every policy is known.
	credPolicies []credPolicyRefs
}

func compile(bodies []*hclsyntax.Body) (*Ruleset, hcl.Diagnostics) {
	rs := &Ruleset{
		byName:   map[string]*Target{},
		byTarget: map[string][]*policy{},
		rules:    map[string]*Rule{},
		regexes:  map[string]*compiledRegex{},
		custom:   map[string]*regexp.Regexp{},
	}
	rs.funcs = rs.makeFuncs()
	c := &compiler{rs: rs, idAttrs: map[string]bool{}, defined: map[string]hcl.Range{}}

	var targets, policies, defaults, tests, detectors []*hcl.Block
	var mode *hcl.Attribute
	for _, body := range bodies {
		content, d := body.Content(rootSchema)
		c.diags = append(c.diags, d...)
		if a := content.Attributes["mode"]; a != nil {
			if mode != nil {
				c.errorf(a.NameRange, "Duplicate mode", "mode is already set at %s; set it once, in one file.", posOf(mode.NameRange))
			} else {
				mode = a
			}
		}
		for _, b := range content.Blocks {
			switch b.Type {
			case "target":
				targets = append(targets, b)
			case "policy":
				policies = append(policies, b)
			case "default":
				defaults = append(defaults, b)
			case "test":
				tests = append(tests, b)
			case "detector":
				detectors = append(detectors, b)
			}
		}
	}
	if mode != nil {
		if m, ok := c.keyword(mode, []string{"enforce", "monitor"}); ok && m == "monitor" {
			rs.mode = Monitor
		}
	}
	for _, b := range targets {
		c.target(b)
	}
	for _, b := range detectors {
		c.detector(b)
	}
	rs.def = &Rule{ID: "default", Action: Deny, Reason: "no policy matches this connection"}
	rs.defRec = DefaultRecord
	for i, b := range defaults {
		if i > 0 {
			c.errorf(b.DefRange, "Duplicate default block", "A default block is already defined at %s; keep one.", posOf(defaults[0].DefRange))
			continue
		}
		c.defaultBlock(b)
	}
	rs.rules[rs.def.ID] = rs.def
	for _, b := range policies {
		c.policy(b)
	}
	c.checkCredentialPolicies()
	c.typeCheck()
	for _, r := range rs.rules {
		r.reason = reasonFor(r) // once, not on every decision
	}
	for _, b := range tests {
		c.test(b)
	}
	c.index()
	if c.diags.HasErrors() {
		return nil, c.diags
	}
	return rs, c.diags
}

// index builds the per-target policy lists.
func (c *compiler) index() {
	rs := c.rs
	for _, p := range rs.policies {
		if p.all {
			rs.wildcard = append(rs.wildcard, p)
		}
	}
	for _, t := range rs.targets {
		var list []*policy
		for _, p := range rs.policies {
			if p.all || hasString(p.targets, t.Name) {
				list = append(list, p)
			}
		}
		rs.byTarget[t.Name] = list
	}
}

func hasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *compiler) errorf(rng hcl.Range, summary, format string, args ...any) {
	c.diags = append(c.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError, Summary: summary, Detail: fmt.Sprintf(format, args...), Subject: rng.Ptr(),
	})
}

func posOf(r hcl.Range) string { return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line) }

// define records a named definition and reports a duplicate.
func (c *compiler) define(kind, name string, rng hcl.Range) bool {
	key := kind + " " + name
	if first, ok := c.defined[key]; ok {
		c.errorf(rng, "Duplicate "+kind+" name", "A %s named %q is already defined at %s; names must be unique across all files of a ruleset.", kind, name, posOf(first))
		return false
	}
	c.defined[key] = rng
	return true
}

// checkName validates a block label used in rule IDs.
func (c *compiler) checkName(kind, name string, rng hcl.Range) bool {
	if name == "" || name == "*" || strings.ContainsAny(name, "/[] \t\n") {
		c.errorf(rng, "Invalid "+kind+" name", "A %s name must be non-empty and cannot be \"*\" or contain spaces, \"/\", \"[\" or \"]\", because rule IDs are built from it.", kind)
		return false
	}
	return true
}

func (c *compiler) target(b *hcl.Block) {
	name := b.Labels[0]
	content, d := b.Body.Content(targetSchema)
	c.diags = append(c.diags, d...)
	if !c.checkName("target", name, b.LabelRanges[0]) || !c.define("target", name, b.LabelRanges[0]) {
		return
	}
	t := &Target{Name: name, ResolveEvery: DefaultResolveEvery, Range: b.DefRange}
	if a := content.Attributes["protocol"]; a != nil {
		t.Protocol, _ = c.keyword(a, protocols)
	}
	if a := content.Attributes["address"]; a != nil {
		list, ranges, ok := c.strList(a)
		if ok && len(list) == 0 {
			c.errorf(a.Expr.Range(), "No addresses", "A target needs at least one address, such as \"10.0.0.5:5432\" or \"*:5432\".")
		}
		for i, s := range list {
			addr, err := ParseAddress(s)
			if err != nil {
				c.errorf(ranges[i], "Invalid address", "%s.", err)
				continue
			}
			t.Addresses = append(t.Addresses, addr)
		}
	}
	switch t.Protocol {
	case ProtoPostgres, ProtoMySQL:
		t.UpstreamTLS = TLSPrefer
	case ProtoK8s:
		t.UpstreamTLS = TLSVerifyFull
	default:
		t.UpstreamTLS = TLSDisable
	}
	if a := content.Attributes["upstream_tls"]; a != nil {
		if m, ok := c.keyword(a, tlsModes); ok {
			if (t.Protocol == ProtoSSH || t.Protocol == ProtoTCP) && m != TLSDisable {
				why := "tcp targets are relayed as they are, with whatever encryption their protocol brings"
				if t.Protocol == ProtoSSH {
					why = "ssh targets are encrypted by SSH itself, on both hops when Sluice decodes them"
				}
				c.errorf(a.Expr.Range(), "upstream_tls not supported", "%s, so upstream_tls can only be \"disable\"; remove it.", why)
			}
			t.UpstreamTLS = m
		}
	}
	if a := content.Attributes["upstream_ca"]; a != nil {
		c.upstreamCA(t, a, content.Attributes["upstream_tls"] != nil)
	}
	if t.Protocol != ProtoTCP {
		t.Undecoded = UndecodedRefuse
	}
	if a := content.Attributes["undecoded"]; a != nil {
		if m, ok := c.keyword(a, undecodedModes); ok {
			if t.Protocol == ProtoTCP {
				c.errorf(a.Expr.Range(), "undecoded not supported", "tcp targets are always relayed opaquely, so undecoded means nothing for them; remove it, or remove the target to stop intercepting its flows.")
			} else {
				t.Undecoded, t.UndecodedRange = m, a.Expr.Range().Ptr()
			}
		}
	}
	if a := content.Attributes["resolve_every"]; a != nil {
		if d, ok := c.duration(a); ok {
			if d < 5*time.Second {
				c.errorf(a.Expr.Range(), "Interval too short", "resolve_every must be at least 5s so DNS is not hammered; got %s.", d)
			}
			t.ResolveEvery = d
		}
	}
	knownHosts := content.Attributes["known_hosts"]
	if a := knownHosts; a != nil {
		if s, ok := c.str(a); ok {
			switch {
			case t.Protocol != ProtoSSH && t.Protocol != "":
				c.errorf(a.NameRange, "known_hosts not supported", "known_hosts lists the host keys Sluice checks when it logs in to an ssh target's hosts itself; a %s target has none. Remove it.", t.Protocol)
			case !filepath.IsAbs(s):
				c.errorf(a.Expr.Range(), "Relative path", "known_hosts must be an absolute path, such as \"/etc/sluice/known_hosts\".")
			default:
				t.KnownHosts = filepath.Clean(s)
			}
		}
	}
	for _, cb := range content.Blocks {
		c.credential(t, cb)
	}
	if a := content.Attributes["upstream_pool"]; a != nil {
		c.upstreamPool(t, a)
	}
	if t.Protocol == ProtoSSH && len(t.Credentials) > 0 && knownHosts == nil {
		c.errorf(b.DefRange, "Missing known_hosts", "Target %s injects credentials, so Sluice logs in to its hosts itself and must check their host keys as ssh would. Set known_hosts to an OpenSSH known_hosts file holding the hosts' keys, or a @cert-authority line for their host CA, such as known_hosts = \"/etc/sluice/known_hosts\" (ssh-keyscan HOST prints a host's keys: check their fingerprints before you add them).", t.Name)
	}
	c.rs.targets = append(c.rs.targets, t)
	c.rs.byName[name] = t
}

// MaxUpstreamPool bounds a target's upstream_pool.
const MaxUpstreamPool = 64

// upstreamPool compiles a target's upstream_pool: how many idle server
// connections Sluice keeps per job and credential, for postgres targets
// that inject credentials (Sluice then owns the login, so a connection it
// logged in can serve the same job's next session after a reset).
func (c *compiler) upstreamPool(t *Target, a *hcl.Attribute) {
	n, ok := c.number(a)
	if !ok {
		return
	}
	switch {
	case t.Protocol != ProtoPostgres:
		c.errorf(a.NameRange, "upstream_pool not supported", "upstream_pool keeps PostgreSQL server connections for reuse; a %s target cannot set it. Remove it.", t.Protocol)
	case len(t.Credentials) == 0:
		c.errorf(a.NameRange, "upstream_pool without credentials", "Target %s relays its clients' own logins, so Sluice cannot reuse a server connection for another session: it would skip that session's authentication. upstream_pool needs credential blocks (Sluice then logs in itself); remove it, or add credentials.", t.Name)
	case n < 0 || n > MaxUpstreamPool:
		c.errorf(a.Expr.Range(), "upstream_pool out of range", "upstream_pool is how many idle server connections Sluice keeps per job and credential, from 0 (none, the default) to %d; got %d.", MaxUpstreamPool, n)
	default:
		t.UpstreamPool = int(n)
	}
}

// upstreamCA compiles a target's upstream_ca: the absolute path of the
// CA bundle the proxy checks the real server's certificate against. The
// file is read when a flow connects, not here. tlsSet says upstream_tls
// is written, so a mode that verifies nothing is the user's own choice.
func (c *compiler) upstreamCA(t *Target, a *hcl.Attribute, tlsSet bool) {
	s, ok := c.str(a)
	if !ok {
		return
	}
	switch {
	case t.Protocol == ProtoSSH:
		c.errorf(a.NameRange, "upstream_ca not supported", "ssh targets are encrypted by SSH itself, and Sluice checks their hosts' keys against known_hosts; there is no certificate for upstream_ca to verify. Remove it.")
	case t.Protocol == ProtoTCP:
		c.errorf(a.NameRange, "upstream_ca not supported", "tcp targets are relayed as they are, so Sluice never sees their servers' certificates; remove upstream_ca.")
	case t.Protocol == "":
		// The protocol is wrong, and reported.
	case !filepath.IsAbs(s):
		c.errorf(a.Expr.Range(), "Relative path", "upstream_ca must be an absolute path, such as \"/etc/sluice/ca/%s.pem\".", t.Name)
	case t.UpstreamTLS != TLSVerifyCA && t.UpstreamTLS != TLSVerifyFull && t.UpstreamTLS != "":
		why := fmt.Sprintf("this target's upstream_tls is %q", t.UpstreamTLS)
		if !tlsSet {
			why = fmt.Sprintf("a %s target's upstream_tls is %q unless it says otherwise", t.Protocol, t.UpstreamTLS)
		}
		c.errorf(a.NameRange, "upstream_ca without verification", "upstream_ca is the CA bundle Sluice checks the server's certificate against, which it does only with upstream_tls = %q or %q, and %s. Set upstream_tls = %q (or %q), or remove upstream_ca.",
			TLSVerifyFull, TLSVerifyCA, why, TLSVerifyFull, TLSVerifyCA)
	default:
		t.UpstreamCA = filepath.Clean(s)
	}
}

func (c *compiler) defaultBlock(b *hcl.Block) {
	content, d := b.Body.Content(defaultSchema)
	c.diags = append(c.diags, d...)
	def := c.rs.def
	def.Range = b.DefRange
	if a := content.Attributes["action"]; a != nil {
		if s, ok := c.keyword(a, []string{"allow", "deny"}); ok {
			def.Action, _ = ParseAction(s)
		}
	}
	if a := content.Attributes["record"]; a != nil {
		if l, ok := c.record(a); ok {
			c.rs.defRec = l
			def.Record, def.RecordSet = l, true
		}
	}
	if a := content.Attributes["reason"]; a != nil {
		def.Reason, _ = c.str(a)
	}
}

func sortedAttrs(body *hclsyntax.Body) []*hclsyntax.Attribute {
	attrs := make([]*hclsyntax.Attribute, 0, len(body.Attributes))
	for _, a := range body.Attributes {
		attrs = append(attrs, a)
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].SrcRange.Start.Byte < attrs[j].SrcRange.Start.Byte })
	return attrs
}

func (c *compiler) policy(b *hcl.Block) {
	name := b.Labels[0]
	body := b.Body.(*hclsyntax.Body)
	if !c.checkName("policy", name, b.LabelRanges[0]) || !c.define("policy", name, b.LabelRanges[0]) {
		return
	}
	p := &policy{name: name, rng: b.DefRange, record: DefaultRecord, defAction: Allow}
	attrs := map[string]*hcl.Attribute{}
	for _, sa := range sortedAttrs(body) {
		if !hasString(policyAttrs, sa.Name) {
			detail := fmt.Sprintf("An argument named %q is not expected in a policy.", sa.Name)
			if s := suggest(sa.Name, policyAttrs); s != "" {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
			c.diags = append(c.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported argument", Detail: detail, Subject: sa.NameRange.Ptr()})
			continue
		}
		attrs[sa.Name] = sa.AsHCLAttribute()
	}
	if a := attrs["targets"]; a != nil {
		list, ranges, _ := c.strList(a)
		for i, t := range list {
			switch {
			case t == "*":
				p.all = true
			case c.rs.byName[t] != nil:
				p.targets = append(p.targets, t)
			default:
				names := make([]string, len(c.rs.targets))
				for j, tt := range c.rs.targets {
					names[j] = tt.Name
				}
				detail := fmt.Sprintf("No target named %q is defined. Define it with a target block, or use \"*\" for every target.", t)
				if s := suggest(t, names); s != "" {
					detail = fmt.Sprintf("No target named %q is defined. Did you mean %q?", t, s)
				}
				c.errorf(ranges[i], "Unknown target", "%s", detail)
				p.targetsBad = true
			}
		}
		if len(list) == 0 {
			c.errorf(a.Expr.Range(), "No targets", "A policy must name the targets it covers, or [\"*\"] for all of them.")
		}
	} else {
		c.errorf(b.DefRange, "Missing required argument", "The argument \"targets\" is required: list the target names this policy covers, or [\"*\"].")
	}
	if a := attrs["when"]; a != nil {
		p.when = c.when(a, exprUse{what: "policy"})
	}
	if a := attrs["record"]; a != nil {
		p.record, _ = c.record(a)
	}
	if a := attrs["default_action"]; a != nil {
		if s, ok := c.keyword(a, []string{"allow", "deny"}); ok {
			p.defAction, _ = ParseAction(s)
		}
	}
	p.def = &Rule{ID: name + "/default", Policy: name, Action: p.defAction, Range: b.DefRange}
	if p.defAction == Deny {
		p.def.Reason = fmt.Sprintf("policy %s denies what no allow or hold block permits", name)
	}
	c.rs.rules[p.def.ID] = p.def

	counts := map[Action]int{}
	for _, sb := range body.Blocks {
		if sb.Type == "credential" {
			c.grant(p, sb)
			continue
		}
		kind, ok := ruleKinds[sb.Type]
		if !ok {
			detail := fmt.Sprintf("Blocks of type %q are not expected in a policy; use deny, hold, mask, allow or credential.", sb.Type)
			if s := suggest(sb.Type, []string{"deny", "hold", "mask", "allow", "credential"}); s != "" {
				detail = fmt.Sprintf("Blocks of type %q are not expected in a policy. Did you mean %q?", sb.Type, s)
			}
			c.errorf(sb.TypeRange, "Unsupported block type", "%s", detail)
			continue
		}
		r := c.rule(p, kind, sb, counts[kind])
		counts[kind]++
		if r == nil {
			continue
		}
		switch kind {
		case Deny:
			p.deny = append(p.deny, r)
		case Hold:
			p.hold = append(p.hold, r)
		case Mask:
			p.mask = append(p.mask, r)
		case Allow:
			p.allow = append(p.allow, r)
		}
	}
	c.rs.policies = append(c.rs.policies, p)
}

func (c *compiler) rule(p *policy, kind Action, sb *hclsyntax.Block, index int) *Rule {
	hb := sb.AsHCLBlock()
	r := &Rule{Policy: p.name, Action: kind, Range: hb.DefRange}
	switch len(sb.Labels) {
	case 0:
		r.ID = fmt.Sprintf("%s/%s[%d]", p.name, kind, index)
	case 1:
		r.Label = sb.Labels[0]
		if !c.checkName(kind.String()+" block", r.Label, sb.LabelRanges[0]) {
			return nil
		}
		r.ID = fmt.Sprintf("%s/%s/%s", p.name, kind, r.Label)
	default:
		c.errorf(sb.LabelRanges[1], "Extraneous label", "A %s block takes at most one label, its name.", kind)
		return nil
	}
	if first, ok := c.rs.rules[r.ID]; ok {
		c.errorf(sb.LabelRanges[0], "Duplicate rule name", "Rule %s is already defined at %s; give each block in a policy its own label.", r.ID, posOf(first.Range))
		return nil
	}
	c.rs.rules[r.ID] = r
	content, d := sb.Body.Content(ruleSchema(kind))
	c.diags = append(c.diags, d...)
	if a := content.Attributes["when"]; a != nil {
		r.when = c.when(a, exprUse{what: kind.String() + " block", allowStmt: true, allowAfter: kind != Allow})
		c.checkFacetTargets(p, a.Expr)
		if r.when != nil && r.when.stage == stageResult {
			r.AfterResult = true
		}
	}
	if a := content.Attributes["reason"]; a != nil {
		r.Reason, _ = c.str(a)
	}
	if a := content.Attributes["record"]; a != nil {
		r.Record, r.RecordSet = c.record(a)
	}
	switch kind {
	case Hold:
		h := &HoldSpec{Timeout: DefaultHoldTimeout, MinApprovals: 1}
		if a := content.Attributes["approvers"]; a != nil {
			list, _, ok := c.strList(a)
			if ok && len(list) == 0 {
				c.errorf(a.Expr.Range(), "No approvers", "A hold needs at least one approver, such as \"group:security\"; without one it could only time out.")
			}
			h.Approvers = list
		}
		if a := content.Attributes["timeout"]; a != nil {
			if d, ok := c.duration(a); ok {
				if d <= 0 {
					c.errorf(a.Expr.Range(), "Invalid timeout", "timeout must be positive, such as \"15m\".")
				}
				h.Timeout = d
			}
		}
		if a := content.Attributes["min_approvals"]; a != nil {
			if n, ok := c.number(a); ok {
				if n < 1 || n > 100 {
					c.errorf(a.Expr.Range(), "Invalid min_approvals", "min_approvals must be between 1 and 100; got %d.", n)
				}
				h.MinApprovals = int(n)
			}
		}
		r.Hold = h
	case Mask:
		r.Mask = c.mask(hb, content, d.HasErrors())
	}
	return r
}

// when checks a when attribute's variables now and queues its type check.
func (c *compiler) when(a *hcl.Attribute, use exprUse) *expr {
	st, d := checkVars(a.Expr, use, c.idAttrs)
	d = append(d, c.checkFuncs(a.Expr)...)
	c.diags = append(c.diags, d...)
	if readsStatementText(a.Expr) {
		c.rs.readsText = true
	}
	x := &expr{e: a.Expr, stage: st}
	if !d.HasErrors() {
		c.pending = append(c.pending, pendingExpr{x: x, attr: a.Range})
	}
	return x
}

// checkFuncs reports every call of a function the ruleset language does
// not have. The type check alone can miss one: HCL does not evaluate the
// right side of && and || when the left is unknown, so a misspelt
// function there would only fail at run time (denying, but unannounced).
func (c *compiler) checkFuncs(e hcl.Expression) hcl.Diagnostics {
	node, ok := e.(hclsyntax.Node)
	if !ok {
		return nil
	}
	return hclsyntax.VisitAll(node, func(n hclsyntax.Node) hcl.Diagnostics {
		call, ok := n.(*hclsyntax.FunctionCallExpr)
		if !ok {
			return nil
		}
		if _, known := c.rs.funcs[call.Name]; known {
			return nil
		}
		names := make([]string, 0, len(c.rs.funcs))
		for name := range c.rs.funcs {
			names = append(names, name)
		}
		sort.Strings(names)
		return hcl.Diagnostics{{
			Severity:   hcl.DiagError,
			Summary:    "Call to unknown function",
			Detail:     fmt.Sprintf("There is no function named %q. The functions are %s.", call.Name, strings.Join(names, ", ")),
			Subject:    call.NameRange.Ptr(),
			Expression: e,
		}}
	})
}

// typeCheck runs every queued when expression against typed unknowns.
func (c *compiler) typeCheck() {
	names := make([]string, 0, len(c.idAttrs))
	for n := range c.idAttrs {
		names = append(names, n)
	}
	sort.Strings(names)
	c.rs.identity = names
	vars := map[string]cty.Value{
		varIdentity: cty.UnknownVal(c.rs.identityType()),
		varProcess:  cty.UnknownVal(processType),
		varTarget:   cty.UnknownVal(targetType),
		varResult:   cty.UnknownVal(resultType),
	}
	for root, f := range facetByRoot {
		if f.reserved == "" {
			vars[root] = cty.UnknownVal(f.typ)
		}
	}
	ctx := &hcl.EvalContext{Variables: vars, Functions: c.rs.funcs}
	for _, p := range c.pending {
		d := c.rs.typeCheck(p.x.e, ctx, p.attr)
		c.diags = append(c.diags, d...)
		if d.HasErrors() {
			continue
		}
		if f, k, ok := c.rs.compileFast(p.x.e); ok && k == kBool {
			p.x.fast = f
		} else {
			c.rs.slow = true
		}
		if p.x.stage == stageResult {
			p.x.result = analyseResult(p.x.e, &hcl.EvalContext{Functions: c.rs.funcs})
		}
	}
}

// identityType is the object type identity has in this ruleset.
func (rs *Ruleset) identityType() cty.Type {
	attrs := map[string]cty.Type{identityLevelAttr: cty.String}
	for _, n := range rs.identity {
		attrs[n] = cty.String
	}
	return cty.Object(attrs)
}

// Static attribute decoding: values may not use variables or functions.

func (c *compiler) value(a *hcl.Attribute) (cty.Value, bool) {
	v, d := a.Expr.Value(nil)
	c.diags = append(c.diags, d...)
	if d.HasErrors() {
		return cty.NilVal, false
	}
	if v.IsNull() {
		c.errorf(a.Expr.Range(), "Missing value", "%s cannot be null; remove it to use the default.", a.Name)
		return cty.NilVal, false
	}
	return v, true
}

func (c *compiler) str(a *hcl.Attribute) (string, bool) {
	v, ok := c.value(a)
	if !ok {
		return "", false
	}
	if v.Type() != cty.String {
		c.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s must be a string; got %s.", a.Name, v.Type().FriendlyName())
		return "", false
	}
	return v.AsString(), true
}

func (c *compiler) strList(a *hcl.Attribute) ([]string, []hcl.Range, bool) {
	v, ok := c.value(a)
	if !ok {
		return nil, nil, false
	}
	ty := v.Type()
	if !ty.IsTupleType() && !ty.IsListType() && !ty.IsSetType() {
		c.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s must be a list of strings, such as [\"a\", \"b\"]; got %s.", a.Name, ty.FriendlyName())
		return nil, nil, false
	}
	var elems []hclsyntax.Expression
	if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && len(tup.Exprs) == v.LengthInt() {
		elems = tup.Exprs
	}
	var list []string
	var ranges []hcl.Range
	okAll := true
	i := 0
	for it := v.ElementIterator(); it.Next(); i++ {
		_, e := it.Element()
		rng := a.Expr.Range()
		if elems != nil {
			rng = elems[i].Range()
		}
		if e.IsNull() || e.Type() != cty.String {
			c.errorf(rng, "Incorrect list element type", "Every element of %s must be a string.", a.Name)
			okAll = false
			continue
		}
		list = append(list, e.AsString())
		ranges = append(ranges, rng)
	}
	return list, ranges, okAll
}

func (c *compiler) keyword(a *hcl.Attribute, allowed []string) (string, bool) {
	s, ok := c.str(a)
	if !ok {
		return "", false
	}
	if hasString(allowed, s) {
		return s, true
	}
	detail := fmt.Sprintf("%s must be one of %s; got %q.", a.Name, quoteList(allowed), s)
	if sg := suggest(s, allowed); sg != "" {
		detail += fmt.Sprintf(" Did you mean %q?", sg)
	}
	c.errorf(a.Expr.Range(), "Invalid value for "+a.Name, "%s", detail)
	return "", false
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func (c *compiler) record(a *hcl.Attribute) (RecordLevel, bool) {
	s, ok := c.keyword(a, recordNames[:])
	if !ok {
		return 0, false
	}
	l, _ := ParseRecordLevel(s)
	return l, true
}

func (c *compiler) duration(a *hcl.Attribute) (time.Duration, bool) {
	s, ok := c.str(a)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.errorf(a.Expr.Range(), "Invalid duration", "%s must be a duration such as \"90s\", \"15m\" or \"1h30m\"; %q is not one.", a.Name, s)
		return 0, false
	}
	return d, true
}

func (c *compiler) number(a *hcl.Attribute) (int64, bool) {
	v, ok := c.value(a)
	if !ok {
		return 0, false
	}
	if v.Type() != cty.Number {
		c.errorf(a.Expr.Range(), "Incorrect attribute value type", "%s must be a number; got %s.", a.Name, v.Type().FriendlyName())
		return 0, false
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if !bf.IsInt() || acc != 0 {
		c.errorf(a.Expr.Range(), "Invalid number", "%s must be a whole number.", a.Name)
		return 0, false
	}
	return n, true
}
