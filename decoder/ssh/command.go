package ssh

import (
	"path"
	"strings"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// What rules see of an exec request's command line (ssh.argv and
// ssh.programs). sshd hands the line to the user's login shell, so it is
// parsed as a shell parses it, with mvdan.cc/sh (Bash's grammar, a
// superset of POSIX sh's), not split on spaces: `pg_dump x|gzip` runs two
// programs, `'pg_dump' x` runs pg_dump.

// unknownProgram stands for a program whose name a rule cannot know
// before the shell runs: built by an expansion (`$p x`, `$(echo pg_dump)
// x`), or in a command line that does not parse.
const unknownProgram = "?"

// maxNesting bounds how deep `sh -c '...'` inside `sh -c` is followed.
const maxNesting = 4

// maxPrograms bounds the programs kept for one command line.
const maxPrograms = 64

// wrappers run their first non-option argument as a program: rules that
// name that program must see it behind them too.
var wrappers = map[string]bool{
	"env": true, "sudo": true, "doas": true, "nohup": true, "nice": true, "ionice": true, "exec": true,
	"command": true, "builtin": true, "time": true, "timeout": true, "xargs": true, "stdbuf": true,
	"setsid": true, "chrt": true, "taskset": true, "unbuffer": true, "flock": true, "runuser": true,
	"busybox": true, // busybox APPLET ...
}

// shells run the argument of -c as a command line.
// su -c runs its argument through the user's shell too.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "ash": true, "su": true}

// ParseCommand returns what rules see of an exec command line: its argv
// when the whole line is one simple command of literal words (no pipes,
// lists, redirections, assignments, substitutions, globs or expansions),
// and the base names of every program it runs, in order and without
// duplicates (unknownProgram for a name only the shell can know, and for a
// line that does not parse).
func ParseCommand(cmd string) (argv, programs []string) {
	f, err := parser().Parse(strings.NewReader(cmd), "")
	if err != nil {
		return nil, []string{unknownProgram}
	}
	argv = simpleArgv(f)
	w := walker{seen: map[string]bool{}}
	w.file(f, 0)
	return argv, w.out
}

func parser() *syntax.Parser { return syntax.NewParser(syntax.Variant(syntax.LangBash)) }

// simpleArgv returns f's words when f is exactly one simple command of
// literal words.
func simpleArgv(f *syntax.File) []string {
	if len(f.Stmts) != 1 {
		return nil
	}
	st := f.Stmts[0]
	if st.Negated || st.Background || st.Coprocess || len(st.Redirs) > 0 {
		return nil
	}
	call, ok := st.Cmd.(*syntax.CallExpr)
	if !ok || len(call.Assigns) > 0 || len(call.Args) == 0 {
		return nil
	}
	argv := make([]string, 0, len(call.Args))
	for _, w := range call.Args {
		s, ok := literal(w)
		if !ok {
			return nil
		}
		argv = append(argv, s)
	}
	return argv
}

// literal returns w's value when the shell would pass it on unchanged by
// any expansion: only plain text, quoted or escaped, with no glob, tilde
// or brace that the shell could expand.
func literal(w *syntax.Word) (string, bool) {
	for i, p := range w.Parts {
		switch p := p.(type) {
		case *syntax.Lit:
			if strings.ContainsAny(unescaped(p.Value), "*?[{") || (i == 0 && strings.HasPrefix(p.Value, "~")) {
				return "", false
			}
		case *syntax.SglQuoted:
			// 'text', and $'text' with C escapes: literal either way.
		case *syntax.DblQuoted:
			if p.Dollar {
				return "", false
			}
			for _, q := range p.Parts {
				if _, ok := q.(*syntax.Lit); !ok {
					return "", false
				}
			}
		default:
			return "", false
		}
	}
	// Fields does quote removal (backslashes included) as the shell does;
	// a literal word is one field.
	fs, err := expand.Fields(nil, w)
	if err != nil || len(fs) != 1 {
		return "", false
	}
	return fs[0], true
}

// unescaped drops backslash-escaped characters from an unquoted literal's
// source, so that only the characters the shell could expand remain.
func unescaped(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// walker collects the programs of a parsed command line.
type walker struct {
	out  []string
	seen map[string]bool
}

func (w *walker) add(name string) {
	if len(w.out) >= maxPrograms || w.seen[name] {
		return
	}
	w.seen[name] = true
	w.out = append(w.out, name)
}

func (w *walker) file(f *syntax.File, depth int) {
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.CallExpr:
			w.call(n, depth)
		case *syntax.DeclClause:
			// declare, local, export, readonly, typeset: builtins whose
			// assignments may hold substitutions, walked below.
			w.add(n.Variant.Value)
		case *syntax.TestClause, *syntax.ArithmCmd, *syntax.LetClause:
		}
		return true
	})
}

// call adds a simple command's program, and what it runs in turn when it
// is a wrapper (env pg_dump) or a shell given a command line (sh -c '...').
func (w *walker) call(c *syntax.CallExpr, depth int) {
	args := c.Args
	for len(args) > 0 {
		name, ok := literal(args[0])
		if !ok {
			w.add(unknownProgram)
			return
		}
		base := path.Base(name)
		if name == "" {
			base = unknownProgram
		}
		w.add(base)
		args = args[1:]
		switch {
		case shells[base]:
			w.shellArg(args, depth)
			return
		case wrappers[base]:
			args = skipOptions(base, args)
		default:
			return
		}
	}
}

// shellArg follows a shell's -c argument as a command line of its own.
func (w *walker) shellArg(args []*syntax.Word, depth int) {
	for i, a := range args {
		s, ok := literal(a)
		if !ok {
			w.add(unknownProgram)
			return
		}
		if s == "-c" || (strings.HasPrefix(s, "-") && !strings.HasPrefix(s, "--") && strings.Contains(s, "c")) {
			if i+1 >= len(args) {
				return
			}
			line, ok := literal(args[i+1])
			if !ok || depth >= maxNesting {
				w.add(unknownProgram)
				return
			}
			f, err := parser().Parse(strings.NewReader(line), "")
			if err != nil {
				w.add(unknownProgram)
				return
			}
			w.file(f, depth+1)
			return
		}
		if !strings.HasPrefix(s, "-") {
			// sh script.sh: the script's content is not on the line.
			return
		}
	}
	// A shell without -c reads commands from its input, which no rule
	// sees: the program list says so.
	w.add(unknownProgram)
}

// skipOptions drops a wrapper's options (and env's assignments) up to the
// program it runs. Options taking a value are skipped with it where the
// wrapper is known to have them; anything else unrecognised ends at the
// first word that does not start with "-".
func skipOptions(wrapper string, args []*syntax.Word) []*syntax.Word {
	valued := map[string]map[string]bool{
		"sudo":    {"-u": true, "-g": true, "-C": true, "-D": true, "-h": true, "-p": true, "-r": true, "-t": true, "-U": true},
		"doas":    {"-u": true, "-C": true},
		"nice":    {"-n": true},
		"ionice":  {"-c": true, "-n": true, "-p": true},
		"timeout": {"-k": true, "-s": true},
		"xargs":   {"-a": true, "-d": true, "-E": true, "-I": true, "-L": true, "-n": true, "-P": true, "-s": true},
		"stdbuf":  {"-i": true, "-o": true, "-e": true},
		"env":     {"-u": true, "-C": true, "-S": true},
		"chrt":    {"-p": true},
		"taskset": {},
		"flock":   {"-w": true, "-E": true},
		"runuser": {"-u": true, "-g": true, "-G": true},
	}[wrapper]
	for len(args) > 0 {
		s, ok := literal(args[0])
		if !ok {
			return args
		}
		switch {
		case s == "--":
			return args[1:]
		case strings.HasPrefix(s, "-"):
			args = args[1:]
			if valued[s] && len(args) > 0 {
				args = args[1:]
			}
		case wrapper == "env" && strings.Contains(s, "="):
			args = args[1:]
		case wrapper == "timeout" || wrapper == "nice" && isNumber(s) || wrapper == "taskset" || wrapper == "chrt" || wrapper == "flock":
			// timeout DURATION CMD, taskset MASK CMD, chrt PRIO CMD,
			// flock FILE CMD: one positional before the program.
			args = args[1:]
			if len(args) == 0 {
				return args
			}
			return args
		default:
			return args
		}
	}
	return args
}

func isNumber(s string) bool {
	s = strings.TrimPrefix(s, "-")
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
