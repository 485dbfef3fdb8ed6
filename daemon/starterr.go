package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"syscall"

	"github.com/hashicorp/hcl/v2"

	"github.com/sluicehq/sluice/interceptor"
)

// Exit codes of sluiced. The packaged unit's RestartPreventExitStatus=2
// relies on them: systemd restarts the daemon after any other failure.
//
//   - exitOK (0): stopped by SIGTERM or SIGINT; --version and --help.
//   - exitRuntime (1): a failure a restart may cure: the proxy or metrics
//     port still held (by a sluiced that is stopping), a file under
//     data_dir that cannot be created or read, the eBPF programs failing
//     to load or pin, any error the daemon cannot classify.
//   - exitConfig (2): a restart cannot cure it, a person must act first:
//     a flag or the config file (missing, unreadable, syntax, unknown
//     keys, invalid values), the ruleset at start (missing or empty
//     rules_dir, invalid rules, unsigned or badly signed with
//     rules_public_key set), an admin_group that does not exist, a
//     configured cgroup holding the daemon itself, and a machine that
//     cannot run sluiced at all (interceptor.ProbeError: capabilities
//     missing, no cgroup2, a kernel too old or lacking a BPF feature).
//     The kernel does not grow a feature between two restarts, and the
//     capabilities come from the unit, so restarting every second would
//     only fill the journal.
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitConfig  = 2
)

// startError is why the daemon could not start, for a person: what is
// wrong and how to fix it (both on the first line it prints), then detail
// lines and diagnostics. Config says whether it is a configuration error
// (exit 2) or one a restart may cure (exit 1).
type startError struct {
	What, Fix string
	Detail    []string
	// Diags, rendered with source snippets from Files, follow Detail.
	Diags  hcl.Diagnostics
	Files  map[string]*hcl.File
	Config bool
	Err    error
}

func (e *startError) Error() string {
	if e.Err != nil && !strings.Contains(e.What, e.Err.Error()) {
		return e.What + ": " + e.Err.Error()
	}
	return e.What
}

func (e *startError) Unwrap() error { return e.Err }

// configError returns a configuration error (exit 2).
func configError(err error, fix, what string, args ...any) *startError {
	return &startError{What: fmt.Sprintf(what, args...), Fix: fix, Config: true, Err: err}
}

// runtimeError returns a start failure a restart may cure (exit 1).
func RuntimeError(err error, fix, what string, args ...any) *startError {
	return &startError{What: fmt.Sprintf(what, args...), Fix: fix, Err: err}
}

// exitCode classifies an error that stopped the daemon.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	if se := (*startError)(nil); errors.As(err, &se) {
		if se.Config {
			return ExitConfig
		}
		return ExitRuntime
	}
	if pe := (*interceptor.ProbeError)(nil); errors.As(err, &pe) {
		return ExitConfig
	}
	return ExitRuntime
}

// writeStartError prints err for a person, as plain text whatever the
// log format: "sluiced: WHAT: FIX" on the first line, detail lines
// below. color is for the diagnostics' snippets (stderr a terminal).
func WriteStartError(w io.Writer, err error, color bool) {
	se := asStartError(err)
	first := se.What
	if se.Err != nil && !strings.Contains(first, se.Err.Error()) {
		first += ": " + se.Err.Error()
	}
	lines := strings.Split(strings.TrimRight(first, "\n"), "\n")
	// The fix belongs on the first line: an error of several lines keeps
	// its first as what is wrong and the rest as detail.
	fmt.Fprintf(w, "sluiced: %s: %s\n", lines[0], se.Fix)
	for _, l := range append(lines[1:], se.Detail...) {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if len(se.Diags) > 0 {
		fmt.Fprintln(w)
		hcl.NewDiagnosticTextWriter(w, se.Files, 100, color).WriteDiagnostics(se.Diags)
	}
}

// asStartError returns the startError in err's chain, or makes one for an
// error the daemon did not classify.
func asStartError(err error) *startError {
	if se := (*startError)(nil); errors.As(err, &se) {
		return se
	}
	if pe := (*interceptor.ProbeError)(nil); errors.As(err, &pe) {
		return probeError(pe)
	}
	return &startError{What: "start failed: " + err.Error(), Fix: `if a restart does not cure it, run "sluice doctor"`}
}

// probeError says what a machine that cannot run sluiced lacks, and what
// to do: privileges first, since without them the kernel's features
// cannot be probed at all.
func probeError(pe *interceptor.ProbeError) *startError {
	fix := fmt.Sprintf("run sluiced on Linux %d.%d or newer with cgroup2 and the BPF features named below", interceptor.KernelFloor[0], interceptor.KernelFloor[1])
	for _, m := range pe.Missing {
		if strings.HasPrefix(m, "not root") {
			fix = "run sluiced as root, or with the capabilities the packaged unit grants (CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN CAP_SYS_PTRACE)"
			break
		}
	}
	n := len(pe.Missing)
	what := fmt.Sprintf("this machine cannot run sluiced (%d problem%s below)", n, plural(n))
	// The detail lines are pe's items; pe.Error() would repeat them.
	return &startError{What: what, Fix: fix, Detail: pe.Missing, Config: true}
}

// configDiagError turns the config file's error diagnostics into a start
// error whose first line is the first error and its fix.
func ConfigDiagError(path string, diags hcl.Diagnostics, files map[string]*hcl.File) *startError {
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	se := &startError{Diags: diags, Files: files, Config: true}
	if len(errs) == 0 {
		se.What, se.Fix = "config "+path+" is invalid", "fix it and start sluiced again"
		return se
	}
	d := errs[0]
	where := "config " + path
	if s := d.Subject; s != nil {
		where = fmt.Sprintf("%s:%d", s.Filename, s.Start.Line)
	}
	se.What = where + ": " + strings.ToLower(d.Summary[:1]) + d.Summary[1:]
	fix := strings.TrimSuffix(strings.TrimSpace(d.Detail), ".")
	switch {
	case d.Summary == "Unsupported argument" || d.Summary == "Unsupported block type":
		// HCL's detail suggests the nearest key when there is one.
		if !strings.Contains(fix, "Did you mean") {
			fix += "; remove it or correct its name (the README's Configuration section lists every key)"
		}
	case fix == "":
		fix = "correct it in " + path
	}
	if n := len(errs) - 1; n > 0 {
		fix += fmt.Sprintf(" (and %d more error%s below)", n, plural(n))
	}
	se.Fix = fix
	return se
}

// configReadError says why the config file cannot be read.
func ConfigReadError(path string, err error) *startError {
	fix := "pass --config with the path of sluiced's config file"
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fix = `write it (run "sluice install", or copy the packaged /etc/sluice/sluiced.hcl), or pass --config with its path`
	case errors.Is(err, fs.ErrPermission):
		fix = "run sluiced as root, or make the file readable by the user sluiced runs as"
	case errors.Is(err, syscall.EISDIR):
		fix = "pass --config with the path of the config file, not of its directory"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return configError(err, fix, "cannot read config %s", path)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
