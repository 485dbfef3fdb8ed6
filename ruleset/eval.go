package ruleset

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Identity levels.
const (
	LevelOIDC       = "oidc"       // claims come from a verified CI token
	LevelUnverified = "unverified" // only process facts; no claims
	LevelNone       = "none"       // nothing is known about the job
)

// Identity is who a flow belongs to. In expressions, identity.level is
// Level and identity.NAME is Claims[NAME], or "" when the claim is absent,
// so a condition on a missing claim is simply false.
type Identity struct {
	// Level is LevelOIDC, LevelUnverified or LevelNone; empty means none.
	Level string
	// Claims are the verified token's claims, flattened to strings by the
	// caller. A claim named "level" is hidden by the level.
	Claims map[string]string
}

// Process is what the kernel told us about the connecting process:
// process.pid, uid, gid, exe, comm, cgroup and unit in expressions.
type Process struct {
	PID, UID, GID     int64
	Exe, Comm, Cgroup string
	Unit              string // systemd unit, if any
}

// Endpoint is the destination of a flow: target.name, protocol, address
// ("ip:port"), ip and port in expressions.
type Endpoint struct {
	Name     string // the ruleset target's name
	Protocol string
	Addr     netip.AddrPort // the original destination; may be invalid
}

// Flow is everything known about a connection before its first statement.
type Flow struct {
	Identity Identity
	Process  Process
	Target   Endpoint
}

// Statement is a classified SQL statement: the sql facet in expressions
// (sql.kind, tables, functions, flags, has_where, has_limit and text;
// statement.* is its older name). Decoders fill it; the ruleset never
// parses SQL. A decision about a connection itself, before or without
// statements, uses Kind "connect". Its slices may be shared with a
// decoder's cache and must not be modified.
type Statement struct {
	// Kind is a lower-case verb: select, insert, update, delete, merge,
	// copy_in, copy_out, drop, truncate, alter, create, grant, revoke, set,
	// show, transaction, explain, call, do, execute, lock, vacuum, other,
	// or connect; other protocols add their own (for example exec for SSH,
	// and a Kubernetes request's verb).
	Kind      string
	Tables    []string // every table touched, schema-qualified when written so
	Functions []string // every function called, schema-qualified when written so
	// Flags are facts a rule will want to deny whatever the kind, sorted
	// and without duplicates. The PostgreSQL classifier sets
	// dangerous_function, copy_program, copy_file and search_path (see
	// the package doc); other decoders may add their own.
	Flags    []string
	HasWhere bool
	HasLimit bool
	Text     string
	// SSH is what an ssh flow's decoder reports of one request (the ssh
	// and sftp facets); nil for every other protocol.
	SSH *SSHRequest
	// K8s is what a k8s flow's decoder reports of one Kubernetes API
	// request (the k8s facet); nil for every other protocol.
	K8s *K8sRequest
}

// Kubernetes API verbs (K8sRequest.Verb, k8s.verb in rules, and
// Statement.Kind of a k8s request), as the API server names them: a
// resource request gets one of the first eight, a request for anything
// else (discovery, /version, /healthz, /openapi) its HTTP method in lower
// case (get, post, ...).
const (
	K8sGet              = "get"
	K8sList             = "list"
	K8sWatch            = "watch"
	K8sCreate           = "create"
	K8sUpdate           = "update"
	K8sPatch            = "patch"
	K8sDelete           = "delete"
	K8sDeleteCollection = "deletecollection"
)

// K8sRequest is one Kubernetes API request as its decoder resolved it,
// the way the API server resolves it (k8s.io/apiserver's RequestInfo),
// plus a few fields of the object a create, update or patch sends.
// Statement.Kind is Verb.
type K8sRequest struct {
	// Verb is one of the K8s* verbs for a resource request; for other
	// requests, the HTTP method in lower case.
	Verb string
	// IsResource says the request is for a resource (a path below /api
	// or /apis naming one); false for discovery and the server's own
	// paths.
	IsResource bool
	// Group is the API group ("" for the core group), Version its version.
	Group, Version string
	// Resource is the resource ("pods", "secrets"), Subresource its
	// subresource ("exec", "attach", "portforward", "log", "proxy",
	// "eviction", "scale", "status").
	Resource, Subresource string
	// Namespace is the request's namespace, "" for cluster-scoped
	// resources and for requests across all namespaces.
	Namespace string
	// Name is the object's name, "" for lists, watches and creates.
	Name string
	// Path is the request's URL path.
	Path string
	// UserAgent is the client's User-Agent header.
	UserAgent string
	// ObjectKind is the kind of the object a create, update or patch
	// sends ("Pod", "Deployment"), from its body; "" when there is none
	// or it does not say.
	ObjectKind string
	// Images are the container images of the pod spec the body holds
	// (a Pod, or a workload's pod template), init and ephemeral
	// containers included, without duplicates: each list's in its
	// order, the lists in a fixed order (containers, ephemeral, init).
	Images []string
	// Privileged, HostPath and HostNetwork say the pod spec the body
	// holds runs a privileged container, mounts a hostPath volume or
	// uses the host's network.
	Privileged, HostPath, HostNetwork bool
}

// SSH request kinds (SSHRequest.Kind, ssh.kind in rules).
const (
	SSHShell        = "shell"
	SSHExec         = "exec"
	SSHSubsystem    = "subsystem"
	SSHDirectTCPIP  = "direct_tcpip"
	SSHTCPIPForward = "tcpip_forward"
	SSHAgentForward = "agent_forward"
	SSHX11          = "x11"
)

// KindSFTP is Statement.Kind of an SFTP operation, whose SSHRequest has
// Kind SSHSubsystem, Subsystem "sftp" and the operation in SFTPOp.
const KindSFTP = "sftp"

// SSHRequest is one request of an ssh session as its decoder saw it:
// opening a shell, running a command, starting a subsystem, a forward
// (either way), agent forwarding or X11, or one file operation of an
// SFTP subsystem. Statement.Kind is Kind, except for SFTP operations,
// whose Statement.Kind is "sftp".
type SSHRequest struct {
	// User is the user name the job asked to log in as.
	User string
	// Kind is one of the SSH* kinds above. SFTP operations have Kind
	// subsystem and Subsystem "sftp".
	Kind string
	// Command is an exec request's command line, as sent.
	Command string
	// Argv is Command's words when it is one simple command of literal
	// words (no pipes, lists, substitutions or expansions); nil otherwise.
	Argv []string
	// Programs are the base names of every program the command line runs,
	// as a POSIX shell parses it (each command of a pipeline or list,
	// command substitutions included), in order, without duplicates.
	// Names that are not literal (built by an expansion) show as "?".
	Programs []string
	// Subsystem is a subsystem request's name (sftp).
	Subsystem string
	// ForwardHost and ForwardPort are a forward's target: where a
	// direct_tcpip channel connects from the host (ssh -L, -D, -W), or
	// the address a tcpip_forward asks the host to listen on (ssh -R). A
	// unix socket forward has the socket's path and port 0.
	ForwardHost string
	ForwardPort int
	// Env are the names of the environment variables the job asked to
	// set on the channel, sorted.
	Env []string
	// Pty says the channel asked for a terminal, of type Term.
	Pty  bool
	Term string
	// SFTPOp is an SFTP operation: read or write (the opening of a file
	// for reading, or for writing, appending, creating or truncating;
	// its bytes are the result), remove, rename, mkdir, rmdir, setstat,
	// symlink, link, list, stat or readlink. SFTPPath is its path and
	// SFTPTarget the second path of a rename, link or symlink. SFTPOp is
	// empty except on SFTP operations.
	SFTPOp     string
	SFTPPath   string
	SFTPTarget string
}

// KindConnect is the statement kind for decisions about a connection
// rather than a command.
const KindConnect = "connect"

// KindTransaction is the kind of transaction control (BEGIN, COMMIT,
// ROLLBACK, SAVEPOINT and the like).
const KindTransaction = "transaction"

// returnsData reports whether a statement of this kind can bring data
// back for a mask rule to change. A connection decision and transaction
// control bring none (their errors are the server's own words), so mask
// rules do not fire on them: their verdict is what the deny, hold and
// allow rules say, and a transcript does not show BEGIN as masked.
func returnsData(kind string) bool {
	return kind != KindConnect && kind != KindTransaction
}

// Result is what a statement produced so far: result.rows and
// result.bytes in expressions. Rules that use result fire only when Known.
type Result struct {
	Known bool
	Rows  int64
	Bytes int64
}

// Input is one decision's facts.
type Input struct {
	Flow
	Statement Statement
	Result    Result
}

// Decision is a verdict and everything needed to apply it. Rule, Hold and
// the Masks' specs point into the Ruleset and must not be modified.
type Decision struct {
	// Action is the verdict: the strongest action among every firing rule
	// of every matching policy.
	Action Action
	// Rule is the rule that decided: the first firing rule of the winning
	// action, a policy's default, or the ruleset default.
	Rule *Rule
	// Reason is a sentence for the client and the record.
	Reason string
	// Hold is how to get the statement approved when Action is Hold.
	Hold *HoldSpec
	// Masks are every mask rule that fired, to apply to the result when
	// the statement runs (Action Mask, or Hold once approved).
	Masks []*Rule
	// Record is how much to record: the highest of the matching policies'
	// levels and the deciding and masking rules' own levels.
	Record RecordLevel
	// Monitor is set when the ruleset is in monitor mode: log and record
	// Action, but enforce nothing. Use Enforced for the action to apply.
	Monitor bool
	// AwaitResult is set when the result was not known and a deny, hold or
	// mask rule whose condition depends on result.* could still fire:
	// evaluate again with the Result as it arrives. A rule such as
	// statement.kind == "copy_out" || result.rows > 1000 fires before
	// execution for a COPY and waits for the result for a SELECT.
	AwaitResult bool
	// Err is set when an expression failed at evaluation time; the
	// decision is then Deny (fail closed) and Rule is the failing rule.
	Err error
}

// Enforced is the action to apply: Allow in monitor mode, else Action.
func (d *Decision) Enforced() Action {
	if d.Monitor {
		return Allow
	}
	return d.Action
}

// Evaluate decides one statement. It is Match followed by Decide; a
// caller deciding many statements on one connection should call Match
// once and keep it.
func (rs *Ruleset) Evaluate(in *Input) Decision {
	m := rs.match(&in.Flow, nil)
	return m.decide(&in.Statement, in.Result, nil)
}

// Match is a flow matched against the ruleset's policies: the per
// connection half of evaluation. It is immutable, so concurrent Decide
// calls are safe, and it keeps its Ruleset alive: a connection keeps the
// ruleset it started with until it asks for a new Match. It keeps the
// Flow's Claims map, which the caller must not modify afterwards.
type Match struct {
	rs       *Ruleset
	flow     Flow
	addr, ip string
	policies []*policy
	record   RecordLevel
	errRule  *Rule // set when a policy's when failed
	err      error
}

// Match evaluates which policies apply to a flow.
func (rs *Ruleset) Match(f Flow) *Match { return rs.match(&f, nil) }

// Policies returns the names of the matched policies, in source order.
func (m *Match) Policies() []string {
	names := make([]string, len(m.policies))
	for i, p := range m.policies {
		names[i] = p.name
	}
	return names
}

// Ruleset returns the ruleset the flow was matched against.
func (m *Match) Ruleset() *Ruleset { return m.rs }

// ByClassification reports whether this flow's decisions depend on a SQL
// statement only through its classification: no expression reads
// sql.text (or statement.text), so two SQL statements with equal Kind,
// Tables, Functions, Flags, HasWhere and HasLimit get the same decision
// (and, with equal counts, the same result decision). A caller may then
// keep decisions per classification.
//
// It speaks of SQL statements only, those whose Statement.SSH and
// Statement.K8s are nil. An ssh request is described by Statement.SSH
// (ssh.* and sftp.*) and a Kubernetes API request by Statement.K8s
// (k8s.*), which that key leaves out, so two requests of equal Kind may
// be decided differently: decide each with Decide, never from a cache
// keyed on the classification. It returns false for a flow whose target
// speaks a protocol with a facet of its own (ssh, k8s), so a caller that
// only asks this cannot get it wrong.
func (m *Match) ByClassification() bool {
	return !m.rs.readsText && !ownFacet(m.flow.Target.Protocol)
}

// Decide decides one statement on the matched flow.
func (m *Match) Decide(st *Statement, res Result) Decision { return m.decide(st, res, nil) }

func (rs *Ruleset) flowValues(f *Flow) (identity, process, target cty.Value) {
	level := f.Identity.Level
	if level == "" {
		level = LevelNone
	}
	ids := make(map[string]cty.Value, len(rs.identity)+1)
	ids[identityLevelAttr] = cty.StringVal(level)
	for _, n := range rs.identity {
		ids[n] = cty.StringVal(f.Identity.Claims[n])
	}
	identity = cty.ObjectVal(ids)
	p := &f.Process
	process = cty.ObjectVal(map[string]cty.Value{
		"pid": cty.NumberIntVal(p.PID), "uid": cty.NumberIntVal(p.UID), "gid": cty.NumberIntVal(p.GID),
		"exe": cty.StringVal(p.Exe), "comm": cty.StringVal(p.Comm), "cgroup": cty.StringVal(p.Cgroup), "unit": cty.StringVal(p.Unit),
	})
	t := &f.Target
	addr, ip := "", ""
	if t.Addr.IsValid() {
		addr, ip = t.Addr.String(), t.Addr.Addr().Unmap().String()
	}
	target = cty.ObjectVal(map[string]cty.Value{
		"name": cty.StringVal(t.Name), "protocol": cty.StringVal(t.Protocol),
		"address": cty.StringVal(addr), "ip": cty.StringVal(ip), "port": cty.NumberIntVal(int64(t.Addr.Port())),
	})
	return identity, process, target
}

func (rs *Ruleset) match(f *Flow, tr *[]Step) *Match {
	m := &Match{rs: rs, flow: *f}
	if f.Target.Addr.IsValid() {
		m.addr, m.ip = f.Target.Addr.String(), f.Target.Addr.Addr().Unmap().String()
	}
	candidates, ok := rs.byTarget[f.Target.Name]
	if !ok {
		candidates = rs.wildcard
	}
	if tr != nil {
		for _, p := range rs.policies {
			if !hasString(candidates2names(candidates), p.name) {
				*tr = append(*tr, Step{ID: p.name, Range: p.rng, Outcome: fmt.Sprintf("policy does not cover target %q", f.Target.Name)})
			}
		}
	}
	ev := evaluator{m: m, env: env{flow: &m.flow, addr: m.addr, ip: m.ip, st: &Statement{}}}
	for _, p := range candidates {
		if p.when != nil {
			ok, _, err := ev.eval(p.when)
			if err != nil {
				m.err, m.errRule = fmt.Errorf("evaluate policy %s: %w", p.name, err), p.def
				if tr != nil {
					*tr = append(*tr, Step{ID: p.name, Range: p.rng, Outcome: "error: " + err.Error()})
				}
				return m
			}
			if !ok {
				if tr != nil {
					*tr = append(*tr, Step{ID: p.name, Range: p.rng, Outcome: "policy when is false for this flow"})
				}
				continue
			}
		}
		if tr != nil {
			*tr = append(*tr, Step{ID: p.name, Range: p.rng, Outcome: "policy matches the flow", Fired: true})
		}
		m.policies = append(m.policies, p)
		m.record = max(m.record, p.record)
	}
	return m
}

// evaluator evaluates when expressions for one decision: compiled ones
// directly, the rest with HCL, whose variables it builds on first use.
type evaluator struct {
	m   *Match
	env env
	ctx *hcl.EvalContext
}

// eval returns whether x holds. pending is set, and fired false, when x
// depends on a result that is not known yet: a condition that does not
// (statement.kind == "copy_out" || result.rows > 1000 for a COPY) is
// decided now.
func (ev *evaluator) eval(x *expr) (fired, pending bool, err error) {
	if x.fast != nil {
		v, err := x.fast(&ev.env)
		if err != nil {
			return false, false, err
		}
		if v.unknown {
			return false, true, nil
		}
		return v.b, false, nil
	}
	if ev.ctx == nil {
		id, proc, tgt := ev.m.rs.flowValues(&ev.m.flow)
		vars := map[string]cty.Value{
			varIdentity: id, varProcess: proc, varTarget: tgt,
			varResult: resultValue(ev.env.res),
		}
		for _, f := range facets {
			if f.reserved != "" {
				continue
			}
			v := f.value(&ev.env)
			vars[f.name] = v
			for _, a := range f.aliases {
				vars[a] = v
			}
		}
		ev.ctx = &hcl.EvalContext{Variables: vars, Functions: ev.m.rs.funcs}
	}
	v, diags := x.e.Value(ev.ctx)
	if diags.HasErrors() {
		return false, false, diags
	}
	if v.Type() == cty.Bool && !v.IsKnown() {
		return false, true, nil
	}
	if v.Type() != cty.Bool || v.IsNull() {
		return false, false, errNotBool
	}
	return v.True(), false, nil
}

func candidates2names(ps []*policy) []string {
	n := make([]string, len(ps))
	for i, p := range ps {
		n[i] = p.name
	}
	return n
}

var errNotBool = errors.New("condition is not a known boolean")

func stringList(list []string) cty.Value {
	if len(list) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	vals := make([]cty.Value, len(list))
	for i, s := range list {
		vals[i] = cty.StringVal(s)
	}
	return cty.ListVal(vals)
}

func (m *Match) decide(st *Statement, res Result, tr *[]Step) Decision {
	rs := m.rs
	d := Decision{Monitor: rs.mode == Monitor}
	if m.err != nil {
		return failClosed(d, m.errRule, m.err, m.record)
	}
	if len(m.policies) == 0 {
		d.Action, d.Rule, d.Record = rs.def.Action, rs.def, rs.defRec
		d.Reason = rs.def.reasonText()
		if tr != nil {
			*tr = append(*tr, Step{ID: rs.def.ID, Range: rs.def.Range, Outcome: "no policy matches the flow", Fired: true})
		}
		return d
	}
	ev := evaluator{m: m, env: env{flow: &m.flow, addr: m.addr, ip: m.ip, st: st, res: res}}
	pending := false
	step := func(r *Rule, outcome string, fired bool) {
		if tr != nil {
			*tr = append(*tr, Step{ID: r.ID, Range: r.Range, Outcome: outcome, Fired: fired})
		}
	}
	// fire evaluates one rule; skipped rules wait for the result.
	fire := func(r *Rule) (bool, error) {
		if r.when == nil {
			step(r, "fires (no when)", true)
			return true, nil
		}
		ok, wait, err := ev.eval(r.when)
		switch {
		case err != nil:
			step(r, "error: "+err.Error(), false)
		case wait:
			pending = true
			step(r, "waits for the result", false)
		case ok:
			step(r, "fires", true)
		default:
			step(r, "when is false", false)
		}
		return ok, err
	}

	// Explicit deny blocks first, across every matched policy: the first
	// that fires in source order decides, and nothing else can undo it.
	var deny, hold, allow *Rule
	var masks []*Rule
	for _, p := range m.policies {
		for _, r := range p.deny {
			ok, err := fire(r)
			if err != nil {
				return failClosed(d, r, fmt.Errorf("evaluate %s: %w", r.ID, err), m.record)
			}
			if ok && deny == nil {
				deny = r
				if tr == nil {
					break
				}
			}
		}
		if deny != nil && tr == nil {
			break
		}
	}
	// Then each policy's holds and allows, its default_action when none of
	// them fired, and its masks.
	for _, p := range m.policies {
		if deny != nil && tr == nil {
			break
		}
		decided := false
		for _, r := range p.hold {
			ok, err := fire(r)
			if err != nil {
				return failClosed(d, r, fmt.Errorf("evaluate %s: %w", r.ID, err), m.record)
			}
			if ok {
				decided = true
				if hold == nil {
					hold = r
				}
				if tr == nil {
					break
				}
			}
		}
		for _, r := range p.allow {
			ok, err := fire(r)
			if err != nil {
				return failClosed(d, r, fmt.Errorf("evaluate %s: %w", r.ID, err), m.record)
			}
			if ok {
				decided = true
				if allow == nil {
					allow = r
				}
				if tr == nil {
					break
				}
			}
		}
		if !decided && p.defAction == Deny {
			step(p.def, "no allow or hold block fired and default_action is deny", true)
			if deny == nil {
				deny = p.def
			}
			if tr == nil {
				break
			}
		}
		for _, r := range p.mask {
			if !returnsData(st.Kind) {
				step(r, "skipped: a "+st.Kind+" returns no data to mask", false)
				continue
			}
			ok, err := fire(r)
			if err != nil {
				return failClosed(d, r, fmt.Errorf("evaluate %s: %w", r.ID, err), m.record)
			}
			if ok {
				masks = append(masks, r)
			}
		}
	}

	d.Record = m.record
	switch {
	case deny != nil:
		d.Action, d.Rule = Deny, deny
	case hold != nil:
		d.Action, d.Rule, d.Hold, d.Masks = Hold, hold, hold.Hold, masks
	case len(masks) > 0:
		d.Action, d.Rule, d.Masks = Mask, masks[0], masks
	case allow != nil:
		d.Action, d.Rule = Allow, allow
	default:
		d.Action, d.Rule = Allow, m.policies[0].def
	}
	if d.Rule.RecordSet {
		d.Record = max(d.Record, d.Rule.Record)
	}
	for _, r := range d.Masks {
		if r.RecordSet {
			d.Record = max(d.Record, r.Record)
		}
	}
	d.Reason = d.Rule.reasonText()
	d.AwaitResult = pending && d.Action != Deny
	return d
}

// resultValue is result in expressions: unknown until the result is.
func resultValue(res Result) cty.Value {
	if !res.Known {
		return cty.UnknownVal(resultType)
	}
	return cty.ObjectVal(map[string]cty.Value{
		"rows": cty.NumberIntVal(res.Rows), "bytes": cty.NumberIntVal(res.Bytes),
	})
}

func failClosed(d Decision, r *Rule, err error, rec RecordLevel) Decision {
	d.Action, d.Rule, d.Err, d.Record = Deny, r, err, max(rec, RecordMetadata)
	d.Reason = "rule evaluation failed, so the statement is denied: " + err.Error()
	return d
}

// reasonText is the rule's reason: its own, or one made from its action
// and ID.
func (r *Rule) reasonText() string {
	if r.reason != "" {
		return r.reason
	}
	return reasonFor(r)
}

func reasonFor(r *Rule) string {
	if r.Reason != "" {
		return r.Reason
	}
	switch r.Action {
	case Deny:
		return "denied by " + r.ID
	case Hold:
		return "held for approval by " + r.ID
	case Mask:
		return "masked by " + r.ID
	}
	return "allowed by " + r.ID
}

// Step is one line of an Explanation.
type Step struct {
	ID      string    // policy name or rule ID
	Range   hcl.Range // where it is defined
	Outcome string    // what happened, in words
	Fired   bool      // the policy matched or the rule fired
}

// Explanation is a decision with every step that led to it.
type Explanation struct {
	Decision Decision
	Steps    []Step
	// Grant and GrantErr are Match.Grant's answer for the flow: both nil
	// when the target injects no credentials.
	Grant    *Grant
	GrantErr error
}

// Explain decides like Evaluate, but evaluates every policy and rule and
// says what each did. It is for people (sluice rules explain), not for
// the data path.
func (rs *Ruleset) Explain(in *Input) Explanation {
	var steps []Step
	m := rs.match(&in.Flow, &steps)
	d := m.decide(&in.Statement, in.Result, &steps)
	g, gerr := m.Grant()
	return Explanation{Decision: d, Steps: steps, Grant: g, GrantErr: gerr}
}
