package ruleset

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty/function"
)

// Ruleset is one compiled, validated set of rule files. It is immutable
// after Parse returns it, so any number of goroutines may evaluate it at
// once; swapping in a new ruleset is the Store's job.
type Ruleset struct {
	mode     Mode
	digest   string
	targets  []*Target
	byName   map[string]*Target
	policies []*policy
	// byTarget lists, per target name, the policies that name it or "*",
	// in source order. wildcard is the list for names no policy names.
	byTarget map[string][]*policy
	wildcard []*policy
	def      *Rule
	defRec   RecordLevel
	rules    map[string]*Rule
	tests    []*ruleTest

	funcs    map[string]function.Function
	regexes  map[string]*compiledRegex
	custom   map[string]*regexp.Regexp // detector blocks by name
	identity []string                  // identity attributes the expressions use, sorted
	slow     bool                      // some expression needs HCL's evaluator
	// readsText is set when some expression reads sql.text (or the
	// whole statement object): decisions may then differ between
	// statements that classify the same.
	readsText bool
}

// Mode says whether verdicts are enforced. The zero value is Enforce.
type Mode uint8

const (
	// Enforce applies every verdict.
	Enforce Mode = iota
	// Monitor computes, logs and records every verdict but enforces none:
	// nothing is blocked, masked or held.
	Monitor
)

// String returns "enforce" or "monitor".
func (m Mode) String() string {
	if m == Monitor {
		return "monitor"
	}
	return "enforce"
}

// Protocols a target may name.
const (
	ProtoPostgres = "postgres"
	ProtoMySQL    = "mysql"
	ProtoSSH      = "ssh"
	ProtoK8s      = "k8s"
	ProtoTCP      = "tcp"
)

// Upstream TLS modes, with libpq's meanings.
const (
	TLSDisable    = "disable"
	TLSPrefer     = "prefer"
	TLSRequire    = "require"
	TLSVerifyCA   = "verify-ca"
	TLSVerifyFull = "verify-full"
)

// What a target's flows get while they are not decoded (Target.Undecoded):
// the build has no decoder for its protocol, or the decoder cannot decode
// this target (an ssh target without credentials, since Sluice must log
// in to the host itself). Nothing of such a flow is inspected: no
// statement, command or request is decided, and no rule about one fires.
const (
	// UndecodedRelay relays the flow's bytes unread, as a tcp target's
	// are, and records its metadata: who, where, bytes and duration. The
	// embedded default ruleset sets it on its targets, so installing
	// Sluice never breaks a pipeline by itself.
	UndecodedRelay = "relay"
	// UndecodedRefuse refuses the flow, in the protocol's own terms where
	// it has a way to say so before any decoding (a MySQL error packet in
	// place of the server's greeting, an SSH disconnect message). It is
	// the default for a target that does not say: whoever names a
	// protocol in a ruleset expects its rules to apply to that traffic,
	// and a flow they cannot see is refused rather than let through
	// unseen (fail closed).
	UndecodedRefuse = "refuse"
)

// DefaultResolveEvery is how often the daemon re-resolves a target's
// hostnames when the target does not say.
const DefaultResolveEvery = time.Minute

// Target is one set of destinations the proxy intercepts and speaks one
// protocol with. Targets are shared, read-only values.
type Target struct {
	Name      string
	Protocol  string    // one of the Proto constants
	Addresses []Address // never empty
	// UpstreamTLS is how the proxy secures its own connection to the real
	// server: disable, prefer, require, verify-ca or verify-full. It
	// defaults to prefer for postgres and mysql, verify-full for k8s and
	// disable for ssh (which encrypts by itself) and tcp (relayed as is).
	UpstreamTLS string
	// UpstreamCA is the absolute path of a PEM bundle of CA certificates
	// the proxy checks the real server's certificate against, with
	// UpstreamTLS verify-ca or verify-full, in place of the system's
	// roots (a cluster's own CA, a database's private CA). Empty for the
	// system roots. Only k8s, postgres and mysql targets may set it; the
	// decoder reads the file when a flow connects, so a missing or
	// unreadable file fails that flow, not the load.
	UpstreamCA string
	// ResolveEvery is how often hostnames in Addresses are re-resolved into
	// the kernel's target map; DefaultResolveEvery unless set.
	ResolveEvery time.Duration
	// Undecoded says what the target's flows get while they are not
	// decoded, because the build has no decoder for Protocol or its
	// decoder cannot decode this target (ssh without Credentials):
	// UndecodedRelay or UndecodedRefuse. It defaults to UndecodedRefuse,
	// and has no effect on flows that are decoded. It is empty for tcp
	// targets, which are always relayed opaquely.
	Undecoded string
	// UndecodedRange is where undecoded is set; nil when it is the
	// default.
	UndecodedRange *hcl.Range
	// Credentials are injected in place of the client's own; a target
	// with any accepts only sessions granted one (see Match.Grant). An
	// ssh target is decoded only with credentials: Sluice logs in to
	// the host itself.
	Credentials []*Credential
	// KnownHosts is, for ssh targets, the absolute path of an OpenSSH
	// known_hosts file that the hosts' keys (or their host CA, with
	// @cert-authority) are checked against when Sluice logs in to them
	// itself. Required on an ssh target with credentials; empty on other
	// protocols, which may not set it.
	KnownHosts string
	// UpstreamPool is, for postgres targets with Credentials, how many
	// idle server connections the proxy keeps per job, credential and
	// startup parameters, to serve that job's next sessions without a new
	// login (each is reset with DISCARD ALL first). 0, the default, keeps
	// none.
	UpstreamPool int
	// Range is where the target block is defined.
	Range hcl.Range
}

// Covers reports whether the target includes ap by IP, CIDR or "*".
// Hostname addresses never match here: the daemon resolves them itself.
func (t *Target) Covers(ap netip.AddrPort) bool {
	_, ok := t.cover(ap)
	return ok
}

// cover returns the prefix length of the most specific address covering ap;
// "*" counts as -1.
func (t *Target) cover(ap netip.AddrPort) (int, bool) {
	best, ok := -2, false
	ip := ap.Addr().Unmap()
	for _, a := range t.Addresses {
		if ap.Port() < a.PortLo || ap.Port() > a.PortHi {
			continue
		}
		switch {
		case a.Any:
			if best < -1 {
				best, ok = -1, true
			}
		case a.Prefix.IsValid() && a.Prefix.Contains(ip):
			if a.Prefix.Bits() > best {
				best, ok = a.Prefix.Bits(), true
			}
		}
	}
	return best, ok
}

// Mode reports whether the ruleset enforces verdicts or only monitors.
func (rs *Ruleset) Mode() Mode { return rs.mode }

// Digest is the hex SHA-256 of the ruleset's files in the canonical form
// signatures cover (see Digest); recordings store it to name the ruleset
// that decided.
func (rs *Ruleset) Digest() string { return rs.digest }

// Targets returns every target in source order. The slice is the caller's;
// the Targets are shared and must not be modified.
func (rs *Ruleset) Targets() []*Target {
	return append([]*Target(nil), rs.targets...)
}

// Target returns the target with the given name, or nil.
func (rs *Ruleset) Target(name string) *Target { return rs.byName[name] }

// TargetFor returns the target whose IP, CIDR or "*" address covers ap
// most specifically (longest prefix; "*" last; source order breaks ties),
// or nil. Hostname addresses are not consulted: the daemon resolves them
// and keeps its own map from resolved address to target.
func (rs *Ruleset) TargetFor(ap netip.AddrPort) *Target {
	var found *Target
	best := -2
	for _, t := range rs.targets {
		if n, ok := t.cover(ap); ok && n > best {
			found, best = t, n
		}
	}
	return found
}

// Rule returns the rule with the given ID (see Rule.ID), or nil.
func (rs *Ruleset) Rule(id string) *Rule { return rs.rules[id] }

// Policies returns the policy names in source order.
func (rs *Ruleset) Policies() []string {
	names := make([]string, len(rs.policies))
	for i, p := range rs.policies {
		names[i] = p.name
	}
	return names
}

//go:embed default.hcl
var defaultSource []byte

// DefaultFileName is the name the embedded default ruleset's diagnostics
// and digest use.
const DefaultFileName = "default.hcl"

// DefaultSource returns the text of the embedded default ruleset, which
// the daemon uses when its configuration names no rules_dir.
func DefaultSource() []byte { return bytes.Clone(defaultSource) }

// Default returns the compiled embedded default ruleset. It panics if the
// embedded file is invalid, which its tests rule out.
func Default() *Ruleset {
	rs, diags := Parse(map[string][]byte{DefaultFileName: defaultSource})
	if diags.HasErrors() {
		panic("ruleset: embedded default ruleset is invalid: " + diags.Error())
	}
	return rs
}

// Parse compiles a ruleset from rule files given by name. Names are used
// in diagnostics and in the digest; files are read in name order, and
// every *.hcl file is HCL native syntax.
//
// The diagnostics carry every problem found, with source ranges. When they
// contain an error the returned Ruleset is nil. Warnings do not stop a
// load.
func Parse(files map[string][]byte) (*Ruleset, hcl.Diagnostics) {
	rs, _, diags := parse(files)
	return rs, diags
}

// Load reads a ruleset from path, which is either a directory, whose *.hcl
// files (not those in subdirectories) make up the ruleset, or a single
// .hcl file. Diagnostics name files by their path as given (path joined
// with the file name for a directory).
//
// The returned files map every parsed file by that name, for printing
// diagnostics with snippets (hcl.NewDiagnosticTextWriter). A directory
// with no *.hcl files is an error: an empty ruleset would deny everything
// by default and is almost certainly a mistake.
func Load(path string) (*Ruleset, map[string]*hcl.File, hcl.Diagnostics) {
	src, err := ReadFiles(path)
	if err != nil {
		return nil, nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read rules",
			Detail:   err.Error(),
		}}
	}
	return parse(src)
}

// ReadFiles reads the rule files at path (a directory's *.hcl files, or
// one file) into a map keyed by path-joined name, ready for Parse.
func ReadFiles(path string) (map[string][]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	if !fi.IsDir() {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		return map[string][]byte{path: b}, nil
	}
	names, err := hclNames(path)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("read rules: no *.hcl files in %s", path)
	}
	files := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(path, n))
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		files[filepath.Join(path, n)] = b
	}
	return files, nil
}

// hclNames lists the regular *.hcl files directly in dir, sorted.
func hclNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".hcl") && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func parse(src map[string][]byte) (*Ruleset, map[string]*hcl.File, hcl.Diagnostics) {
	names := make([]string, 0, len(src))
	for n := range src {
		names = append(names, n)
	}
	sort.Strings(names)

	p := hclparse.NewParser()
	var diags hcl.Diagnostics
	var bodies []*hclsyntax.Body
	for _, n := range names {
		f, d := p.ParseHCL(src[n], n)
		diags = append(diags, d...)
		if f == nil {
			continue
		}
		if b, ok := f.Body.(*hclsyntax.Body); ok {
			bodies = append(bodies, b)
		}
	}
	files := p.Files()
	if diags.HasErrors() {
		return nil, files, diags
	}
	d := digestFiles(src)
	rs, cd := compile(bodies)
	diags = append(diags, cd...)
	if diags.HasErrors() {
		return nil, files, diags
	}
	rs.digest = hex.EncodeToString(d[:])
	return rs, files, diags
}

// digestFiles is Digest over file contents keyed by base name.
func digestFiles(src map[string][]byte) [32]byte {
	base := make(map[string][]byte, len(src))
	for n, b := range src {
		base[filepath.Base(n)] = b
	}
	return Digest(base)
}

// Digest returns the SHA-256 of the canonical form of a set of rule files:
// the line "sluice-ruleset-v1\n", then for each file in byte order of its
// name, the name's length as a big-endian uint64, the name, the content's
// length as a big-endian uint64 and the content. Names are base names.
func Digest(files map[string][]byte) [32]byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	h.Write([]byte("sluice-ruleset-v1\n"))
	var n [8]byte
	put := func(b []byte) {
		l := uint64(len(b))
		for i := 7; i >= 0; i-- {
			n[i] = byte(l)
			l >>= 8
		}
		h.Write(n[:])
		h.Write(b)
	}
	for _, name := range names {
		put([]byte(name))
		put(files[name])
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// DiagnosticLine renders d the way every Sluice tool reports ruleset
// problems: "file:line:col: severity: summary: detail", with fallback in
// place of the position when d has no source range.
func DiagnosticLine(d *hcl.Diagnostic, fallback string) string {
	sev := "error"
	if d.Severity == hcl.DiagWarning {
		sev = "warning"
	}
	msg := d.Summary
	if d.Detail != "" {
		msg += ": " + d.Detail
	}
	if s := d.Subject; s != nil {
		return fmt.Sprintf("%s:%d:%d: %s: %s", s.Filename, s.Start.Line, s.Start.Column, sev, msg)
	}
	if fallback == "" {
		return sev + ": " + msg
	}
	return fallback + ": " + sev + ": " + msg
}
