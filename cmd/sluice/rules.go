package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/postgres"
	"github.com/sluicehq/sluice/ruleset"
)

const rulesUsage = `usage: sluice rules <command> [args]

commands:
  check PATH...        validate rulesets (a directory of *.hcl, or one file);
                       prints file:line:col: severity: message, exit 1 on errors
  test PATH            run every test block; PATH is a ruleset, or a tree in
                       which every directory with *.hcl files that has test
                       blocks is a ruleset; prints N passed, N failed
  explain PATH --target NAME [--identity k=v]... [--identity-level L]
               [--process k=v]... [--address IP:PORT]
               (--query SQL | --kind KIND [--table T]...) [--rows N] [--bytes N]
                       show which rule decides and why
  sign DIR --key FILE  sign DIR's *.hcl files into DIR/ruleset.sig
  verify DIR --pub FILE
                       check DIR/ruleset.sig
  keygen --out PREFIX  write an ed25519 key pair to PREFIX.key and PREFIX.pub
`

// runRules runs "sluice rules ..." and returns the exit code: 0 on
// success, 1 when rules, tests or signatures fail, 2 on usage errors.
func runRules(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	switch args[0] {
	case "check":
		return rulesCheck(args[1:], stdout, stderr)
	case "test":
		return rulesTest(args[1:], stdout, stderr)
	case "explain":
		return rulesExplain(args[1:], stdout, stderr)
	case "sign":
		return rulesSign(args[1:], stdout, stderr)
	case "verify":
		return rulesVerify(args[1:], stdout, stderr)
	case "keygen":
		return rulesKeygen(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, rulesUsage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice rules: unknown command %q\n\n%s", args[0], rulesUsage)
	return 2
}

// classifyStatement is the Classifier the CLI gives rule tests and explain.
func classifyStatement(protocol, text string) (ruleset.Statement, error) {
	switch protocol {
	case ruleset.ProtoPostgres:
		return postgres.Classify(text)
	}
	return ruleset.Statement{}, fmt.Errorf("no statement classifier for %s yet; give the test a statement = { kind = ... } instead of a query", protocol)
}

// writeDiags prints each diagnostic as "file:line:col: severity: summary:
// detail" followed by the source line and a marker under the range.
func writeDiags(w io.Writer, fallback string, diags hcl.Diagnostics, files map[string]*hcl.File) {
	for _, d := range diags {
		fmt.Fprintln(w, ruleset.DiagnosticLine(d, fallback))
		if s := d.Subject; s != nil {
			if f := files[s.Filename]; f != nil {
				writeSnippet(w, f.Bytes, s)
			}
		}
	}
}

func writeSnippet(w io.Writer, src []byte, r *hcl.Range) {
	lines := bytes.Split(src, []byte("\n"))
	if r.Start.Line < 1 || r.Start.Line > len(lines) {
		return
	}
	line := strings.TrimRight(string(lines[r.Start.Line-1]), "\r")
	fmt.Fprintf(w, "%5d | %s\n", r.Start.Line, line)
	runes := []rune(line)
	start := min(max(r.Start.Column-1, 0), len(runes))
	width := 1
	if r.End.Line == r.Start.Line && r.End.Column > r.Start.Column {
		width = r.End.Column - r.Start.Column
	}
	width = max(min(width, len(runes)-start), 1)
	pad := make([]rune, start)
	for i := range pad {
		pad[i] = ' '
		if runes[i] == '\t' {
			pad[i] = '\t'
		}
	}
	fmt.Fprintf(w, "      | %s^%s\n", string(pad), strings.Repeat("~", width-1))
}

func rulesCheck(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: sluice rules check PATH...")
		return 2
	}
	code := 0
	for _, path := range args {
		rs, files, diags := ruleset.Load(path)
		writeDiags(stdout, path, diags, files)
		if diags.HasErrors() {
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: ok: %d targets, %d policies, %d tests, mode %s\n",
			path, len(rs.Targets()), len(rs.Policies()), rs.Tests(), rs.Mode())
	}
	return code
}

func rulesTest(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: sluice rules test PATH")
		return 2
	}
	paths, err := rulesetPaths(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules test: %v\n", err)
		return 1
	}
	passed, failed := 0, 0
	for _, path := range paths {
		rs, files, diags := ruleset.Load(path)
		writeDiags(stdout, path, diags, files)
		if diags.HasErrors() {
			fmt.Fprintf(stdout, "%s: ruleset does not load; its tests count as one failure\n", path)
			failed++
			continue
		}
		for _, r := range rs.RunTests(classifyStatement) {
			if r.Passed {
				passed++
				continue
			}
			failed++
			fmt.Fprintf(stdout, "%s:%d: FAIL %q: %s\n", r.Range.Filename, r.Range.Start.Line, r.Name, r.Message)
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

// rulesetPaths returns path itself when it is a file or a directory with
// *.hcl files; otherwise every directory under it whose *.hcl files
// contain at least one test block, so a tree of example rulesets can hold
// deliberately broken files without test blocks next to them.
func rulesetPaths(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	if names, _ := filepath.Glob(filepath.Join(path, "*.hcl")); len(names) > 0 {
		return []string{path}, nil
	}
	var out []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		names, _ := filepath.Glob(filepath.Join(p, "*.hcl"))
		for _, n := range names {
			if hasTestBlock(n) {
				out = append(out, p)
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no rulesets with test blocks under %s", path)
	}
	return out, nil
}

func hasTestBlock(file string) bool {
	f, diags := hclparse.NewParser().ParseHCLFile(file)
	if diags.HasErrors() || f == nil {
		return false
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return false
	}
	for _, b := range body.Blocks {
		if b.Type == "test" {
			return true
		}
	}
	return false
}

// kvFlag collects repeated k=v flags.
type kvFlag map[string]string

func (f kvFlag) String() string { return fmt.Sprint(map[string]string(f)) }

func (f kvFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	f[k] = v
	return nil
}

type listFlag []string

func (f *listFlag) String() string     { return strings.Join(*f, ",") }
func (f *listFlag) Set(s string) error { *f = append(*f, s); return nil }

// splitPathArg lets a command take its PATH before or after its flags.
func splitPathArg(fs *flag.FlagSet, args []string) (string, error) {
	var path string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		path, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if path == "" && fs.NArg() > 0 {
		path = fs.Arg(0)
	}
	if path == "" || (fs.NArg() > 0 && fs.Arg(0) != path) || fs.NArg() > 1 {
		return "", errors.New("want exactly one PATH")
	}
	return path, nil
}

func rulesExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	identity, process := kvFlag{}, kvFlag{}
	var tables listFlag
	fs.Var(identity, "identity", "identity claim `key=value` (repeatable)")
	fs.Var(process, "process", "process fact `key=value`: pid, uid, gid, exe, comm, cgroup, unit (repeatable)")
	fs.Var(&tables, "table", "table for --kind (repeatable)")
	level := fs.String("identity-level", "", "identity level: oidc, unverified or none (default oidc with --identity, else none)")
	target := fs.String("target", "", "target name")
	address := fs.String("address", "", "original destination IP:PORT")
	query := fs.String("query", "", "statement text, classified by the target's protocol")
	kind := fs.String("kind", "", "statement kind, instead of --query")
	rows := fs.Int64("rows", -1, "result rows, for rules that use result.*")
	nbytes := fs.Int64("bytes", -1, "result bytes, for rules that use result.*")
	path, err := splitPathArg(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules explain: %v\n", err)
		return 2
	}
	rs, files, diags := ruleset.Load(path)
	writeDiags(stderr, path, diags, files)
	if diags.HasErrors() {
		return 1
	}
	t := rs.Target(*target)
	if t == nil {
		fmt.Fprintf(stderr, "sluice rules explain: no target %q; the targets are %s\n", *target, strings.Join(targetNames(rs), ", "))
		return 2
	}
	in := ruleset.Input{}
	in.Target = ruleset.Endpoint{Name: t.Name, Protocol: t.Protocol}
	if *address != "" {
		if in.Target.Addr, err = netip.ParseAddrPort(*address); err != nil {
			fmt.Fprintf(stderr, "sluice rules explain: --address: %v\n", err)
			return 2
		}
	}
	in.Identity.Claims = identity
	in.Identity.Level = *level
	if in.Identity.Level == "" && len(identity) > 0 {
		in.Identity.Level = ruleset.LevelOIDC
	}
	if err := setProcess(&in.Process, process); err != nil {
		fmt.Fprintf(stderr, "sluice rules explain: --process: %v\n", err)
		return 2
	}
	switch {
	case *query != "" && *kind != "":
		fmt.Fprintln(stderr, "sluice rules explain: give --query or --kind, not both")
		return 2
	case *query != "":
		st, err := classifyStatement(t.Protocol, *query)
		if err != nil {
			fmt.Fprintf(stderr, "sluice rules explain: %v\n", err)
			return 1
		}
		in.Statement = st
	case *kind != "":
		in.Statement = ruleset.Statement{Kind: *kind, Tables: tables}
	default:
		in.Statement.Kind = ruleset.KindConnect
	}
	if *rows >= 0 || *nbytes >= 0 {
		in.Result = ruleset.Result{Known: true, Rows: max(*rows, 0), Bytes: max(*nbytes, 0)}
	}

	ex := rs.Explain(&in)
	d := ex.Decision
	st := in.Statement
	fmt.Fprintf(stdout, "statement: kind=%s tables=[%s] functions=[%s] has_where=%t has_limit=%t\n",
		st.Kind, strings.Join(st.Tables, " "), strings.Join(st.Functions, " "), st.HasWhere, st.HasLimit)
	fmt.Fprintf(stdout, "decision: %s by %s\n", d.Action, d.Rule)
	fmt.Fprintf(stdout, "reason: %s\n", d.Reason)
	if d.Hold != nil {
		fmt.Fprintf(stdout, "hold: approvers=[%s] min_approvals=%d timeout=%s\n", strings.Join(d.Hold.Approvers, " "), d.Hold.MinApprovals, d.Hold.Timeout)
	}
	for _, m := range d.Masks {
		fmt.Fprintf(stdout, "mask: %s columns=[%s] detect=[%s] using=%s\n", m.ID, strings.Join(m.Mask.Columns, " "), strings.Join(m.Mask.Detect, " "), m.Mask.Using)
	}
	fmt.Fprintf(stdout, "record: %s\n", d.Record)
	switch {
	case ex.Grant != nil:
		c := ex.Grant.Credential
		fmt.Fprintf(stdout, "credential: %s (user %s, secret from %s) granted by %s\n", c.Name, c.User, c.Source, ex.Grant.Rule)
	case ex.GrantErr != nil:
		fmt.Fprintf(stdout, "credential: none, the connection is refused: %v\n", ex.GrantErr)
	}
	if d.Monitor {
		fmt.Fprintf(stdout, "mode: monitor (the verdict is logged and recorded, nothing is enforced)\n")
	}
	fmt.Fprintf(stdout, "flow: %s\n", flowMode(t, in.Statement.Kind, rs.Mode()))
	if d.AwaitResult {
		fmt.Fprintf(stdout, "note: a rule that uses result.* may still fire once the result is known (try --rows)\n")
	}
	fmt.Fprintln(stdout, "steps:")
	for _, s := range ex.Steps {
		mark := "-"
		if s.Fired {
			mark = "+"
		}
		fmt.Fprintf(stdout, "  %s %s (%s:%d): %s\n", mark, s.ID, s.Range.Filename, s.Range.Start.Line, s.Outcome)
	}
	return 0
}

// flowMode says what this build does with t's flows, and what that means
// for a decision about a statement of the given kind.
func flowMode(t *ruleset.Target, kind string, mode ruleset.Mode) string {
	m := decoder.ModeOf(t)
	where := "by default"
	if r := t.UndecodedRange; r != nil {
		where = fmt.Sprintf("at %s:%d", r.Filename, r.Start.Line)
	}
	var s string
	switch m {
	case decoder.Decoded:
		return m.String() + " (this build decodes " + t.Protocol + ")"
	case decoder.Opaque:
		s = m.String() + " (tcp targets are never decoded; flows are recorded as metadata)"
	case decoder.RelayedUndecoded:
		s = fmt.Sprintf("%s: this build has no %s decoder and undecoded = %q (%s); the flow is relayed uninspected and recorded as metadata",
			m, t.Protocol, t.Undecoded, where)
	case decoder.RefusedUndecoded:
		s = fmt.Sprintf("%s: this build has no %s decoder and undecoded = %q (%s); every connection is refused by rule %s",
			m, t.Protocol, t.Undecoded, where, decoder.UndecodedRule(t))
		if mode == ruleset.Monitor {
			s += " (monitor mode: logged, then relayed uninspected)"
		}
	}
	if kind != ruleset.KindConnect {
		s += "; this statement would never be seen, so the decision above does not apply to it"
	}
	return s
}

func targetNames(rs *ruleset.Ruleset) []string {
	var names []string
	for _, t := range rs.Targets() {
		names = append(names, t.Name)
	}
	return names
}

func setProcess(p *ruleset.Process, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := kv[k]
		num := func(dst *int64) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("%s must be a number: %w", k, err)
			}
			*dst = n
			return nil
		}
		var err error
		switch k {
		case "pid":
			err = num(&p.PID)
		case "uid":
			err = num(&p.UID)
		case "gid":
			err = num(&p.GID)
		case "exe":
			p.Exe = v
		case "comm":
			p.Comm = v
		case "cgroup":
			p.Cgroup = v
		case "unit":
			p.Unit = v
		default:
			err = fmt.Errorf("unknown process fact %q", k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func rulesSign(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "private key file (from sluice rules keygen)")
	dir, err := splitPathArg(fs, args)
	if err != nil || *keyFile == "" {
		fmt.Fprintln(stderr, "usage: sluice rules sign DIR --key FILE")
		return 2
	}
	data, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules sign: %v\n", err)
		return 1
	}
	priv, err := ruleset.ParsePrivateKey(data)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules sign: %s: %v\n", *keyFile, err)
		return 1
	}
	// Never sign what would not load.
	_, files, diags := ruleset.Load(dir)
	writeDiags(stderr, dir, diags, files)
	if diags.HasErrors() {
		fmt.Fprintln(stderr, "sluice rules sign: not signing a ruleset with errors")
		return 1
	}
	if _, err := ruleset.SignDir(dir, priv); err != nil {
		fmt.Fprintf(stderr, "sluice rules sign: %v\n", err)
		return 1
	}
	b, err := ruleset.ReadBundle(dir)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules sign: %v\n", err)
		return 1
	}
	d := ruleset.Digest(b.Files)
	fmt.Fprintf(stdout, "signed %d files (digest %x) into %s\n", len(b.Files), d, filepath.Join(dir, ruleset.SignatureFile))
	return 0
}

func rulesVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pubFile := fs.String("pub", "", "public key file")
	dir, err := splitPathArg(fs, args)
	if err != nil || *pubFile == "" {
		fmt.Fprintln(stderr, "usage: sluice rules verify DIR --pub FILE")
		return 2
	}
	data, err := os.ReadFile(*pubFile)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules verify: %v\n", err)
		return 1
	}
	pub, err := ruleset.ParsePublicKey(data)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules verify: %s: %v\n", *pubFile, err)
		return 1
	}
	if err := ruleset.VerifyDir(dir, pub); err != nil {
		fmt.Fprintf(stderr, "sluice rules verify: %s: %v\n", dir, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: signature ok\n", dir)
	return 0
}

func rulesKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write PREFIX.key (private, mode 0600) and PREFIX.pub")
	if err := fs.Parse(args); err != nil || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: sluice rules keygen --out PREFIX")
		return 2
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fmt.Fprintf(stderr, "sluice rules keygen: %v\n", err)
		return 1
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{*out + ".key", ruleset.MarshalPrivateKey(priv), 0o600},
		{*out + ".pub", ruleset.MarshalPublicKey(pub), 0o644},
	} {
		fh, err := os.OpenFile(f.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			fmt.Fprintf(stderr, "sluice rules keygen: %v\n", err)
			return 1
		}
		_, err = fh.Write(f.data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintf(stderr, "sluice rules keygen: %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "wrote %s.key and %s.pub\n", *out, *out)
	return 0
}
