package daemon

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/ruleset"
)

// rules owns the daemon's ruleset: the initial load, reloads from the rules
// directory (file changes and SIGHUP) and pushes over the API. Reloads are
// serialised; each one either swaps in a ruleset whose targets are already
// in the kernel map, or leaves everything as it was and records why.
type rules struct {
	cfg   *Config
	log   hclog.Logger
	store *ruleset.Store
	ic    *interceptor.Interceptor

	mu         sync.Mutex
	lastDigest [32]byte // of the bundle last applied, to skip no-op reloads

	// pull, when rules_source is set, keeps the ruleset at the source's
	// newest signed bundle; rules_dir, reloads and pushes are then unused.
	pull *puller
}

// dir is where the ruleset lives: rules_dir, or the directory a push
// saved under the data dir, or "" for the embedded default.
func (r *rules) dir() string {
	if r.cfg.RulesSource != nil {
		return ""
	}
	if r.cfg.RulesDir != "" {
		return r.cfg.RulesDir
	}
	pushed := filepath.Join(r.cfg.DataDir, "rules")
	if _, err := os.Stat(pushed); err == nil {
		return pushed
	}
	return ""
}

// initial loads the ruleset the daemon starts with. An invalid or unsigned
// ruleset is fatal at start: there is nothing older to keep enforcing, and
// silently falling back to the default would enforce rules nobody chose.
// Every error it returns is a configuration error (startError, exit 2)
// that says how to fix it. It reads files only: no privilege is needed.
func (r *rules) initial() (*ruleset.Ruleset, string, error) {
	if r.cfg.RulesSource != nil {
		p, err := newPuller(r)
		if err != nil {
			return nil, "", configError(err, "correct rules_source and the rules_pull block in "+r.cfg.Path, "invalid rules_source")
		}
		r.pull = p
		rs, source := p.initial()
		return rs, source, nil
	}
	dir := r.dir()
	cfgPath := r.cfg.Path
	if dir == "" {
		if r.cfg.RulesKey != nil {
			return nil, "", configError(nil, fmt.Sprintf("set rules_dir to a signed ruleset, or remove rules_public_key from %s", cfgPath),
				"rules_public_key is set but there is no rules_dir, and the embedded default ruleset is unsigned")
		}
		return ruleset.Default(), "embedded default", nil
	}
	// What the directory is: rules_dir, or where a push saved a ruleset.
	what := "rules_dir " + dir
	useDefault := fmt.Sprintf("remove rules_dir from %s to use the embedded default ruleset", cfgPath)
	if r.cfg.RulesDir == "" {
		what = "the pushed ruleset in " + dir
		useDefault = fmt.Sprintf("push a valid one (sluice rules push), or remove %s to use the embedded default ruleset", dir)
	}
	n, err := countHCL(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, "", configError(nil, "create it and put a ruleset there, or "+useDefault, "%s does not exist", what)
	case errors.Is(err, os.ErrPermission):
		return nil, "", configError(err, "run sluiced as root, or make the directory and its files readable", "cannot read %s", what)
	case err != nil:
		return nil, "", configError(err, "make it a directory of *.hcl files, or "+useDefault, "cannot read %s", what)
	case n == 0:
		return nil, "", configError(nil, "put a ruleset there, or "+useDefault, "%s holds no *.hcl file", what)
	}
	b, err := ruleset.ReadBundle(dir)
	if err != nil {
		return nil, "", configError(err, "make its *.hcl files and ruleset.sig readable, or "+useDefault, "cannot read %s", what)
	}
	rs, diags, err := r.compile(b, dir)
	sign := fmt.Sprintf("sign it with the private key of %s (sluice rules sign %s --key KEY), or remove rules_public_key from %s", r.cfg.RulesKeyPath, dir, cfgPath)
	switch {
	case errors.Is(err, ruleset.ErrNoSignature):
		return nil, "", configError(nil, sign, "ruleset %s is not signed, and rules_public_key is set", dir)
	case errors.Is(err, ruleset.ErrBadSignature):
		return nil, "", configError(nil, "re-"+sign, "ruleset %s: its signature (%s) does not verify with rules_public_key %s", dir, ruleset.SignatureFile, r.cfg.RulesKeyPath)
	case err != nil:
		return nil, "", configError(err, sign, "ruleset %s: signature", dir)
	}
	if diags.HasErrors() {
		nerr := 0
		for _, d := range diags {
			if d.Severity == hcl.DiagError {
				nerr++
			}
		}
		se := configError(nil, fmt.Sprintf("correct the rule files (check them with: sluice rules check %s); sluiced starts only with a valid ruleset", dir),
			"ruleset %s is invalid (%d error%s below)", dir, nerr, plural(nerr))
		se.Diags, se.Files = diags, hclFiles(b, dir)
		return nil, "", se
	}
	r.lastDigest = ruleset.Digest(b.Files)
	return rs, dir, nil
}

// countHCL counts the rule files in dir as ruleset.ReadBundle picks them:
// regular *.hcl files whose names do not start with a dot.
func countHCL(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".hcl") && !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n, nil
}

// hclFiles parses b's files again, under the names compile gives them, for
// the source snippets of their diagnostics.
func hclFiles(b *ruleset.Bundle, dir string) map[string]*hcl.File {
	p := hclparse.NewParser()
	for n, c := range b.Files {
		p.ParseHCL(c, filepath.Join(dir, n))
	}
	return p.Files()
}

// compile verifies the bundle's signature when a key is configured, then
// parses it with file names under dir.
func (r *rules) compile(b *ruleset.Bundle, dir string) (*ruleset.Ruleset, hcl.Diagnostics, error) {
	if r.cfg.RulesKey != nil {
		if err := b.Verify(r.cfg.RulesKey); err != nil {
			return nil, nil, fmt.Errorf("ruleset signature: %w", err)
		}
	}
	rs, diags := r.compileFiles(b.Files, dir)
	return rs, diags, nil
}

// compileFiles parses a ruleset's files (by base name) with file names
// under dir, without looking at signatures.
func (r *rules) compileFiles(b map[string][]byte, dir string) (*ruleset.Ruleset, hcl.Diagnostics) {
	files := make(map[string][]byte, len(b))
	for n, c := range b {
		files[filepath.Join(dir, n)] = c
	}
	return ruleset.Parse(files)
}

// applyVerified applies a pulled bundle's files, whose signature and
// version the puller checked, or records the rejection.
func (r *rules) applyVerified(files map[string][]byte, dir, source string) (bool, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reject := func(le *ruleset.LoadError) (bool, []string) {
		le.Source, le.At = source, time.Now()
		r.store.Reject(le)
		return false, loadErrorLines(le)
	}
	rs, diags := r.compileFiles(files, dir)
	if diags.HasErrors() {
		return reject(&ruleset.LoadError{Diagnostics: diags})
	}
	if err := r.apply(rs, source); err != nil {
		return reject(&ruleset.LoadError{Err: err})
	}
	r.lastDigest = ruleset.Digest(files)
	return true, nil
}

// apply makes rs active: targets into the kernel map first, then the swap.
func (r *rules) apply(rs *ruleset.Ruleset, source string) error {
	r.warnUndecoded(rs)
	if err := r.ic.SyncTargets(rs.Targets()); err != nil {
		return err
	}
	gen := r.store.Swap(rs, source)
	r.log.Info("ruleset active", "source", source, "generation", gen, "digest", rs.Digest(), "mode", rs.Mode().String())
	return nil
}

// warnUndecoded says, for each target whose protocol this build cannot
// decode, what its flows get: relayed uninspected (info), or refused
// (warn, since jobs that use it will fail).
func (r *rules) warnUndecoded(rs *ruleset.Ruleset) {
	for _, t := range rs.Targets() {
		switch decoder.ModeOf(t) {
		case decoder.RelayedUndecoded:
			r.log.Info("target's flows cannot be decoded: they are relayed without inspection",
				"target", t.Name, "protocol", t.Protocol, "why", decoder.WhyUndecoded(t), "undecoded", t.Undecoded)
		case decoder.RefusedUndecoded:
			r.log.Warn("target's flows cannot be decoded: they are refused",
				"target", t.Name, "protocol", t.Protocol, "why", decoder.WhyUndecoded(t), "undecoded", t.Undecoded, "rule", decoder.UndecodedRule(t))
		}
	}
}

// reload re-reads the rules directory. why is "change", "sighup" or "start".
func (r *rules) reload(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir := r.dir()
	if r.cfg.RulesSource != nil {
		r.log.Info("reload requested, but the ruleset is pulled from rules_source; nothing to reload", "trigger", why, "rules_source", r.cfg.RulesSource.URL)
		return
	}
	if dir == "" {
		r.log.Info("reload requested but no rules_dir is configured; the embedded default stays", "trigger", why)
		return
	}
	b, err := ruleset.ReadBundle(dir)
	if err == nil && ruleset.Digest(b.Files) == r.lastDigest && r.store.Status().LastError == nil {
		return // unchanged, for example our own push landing on disk
	}
	r.applyBundle(b, err, dir, why)
}

// applyBundle compiles and applies b, or records the rejection. The
// caller holds r.mu.
func (r *rules) applyBundle(b *ruleset.Bundle, readErr error, source, why string) (bool, []string) {
	reject := func(le *ruleset.LoadError) (bool, []string) {
		le.Source, le.At = source, time.Now()
		r.store.Reject(le)
		msgs := loadErrorLines(le)
		r.log.Error("ruleset rejected; the previous ruleset stays active", "source", source, "trigger", why, "errors", msgs)
		return false, msgs
	}
	if readErr != nil {
		return reject(&ruleset.LoadError{Err: readErr})
	}
	rs, diags, err := r.compile(b, source)
	if err != nil {
		return reject(&ruleset.LoadError{Err: err})
	}
	if diags.HasErrors() {
		return reject(&ruleset.LoadError{Diagnostics: diags})
	}
	if err := r.apply(rs, source); err != nil {
		return reject(&ruleset.LoadError{Err: err})
	}
	r.lastDigest = ruleset.Digest(b.Files)
	return true, nil
}

// push applies a bundle sent over the API and, once active, saves it into
// the rules directory so a restart keeps it.
func (r *rules) push(b *ruleset.Bundle) (bool, []string) {
	if r.cfg.RulesSource != nil {
		return false, []string{fmt.Sprintf("this daemon pulls its ruleset from rules_source %s: publish there with sluice rules publish DIR --to %s --key KEY", r.cfg.RulesSource.URL, r.cfg.RulesSource.URL)}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir := r.cfg.RulesDir
	if dir == "" {
		dir = filepath.Join(r.cfg.DataDir, "rules")
	}
	for n := range b.Files {
		if n != filepath.Base(n) || !strings.HasSuffix(n, ".hcl") || strings.HasPrefix(n, ".") {
			return false, []string{fmt.Sprintf("pushed file name %q: want a plain name ending in .hcl", n)}
		}
	}
	if len(b.Files) == 0 {
		return false, []string{"the pushed ruleset has no files"}
	}
	ok, msgs := r.applyBundle(b, nil, dir, "push")
	if !ok {
		return false, msgs
	}
	if err := saveBundle(dir, b); err != nil {
		r.log.Error("pushed ruleset is active but could not be saved; a restart would load the old files", "dir", dir, "error", err)
		return true, []string{"warning: active, but not saved to " + dir + ": " + err.Error()}
	}
	return true, nil
}

// saveBundle replaces dir's *.hcl files and signature with b's. Each file
// is written to a temporary name and renamed into place.
func saveBundle(dir string, b *ruleset.Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*.hcl"))
	for n, c := range b.Files {
		if err := writeAtomic(filepath.Join(dir, n), c); err != nil {
			return err
		}
	}
	for _, p := range old {
		if _, keep := b.Files[filepath.Base(p)]; !keep {
			os.Remove(p)
		}
	}
	sig := filepath.Join(dir, ruleset.SignatureFile)
	if b.Signature == nil {
		os.Remove(sig)
		return nil
	}
	return writeAtomic(sig, []byte(base64.StdEncoding.EncodeToString(b.Signature)+"\n"))
}

func writeAtomic(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// watch reloads when the rules directory changes. Events are coalesced
// for 100 ms so an editor's write-rename-chmod burst is one reload.
func (r *rules) watch(ctx context.Context) {
	dir := r.dir()
	if dir == "" {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.log.Error("cannot watch the rules directory; use SIGHUP or rules push to reload", "error", err)
		return
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		r.log.Error("cannot watch the rules directory; use SIGHUP or rules push to reload", "dir", dir, "error", err)
		return
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.Events:
			base := filepath.Base(ev.Name)
			if strings.HasSuffix(base, ".hcl") || base == ruleset.SignatureFile {
				timer = time.After(100 * time.Millisecond)
			}
		case err := <-w.Errors:
			r.log.Warn("rules directory watch error", "error", err)
		case <-timer:
			timer = nil
			r.reload("change")
		}
	}
}

// loadErrorLines renders a rejection as file:line:col: severity: message.
func loadErrorLines(le *ruleset.LoadError) []string {
	if le.Err != nil {
		return []string{le.Err.Error()}
	}
	return strings.Split(strings.TrimRight(formatDiags(le.Diagnostics), "\n"), "\n")
}

func formatDiags(diags hcl.Diagnostics) string {
	var lines []string
	for _, d := range diags {
		lines = append(lines, ruleset.DiagnosticLine(d, ""))
	}
	return strings.Join(lines, "\n") + "\n"
}
