package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

// newRulesCmd is `sluice rules`: validate, test, explain, sign, verify
// and push rulesets. Exit 1 when rules, tests or signatures fail.
func newRulesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Check, test, explain, sign and push rulesets",
		Long: `Work with rulesets: a directory of *.hcl files (or one file) holding targets,
policies and test blocks. Exit status 1 when a ruleset has errors, a test
fails or a signature does not verify.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newRulesCheckCmd(), newRulesTestCmd(), newRulesExplainCmd(), newRulesSignCmd(),
		newRulesVerifyCmd(), newRulesKeygenCmd(), newRulesPushCmd(), newRulesPublishCmd())
	return cmd
}

func newRulesCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check PATH...",
		Short: "Validate rulesets; errors as file:line:col with the source line",
		Long: `Validate each ruleset PATH (a directory of *.hcl files, or one file). Errors
and warnings are printed as file:line:col: severity: message, each followed
by the source line and a marker under the range. Exit 1 when any ruleset has
errors.`,
		Example: "  sluice rules check /etc/sluice/rules.d",
		Args:    argsAtLeastOne("PATH"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
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
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		}),
	}
}

func newRulesTestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "test PATH",
		Short: "Run every test block; print N passed, N failed",
		Long: `Run every test block of the ruleset PATH. PATH is a ruleset (a directory of
*.hcl files, or one file), or a tree in which every directory whose *.hcl
files hold test blocks is a ruleset. Prints each failure and N passed,
N failed; exit 1 when any test fails or a ruleset does not load.`,
		Args: argsNamed("PATH"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			stdout := cmd.OutOrStdout()
			paths, err := rulesetPaths(args[0])
			if err != nil {
				return err
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
				return exitStatus(1)
			}
			return nil
		}),
	}
}

// classifyStatement is the Classifier the CLI gives rule tests and explain.
func classifyStatement(protocol, text string) (ruleset.Statement, error) {
	if p, _ := decoder.Lookup(protocol); p.Classify != nil {
		return p.Classify(text)
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

// rulesetPaths returns path itself when it is a file or a directory with
// *.hcl files; otherwise every directory under it whose *.hcl files
// contain at least one test block, so a tree of example rulesets can hold
// deliberately broken files without test blocks next to them.
func rulesetPaths(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, errors.New(fileError(path, err))
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

// identityLevels are the values --identity-level accepts.
var identityLevels = []string{ruleset.LevelOIDC, ruleset.LevelUnverified, ruleset.LevelNone}

// explainFlags are the flags of `sluice rules explain`.
type explainFlags struct {
	identity, process   kvFlag
	tables              []string
	level, target, addr string
	query, kind         string
	rows, bytes         int64
	rowsSet, bytesSet   bool
}

func newRulesExplainCmd() *cobra.Command {
	f := &explainFlags{identity: kvFlag{}, process: kvFlag{}}
	cmd := &cobra.Command{
		Use:   "explain PATH --target NAME [flags]",
		Short: "Show which rule decides a flow or statement, and why",
		Long: `Evaluate the ruleset PATH for one flow to the target NAME, as the daemon
would, and show the decision (allow, mask, hold, deny), the rule that made
it, the credential a flow would get, what this build does with the target's
flows, and every rule step that was considered.

Without --query or --kind the decision is about the connection itself.
--identity claims make the identity level oidc unless --identity-level
says otherwise.`,
		Example: `  sluice rules explain /etc/sluice/rules.d --target prod-db \
      --identity repository=acme/api --identity ref=refs/heads/main --query 'DROP TABLE users'
  sluice rules explain rules/ --target prod-db --identity-level unverified --process uid=1001`,
		Args: argsNamed("PATH"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			f.rowsSet, f.bytesSet = cmd.Flags().Changed("rows"), cmd.Flags().Changed("bytes")
			return rulesExplain(cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], f)
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.target, "target", "", "evaluate a flow to the ruleset target `NAME` (required)")
	fl.Var(f.identity, "identity", "identity claim, as `key=value` (repeatable), e.g. repository=acme/api")
	fl.StringVar(&f.level, "identity-level", "", "identity `LEVEL`: oidc, unverified or none (default oidc with --identity, else none)")
	fl.Var(f.process, "process", "process fact, as `key=value` (repeatable): pid, uid, gid, exe, comm, cgroup or unit")
	fl.StringVar(&f.addr, "address", "", "the flow's original destination `IP:PORT`")
	fl.StringVar(&f.query, "query", "", "evaluate the statement `SQL`, classified by the target's protocol")
	fl.StringVar(&f.kind, "kind", "", "evaluate a statement of `KIND` (select, drop, copy_out, ...) instead of --query")
	fl.StringArrayVar(&f.tables, "table", nil, "the --kind statement touches `TABLE` (repeatable)")
	fl.Int64Var(&f.rows, "rows", 0, "the result has `N` rows, for rules that use result.*")
	fl.Int64Var(&f.bytes, "bytes", 0, "the result has `N` bytes, for rules that use result.*")
	return cmd
}

func rulesExplain(stdout, stderr io.Writer, path string, f *explainFlags) error {
	if f.level != "" && !slices.Contains(identityLevels, f.level) {
		return usageErrorf("--identity-level %q: want one of %s", f.level, strings.Join(identityLevels, ", "))
	}
	if f.query != "" && f.kind != "" {
		return usageErrorf("give --query or --kind, not both")
	}
	if (f.rowsSet && f.rows < 0) || (f.bytesSet && f.bytes < 0) {
		return usageErrorf("--rows and --bytes: want 0 or more")
	}
	var addr netip.AddrPort
	if f.addr != "" {
		var err error
		if addr, err = netip.ParseAddrPort(f.addr); err != nil {
			return usageErrorf("--address %q: want IP:PORT, such as 10.0.0.5:5432 or [2001:db8::5]:5432", f.addr)
		}
	}
	var proc ruleset.Process
	if err := setProcess(&proc, f.process); err != nil {
		return usageErrorf("--process %v", err)
	}
	rs, files, diags := ruleset.Load(path)
	writeDiags(stderr, path, diags, files)
	if diags.HasErrors() {
		return exitStatus(1)
	}
	if f.target == "" {
		return usageErrorf("--target is required: name the target the flow goes to; the targets in %s are %s", path, strings.Join(targetNames(rs), ", "))
	}
	t := rs.Target(f.target)
	if t == nil {
		return usageErrorf("--target %q: no such target; the targets in %s are %s", f.target, path, strings.Join(targetNames(rs), ", "))
	}
	in := ruleset.Input{}
	in.Target = ruleset.Endpoint{Name: t.Name, Protocol: t.Protocol, Addr: addr}
	in.Identity.Claims = f.identity
	in.Identity.Level = f.level
	if in.Identity.Level == "" && len(f.identity) > 0 {
		in.Identity.Level = ruleset.LevelOIDC
	}
	in.Process = proc
	switch {
	case f.query != "":
		st, err := classifyStatement(t.Protocol, f.query)
		if err != nil {
			return err
		}
		in.Statement = st
	case f.kind != "" && t.Protocol == ruleset.ProtoSSH:
		// An ssh request of that kind (direct_tcpip, shell, ...).
		in.Statement = ruleset.Statement{Kind: f.kind, SSH: &ruleset.SSHRequest{Kind: f.kind}}
	case f.kind != "" && t.Protocol == ruleset.ProtoK8s:
		// A Kubernetes request with that verb; --query "GET /api/v1/..."
		// says the rest.
		in.Statement = ruleset.Statement{Kind: f.kind, K8s: &ruleset.K8sRequest{Verb: f.kind}}
	case f.kind != "":
		in.Statement = ruleset.Statement{Kind: f.kind, Tables: f.tables}
	default:
		in.Statement.Kind = ruleset.KindConnect
	}
	if f.rowsSet || f.bytesSet {
		in.Result = ruleset.Result{Known: true, Rows: f.rows, Bytes: f.bytes}
	}

	ex := rs.Explain(&in)
	d := ex.Decision
	st := in.Statement
	if r := st.SSH; r != nil {
		fmt.Fprintf(stdout, "request: ssh kind=%s command=%q argv=[%s] programs=[%s]\n",
			r.Kind, r.Command, strings.Join(r.Argv, " "), strings.Join(r.Programs, " "))
	} else if k := st.K8s; k != nil {
		fmt.Fprintf(stdout, "request: k8s verb=%s resource_request=%t group=%q version=%q resource=%q subresource=%q namespace=%q name=%q path=%q\n",
			k.Verb, k.IsResource, k.Group, k.Version, k.Resource, k.Subresource, k.Namespace, k.Name, k.Path)
	} else {
		fmt.Fprintf(stdout, "statement: kind=%s tables=[%s] functions=[%s] flags=[%s] has_where=%t has_limit=%t\n",
			st.Kind, strings.Join(st.Tables, " "), strings.Join(st.Functions, " "), strings.Join(st.Flags, " "), st.HasWhere, st.HasLimit)
	}
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
	return nil
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
		p, _ := decoder.Lookup(t.Protocol)
		if p.DecodedWhen == "" {
			return m.String() + " (this build decodes " + t.Protocol + ")"
		}
		s = fmt.Sprintf("%s %s; other flows (%s) are ", m, p.DecodedWhen, p.NotDecoded)
		if t.Undecoded == ruleset.UndecodedRelay {
			s += fmt.Sprintf("relayed uninspected and recorded as metadata, as undecoded = %q (%s)", t.Undecoded, where)
		} else {
			s += fmt.Sprintf("refused by rule %s, as undecoded = %q (%s)", decoder.UndecodedRule(t), t.Undecoded, where)
		}
		return s
	case decoder.Opaque:
		s = m.String() + " (tcp targets are never decoded; flows are recorded as metadata)"
	case decoder.RelayedUndecoded:
		s = fmt.Sprintf("%s: %s and undecoded = %q (%s); the flow is relayed uninspected and recorded as metadata",
			m, decoder.WhyUndecoded(t), t.Undecoded, where)
	case decoder.RefusedUndecoded:
		s = fmt.Sprintf("%s: %s and undecoded = %q (%s); every connection is refused by rule %s",
			m, decoder.WhyUndecoded(t), t.Undecoded, where, decoder.UndecodedRule(t))
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

// setProcess sets p from --process key=value facts. Its errors name the
// fact and what it accepts.
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
			if err != nil || n < 0 {
				return fmt.Errorf("%s=%q: %s must be a whole number, 0 or more", k, v, k)
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
			err = fmt.Errorf("%s=%q: unknown process fact %q; the facts are pid, uid, gid, exe, comm, cgroup and unit", k, v, k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func newRulesSignCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "sign DIR --key FILE",
		Short: "Sign DIR's *.hcl files into DIR/ruleset.sig",
		Long: `Sign the ruleset DIR with the ed25519 private key FILE (from sluice rules
keygen), writing DIR/ruleset.sig. A daemon configured with rules_public_key
only loads rulesets whose signature verifies. A ruleset with errors is
never signed.`,
		Args: argsNamed("DIR"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageErrorf("--key is required: the private key FILE from sluice rules keygen")
			}
			return rulesSign(cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], keyFile)
		}),
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "private key `FILE` from sluice rules keygen (required)")
	return cmd
}

func rulesSign(stdout, stderr io.Writer, dir, keyFile string) error {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read --key: %s", fileError(keyFile, err))
	}
	priv, err := ruleset.ParsePrivateKey(data)
	if err != nil {
		return fmt.Errorf("%s: %v", keyFile, err)
	}
	// Never sign what would not load.
	_, files, diags := ruleset.Load(dir)
	writeDiags(stderr, dir, diags, files)
	if diags.HasErrors() {
		return errors.New("not signing a ruleset with errors")
	}
	if _, err := ruleset.SignDir(dir, priv); err != nil {
		return err
	}
	b, err := ruleset.ReadBundle(dir)
	if err != nil {
		return err
	}
	d := ruleset.Digest(b.Files)
	fmt.Fprintf(stdout, "signed %d files (digest %x) into %s\n", len(b.Files), d, filepath.Join(dir, ruleset.SignatureFile))
	return nil
}

func newRulesVerifyCmd() *cobra.Command {
	var pubFile string
	cmd := &cobra.Command{
		Use:   "verify DIR --pub FILE",
		Short: "Check DIR/ruleset.sig against a public key",
		Long:  `Check that DIR/ruleset.sig is a valid signature of DIR's *.hcl files by the key whose public half is FILE. Exit 1 when it is not.`,
		Args:  argsNamed("DIR"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if pubFile == "" {
				return usageErrorf("--pub is required: the public key FILE (PREFIX.pub from sluice rules keygen)")
			}
			dir := args[0]
			data, err := os.ReadFile(pubFile)
			if err != nil {
				return fmt.Errorf("read --pub: %s", fileError(pubFile, err))
			}
			pub, err := ruleset.ParsePublicKey(data)
			if err != nil {
				return fmt.Errorf("%s: %v", pubFile, err)
			}
			if err := ruleset.VerifyDir(dir, pub); err != nil {
				return fmt.Errorf("%s: %v", dir, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: signature ok\n", dir)
			return nil
		}),
	}
	cmd.Flags().StringVar(&pubFile, "pub", "", "public key `FILE` (PREFIX.pub from sluice rules keygen) (required)")
	return cmd
}

func newRulesKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Write an ed25519 key pair to PREFIX.key and PREFIX.pub",
		Long: `Write a new ed25519 key pair for signing rulesets: PREFIX.key (private, mode
0600: keep it with whoever signs) and PREFIX.pub (give it to the daemons as
rules_public_key). Existing files are never overwritten.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf("--out is required: the PREFIX of the key files to write")
			}
			return rulesKeygen(cmd.OutOrStdout(), out)
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "write `PREFIX`.key (private, mode 0600) and PREFIX.pub (required)")
	return cmd
}

func rulesKeygen(stdout io.Writer, out string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{out + ".key", ruleset.MarshalPrivateKey(priv), 0o600},
		{out + ".pub", ruleset.MarshalPublicKey(pub), 0o644},
	} {
		fh, err := os.OpenFile(f.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists already: choose another --out PREFIX, or move the old key pair away first", f.name)
		}
		if err != nil {
			return fmt.Errorf("write %s", fileError(f.name, err))
		}
		_, err = fh.Write(f.data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	fmt.Fprintf(stdout, "wrote %s.key and %s.pub\n", out, out)
	return nil
}
