package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
)

// The root check: can the host's CI jobs become root?

// defaultSudoers is sudo's policy file.
const defaultSudoers = "/etc/sudoers"

// runnerProc is a process found in a runner cgroup, as /proc/PID/status
// tells it.
type runnerProc struct {
	pid        int
	name       string
	cgroup     string // relative to the cgroup2 mount
	uid, euid  int
	gids       []string // the real gid, then the supplementary groups
	noNewPrivs bool     // sudo cannot raise this process's privileges
}

// checkRoot warns when the host's CI jobs can become root: the runner's
// processes run as root, or the user they run as has passwordless sudo
// for every command (and NoNewPrivileges, which sluice install --harden
// sets, does not stop sudo). It reads the processes of the runner cgroups
// (the daemon's, else the config's) and the sudoers policy; it never runs
// sudo.
func checkRoot(cfg *daemon.Config, st *api.Status, configPath, sudoersPath string) finding {
	f := finding{check: "root"}
	cgs := runnerCgroups(cfg, st)
	if len(cgs) == 0 {
		f.level, f.detail = levelOK, "no runner cgroup known: nothing to check yet"
		return f
	}
	mount, err := interceptor.Cgroup2Mount()
	if err != nil {
		f.level, f.detail, f.fix = levelWarn, "cannot tell: "+err.Error(), "see the cgroup2 check"
		return f
	}
	procs := runnerProcs(mount, cgs)
	if len(procs) == 0 {
		f.level, f.detail = levelOK, fmt.Sprintf("no runner process in %s: nothing to check yet", strings.Join(cgs, ", "))
		return f
	}

	// What a root job can do, and what limits it meanwhile.
	meanwhile := fmt.Sprintf("until then, set scope in %s (a cgroup above the runner cgroups) so job processes that move stay intercepted, and watch the tamper alerts; README: \"Jobs with root: threat model\"", configPath)
	if cfg.Scope != "" {
		meanwhile = fmt.Sprintf("meanwhile scope (%s) keeps job processes that move intercepted, and tamper alerts report what a root job does to Sluice; README: \"Jobs with root: threat model\"", cfg.Scope)
	}

	// The runner itself runs as root.
	var root []runnerProc
	for _, p := range procs {
		if p.uid == 0 || p.euid == 0 {
			root = append(root, p)
		}
	}
	if len(root) > 0 {
		p := root[0]
		f.level = levelWarn
		f.detail = fmt.Sprintf("jobs run as root: pid %d (%s) in %s runs as uid 0 (%d of the %d runner processes do)", p.pid, p.name, p.cgroup, len(root), len(procs))
		f.fix = "run the runner service as an unprivileged user (User= in its unit, or the runner's own service installer), without a NOPASSWD sudo rule, and apply sluice install --harden; " + meanwhile
		return f
	}

	// Every user the runner's processes run as, each checked against the
	// sudoers policy.
	byUID := map[int][]runnerProc{}
	var uids []int
	for _, p := range procs {
		if _, ok := byUID[p.uid]; !ok {
			uids = append(uids, p.uid)
		}
		byUID[p.uid] = append(byUID[p.uid], p)
	}
	slices.Sort(uids)
	abs, err := filepath.Abs(sudoersPath)
	if err != nil {
		abs = sudoersPath
	}
	lines, err := sudoersLines(os.DirFS("/"), strings.TrimPrefix(filepath.Clean(abs), "/"))
	noSudoers := errors.Is(err, fs.ErrNotExist)
	if err != nil && !noSudoers {
		f.level, f.detail = levelWarn, fmt.Sprintf("cannot tell whether the runner's user has passwordless sudo: %v", err)
		f.fix = "run sluice doctor as root, or pass --sudoers FILE"
		return f
	}
	var names, notes []string
	for _, uid := range uids {
		u := sudoUserOf(uid, byUID[uid])
		names = append(names, u.name)
		if noSudoers {
			continue
		}
		g := nopasswdAll(lines, u)
		if g == nil {
			continue
		}
		nnp := true
		for _, p := range byUID[uid] {
			nnp = nnp && p.noNewPrivs
		}
		if nnp {
			notes = append(notes, fmt.Sprintf("%s has passwordless sudo (%s:%d), but the runner's processes have NoNewPrivileges set, so sudo cannot raise their privileges", u.name, g.file, g.line))
			continue
		}
		f.level = levelWarn
		f.detail = fmt.Sprintf("jobs can become root: the runner runs as %s, who has passwordless sudo for every command (%s:%d: %s)", u.name, g.file, g.line, g.text)
		what := "the NOPASSWD rule"
		if !strings.Contains(g.text, "NOPASSWD") {
			what = "the rule (passwordless through Defaults !authenticate)"
		}
		f.fix = fmt.Sprintf("remove %s at %s line %d (edit it with visudo -f %s), or set NoNewPrivileges on the runner service (sluice install --harden); %s", what, g.file, g.line, g.file, meanwhile)
		return f
	}
	f.level, f.detail = levelOK, fmt.Sprintf("jobs run as %s without passwordless sudo", strings.Join(names, ", "))
	if noSudoers {
		f.detail += fmt.Sprintf(" (no %s)", sudoersPath)
	}
	if len(notes) > 0 {
		f.detail += "; " + strings.Join(notes, "; ")
	}
	return f
}

// runnerCgroups are the cgroups whose processes are the runners' and
// their jobs', relative to the cgroup2 mount: the daemon's job and hooked
// cgroups when it answers, else the config's cgroups. The scope (which
// holds other services too) and the containers cgroup (container jobs,
// whose root is the container's) are left out.
func runnerCgroups(cfg *daemon.Config, st *api.Status) []string {
	var cand []string
	if st != nil {
		for _, c := range append(slices.Clone(st.JobCgroups), st.Cgroups...) {
			cand = append(cand, c.Path)
		}
	} else {
		cand = cfg.Cgroups
	}
	skip := func(cg string) bool {
		return cg == "" || cg == cfg.Scope || (st != nil && cg == st.Scope) || (cfg.Containers != nil && cg == cfg.Containers.Cgroup)
	}
	var out []string
	for _, cg := range cand {
		cg = strings.Trim(filepath.Clean("/"+cg), "/")
		if !skip(cg) && !slices.Contains(out, cg) {
			out = append(out, cg)
		}
	}
	slices.Sort(out)
	return out
}

// runnerProcs reads the processes in each cgroup and below, each once.
func runnerProcs(mount string, cgroups []string) []runnerProc {
	var out []runnerProc
	seen := map[int]bool{}
	for _, cg := range cgroups {
		top := filepath.Join(mount, cg)
		filepath.WalkDir(top, func(dir string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				return nil
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(dir, mount), "/")
			for _, field := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(field)
				if err != nil || seen[pid] {
					continue
				}
				if p, ok := readProc(pid); ok {
					seen[pid] = true
					p.cgroup = rel
					out = append(out, p)
				}
			}
			return nil
		})
	}
	return out
}

// readProc reads a process's name, uids, groups and no_new_privs from
// /proc/PID/status; false when it has exited.
func readProc(pid int) (runnerProc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return runnerProc{}, false
	}
	p := runnerProc{pid: pid, uid: -1, euid: -1}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		switch k {
		case "Name":
			p.name = strings.TrimSpace(v)
		case "Uid":
			if len(fields) >= 2 {
				p.uid, _ = strconv.Atoi(fields[0])
				p.euid, _ = strconv.Atoi(fields[1])
			}
		case "Gid":
			if len(fields) >= 1 {
				p.gids = append([]string{fields[0]}, p.gids...)
			}
		case "Groups":
			p.gids = append(p.gids, fields...)
		case "NoNewPrivs":
			p.noNewPrivs = strings.TrimSpace(v) == "1"
		}
	}
	return p, p.uid >= 0
}

// sudoUserOf is uid as sudoers rules name it: its user name, and the
// groups of its processes and of the group database.
func sudoUserOf(uid int, procs []runnerProc) sudoUser {
	u := sudoUser{name: strconv.Itoa(uid), uid: strconv.Itoa(uid)}
	var gids []string
	for _, p := range procs {
		gids = append(gids, p.gids...)
	}
	if pw, err := user.LookupId(u.uid); err == nil {
		u.name = pw.Username
		if more, err := pw.GroupIds(); err == nil {
			gids = append(gids, more...)
		}
	}
	slices.Sort(gids)
	u.gids = slices.Compact(gids)
	for _, gid := range u.gids {
		if g, err := user.LookupGroupId(gid); err == nil {
			u.groups = append(u.groups, g.Name)
		}
	}
	return u
}

// sudoUser is whom a sudoers policy is read for.
type sudoUser struct {
	name, uid string
	groups    []string // group names
	gids      []string
}

// sudoLine is one logical line of a sudoers policy: continuations joined,
// the comment removed, where it starts.
type sudoLine struct {
	file string // as sudo names it: absolute, for the policy on the host
	line int
	text string
}

// maxSudoersDepth bounds nested includes (sudo allows 128; a loop ends
// there too).
const maxSudoersDepth = 16

// sudoersLines reads the sudoers policy at name in fsys (a path without a
// leading slash; absolute paths in includes are taken from fsys's root),
// in sudo's order: a file's lines, with each #include/@include file and
// #includedir/@includedir directory (its files sorted by name, skipping
// names that end in "~" or contain a ".", as sudo does) read where the
// directive is. A relative include is relative to the including file's
// directory. An include that does not exist is skipped; the top file not
// existing is an error wrapping fs.ErrNotExist. Not handled: "%h" in
// include paths.
func sudoersLines(fsys fs.FS, name string) ([]sudoLine, error) {
	var out []sudoLine
	var read func(name string, depth int, top bool) error
	read = func(name string, depth int, top bool) error {
		if depth > maxSudoersDepth {
			return fmt.Errorf("read sudoers %s: includes nested deeper than %d", "/"+name, maxSudoersDepth)
		}
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			if !top && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("read sudoers: %w", err)
		}
		resolve := func(p string) string {
			p = strings.Trim(strings.TrimSpace(p), `"`)
			if strings.HasPrefix(p, "/") {
				return strings.TrimPrefix(path.Clean(p), "/")
			}
			return path.Join(path.Dir(name), p)
		}
		phys := strings.Split(string(src), "\n")
		for i := 0; i < len(phys); i++ {
			start, text := i+1, strings.TrimRight(phys[i], " \t\r")
			for strings.HasSuffix(text, `\`) && i+1 < len(phys) {
				i++
				text = strings.TrimSuffix(text, `\`) + " " + strings.TrimRight(phys[i], " \t\r")
			}
			text = strings.TrimSpace(text)
			if dir, ok := sudoDirective(text, "includedir"); ok {
				dir = resolve(dir)
				ents, err := fs.ReadDir(fsys, dir)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("read sudoers: %w", err)
				}
				for _, e := range ents {
					if e.IsDir() || strings.HasSuffix(e.Name(), "~") || strings.Contains(e.Name(), ".") {
						continue
					}
					if err := read(path.Join(dir, e.Name()), depth+1, false); err != nil {
						return err
					}
				}
				continue
			}
			if file, ok := sudoDirective(text, "include"); ok {
				if err := read(resolve(file), depth+1, false); err != nil {
					return err
				}
				continue
			}
			if text = stripSudoComment(text); text != "" {
				out = append(out, sudoLine{file: "/" + name, line: start, text: text})
			}
		}
		return nil
	}
	return out, read(name, 0, true)
}

// sudoDirective returns the argument of "#WORD ARG" or "@WORD ARG".
func sudoDirective(text, word string) (string, bool) {
	if len(text) < 1 || (text[0] != '#' && text[0] != '@') {
		return "", false
	}
	rest, ok := strings.CutPrefix(text[1:], word)
	if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return "", false
	}
	return strings.TrimSpace(rest), true
}

// stripSudoComment removes a comment: from a "#" that is not escaped and
// not a uid ("#0") to the end of the line.
func stripSudoComment(text string) string {
	for i := 0; i < len(text); i++ {
		switch {
		case text[i] == '\\':
			i++
		case text[i] == '#' && (i+1 == len(text) || text[i+1] < '0' || text[i+1] > '9'):
			return strings.TrimSpace(text[:i])
		}
	}
	return text
}

// sudoTags are the command tags of a sudoers rule ("NOPASSWD:").
var sudoTags = []string{"NOPASSWD", "PASSWD", "NOEXEC", "EXEC", "SETENV", "NOSETENV", "LOG_INPUT", "NOLOG_INPUT",
	"LOG_OUTPUT", "NOLOG_OUTPUT", "MAIL", "NOMAIL", "FOLLOW", "NOFOLLOW", "INTERCEPT", "NOINTERCEPT"}

// nopasswdAll returns the rule that lets u run every command as root
// without a password, or nil. As in sudo, the last rule that matches
// decides: a later "u ALL=(ALL) ALL" takes a password again. Handled:
// users by name, #uid, %group and %#gid, ALL and negation ("!"); User_,
// Runas_ and Cmnd_Alias (several definitions on a line joined by ":"
// too); the runas list (the rule must let u run as root: no runas list,
// ALL, root or #0); tags inherited along a rule's commands; Defaults
// lines, of which only "!authenticate" (global or for u's users) counts,
// making every rule passwordless. Not handled, each erring toward a
// warning or silence as said: host lists and Host_Alias (every rule is
// taken to apply on this host), netgroups (+name, never match), a
// NOPASSWD rule for a shell, su or an editor rather than ALL (also
// root, not reported), and Defaults for hosts, commands or runas users
// (ignored).
func nopasswdAll(lines []sudoLine, u sudoUser) *sudoLine {
	// Aliases and Defaults first: they apply wherever they are.
	aliases := map[string]map[string][]string{} // kind -> name -> members
	authGlobal, authUser := true, (*bool)(nil)
	for _, l := range lines {
		kw, rest := cutWord(l.text)
		switch {
		case kw == "User_Alias" || kw == "Runas_Alias" || kw == "Host_Alias" || kw == "Cmnd_Alias" || kw == "Cmd_Alias":
			kind := strings.TrimSuffix(strings.Replace(kw, "Cmd_", "Cmnd_", 1), "_Alias")
			if aliases[kind] == nil {
				aliases[kind] = map[string][]string{}
			}
			for _, def := range splitTop(rest, ':') {
				name, members, ok := strings.Cut(def, "=")
				if ok {
					aliases[kind][strings.TrimSpace(name)] = splitList(members)
				}
			}
		case kw == "Defaults" || strings.HasPrefix(kw, "Defaults:"):
			auth := (*bool)(nil)
			for _, p := range splitList(rest) {
				switch p {
				case "authenticate":
					auth = new(true)
				case "!authenticate":
					auth = new(false)
				}
			}
			switch {
			case auth == nil:
			case kw == "Defaults":
				authGlobal = *auth
			case listMatches(splitList(strings.TrimPrefix(kw, "Defaults:")), aliases["User"], func(m string) bool { return userMatches(m, u) }):
				authUser = auth
			}
		}
	}
	auth := authGlobal
	if authUser != nil {
		auth = *authUser
	}
	isRoot := func(m string) bool { return m == "ALL" || m == "root" || m == "#0" }
	cmdAll := func(m string) bool { return m == "ALL" }

	var last *sudoLine // the last rule that matched u running every command as root
	for i, l := range lines {
		if kw, _ := cutWord(l.text); strings.HasSuffix(kw, "_Alias") || isDefaults(kw) {
			continue
		}
		users, rest := cutUserList(l.text)
		if !listMatches(users, aliases["User"], func(m string) bool { return userMatches(m, u) }) {
			continue
		}
		for _, spec := range hostSpecs(rest) {
			_, cmnds, _ := strings.Cut(spec, "=")
			runas, runasSet, nopasswd := "", false, (*bool)(nil)
			for _, c := range splitTop(cmnds, ',') {
				c = strings.TrimSpace(c)
				if strings.HasPrefix(c, "(") {
					if end := strings.IndexByte(c, ')'); end > 0 {
						runas, runasSet, c = c[1:end], true, strings.TrimSpace(c[end+1:])
					}
				}
				c, nopasswd = cutSudoTags(c, nopasswd)
				asRoot := !runasSet
				if runasSet {
					users, groups, hasGroups := strings.Cut(runas, ":")
					if strings.TrimSpace(users) == "" {
						asRoot = !hasGroups || strings.TrimSpace(groups) == "" // "(:grp)" runs as the user
					} else {
						asRoot = listMatches(splitList(users), aliases["Runas"], isRoot)
					}
				}
				if !asRoot {
					continue
				}
				neg := strings.HasPrefix(c, "!")
				if !listMatches([]string{strings.TrimSpace(strings.TrimPrefix(c, "!"))}, aliases["Cmnd"], cmdAll) {
					continue
				}
				if neg {
					last = nil
					continue
				}
				free := !auth
				if nopasswd != nil {
					free = *nopasswd
				}
				if free {
					last = &lines[i]
				} else {
					last = nil
				}
			}
		}
	}
	return last
}

// cutWord splits a line at its first blank.
func cutWord(text string) (string, string) {
	if i := strings.IndexAny(text, " \t"); i >= 0 {
		return text[:i], strings.TrimSpace(text[i:])
	}
	return text, ""
}

// isDefaults reports whether a line's first word starts a Defaults entry:
// Defaults, or Defaults:users, @hosts, !commands, >runas.
func isDefaults(kw string) bool {
	rest, ok := strings.CutPrefix(kw, "Defaults")
	return ok && (rest == "" || strings.ContainsRune(":@!>", rune(rest[0])))
}

// cutUserList splits a rule into its user list ("alice, %ci") and the
// rest ("ALL = (ALL) NOPASSWD: ALL").
func cutUserList(text string) ([]string, string) {
	var users []string
	s := text
	for {
		s = strings.TrimLeft(s, " \t")
		end := strings.IndexAny(s, " \t,")
		if end < 0 {
			return append(users, s), ""
		}
		users = append(users, s[:end])
		s = strings.TrimLeft(s[end:], " \t")
		if !strings.HasPrefix(s, ",") {
			return users, s
		}
		s = s[1:]
	}
}

// hostSpecs splits "h1 = cmnds : h2 = cmnds" at the colons that separate
// host specs, not those that end a tag ("NOPASSWD:") or sit in a
// command's arguments.
func hostSpecs(rest string) []string {
	var out []string
	for _, p := range splitTop(rest, ':') {
		if n := len(out); n > 0 && (endsWithTag(out[n-1]) || !strings.Contains(p, "=")) {
			out[n-1] += ":" + p
			continue
		}
		out = append(out, p)
	}
	return out
}

func endsWithTag(s string) bool {
	i := len(s)
	for i > 0 && (s[i-1] >= 'A' && s[i-1] <= 'Z' || s[i-1] == '_') {
		i--
	}
	return slices.Contains(sudoTags, s[i:]) && (i == 0 || strings.ContainsRune(" \t():", rune(s[i-1])))
}

// cutSudoTags removes the tags and options (TIMEOUT=1h) before a command,
// returning the command and the NOPASSWD state, inherited from the
// previous command of the rule.
func cutSudoTags(c string, nopasswd *bool) (string, *bool) {
	for {
		c = strings.TrimSpace(c)
		tag, rest, ok := strings.Cut(c, ":")
		if ok && slices.Contains(sudoTags, tag) {
			switch tag {
			case "NOPASSWD":
				nopasswd = new(true)
			case "PASSWD":
				nopasswd = new(false)
			}
			c = rest
			continue
		}
		word, rest, _ := strings.Cut(c, " ")
		if k, _, ok := strings.Cut(word, "="); ok && k != "" && strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") == "" {
			c = rest
			continue
		}
		return c, nopasswd
	}
}

// userMatches reports whether one user list member (not an alias, no "!")
// is u.
func userMatches(m string, u sudoUser) bool {
	m = strings.Trim(m, `"`)
	switch {
	case m == "ALL":
		return true
	case strings.HasPrefix(m, "%#"):
		return slices.Contains(u.gids, m[2:])
	case strings.HasPrefix(m, "%"):
		return slices.Contains(u.groups, m[1:])
	case strings.HasPrefix(m, "#"):
		return m[1:] == u.uid
	}
	return m == u.name
}

// listMatches evaluates a sudoers list as sudo does: the last member that
// matches decides, "!" negates, and aliases are expanded (a loop counts
// as no match).
func listMatches(list []string, aliases map[string][]string, match func(string) bool) bool {
	var eval func(list []string, depth int) (matched, decided bool)
	eval = func(list []string, depth int) (bool, bool) {
		for i := len(list) - 1; i >= 0; i-- {
			m := strings.TrimSpace(list[i])
			neg := false
			for strings.HasPrefix(m, "!") {
				neg, m = !neg, strings.TrimSpace(m[1:])
			}
			var ok, decided bool
			if members, isAlias := aliases[m]; isAlias && m != "ALL" {
				if depth < maxSudoersDepth {
					ok, decided = eval(members, depth+1)
				}
			} else {
				ok, decided = match(m), match(m)
			}
			if decided {
				return ok != neg, true
			}
		}
		return false, false
	}
	ok, _ := eval(list, 0)
	return ok
}

// splitList splits a comma separated list and trims its members.
func splitList(s string) []string {
	var out []string
	for _, m := range splitTop(s, ',') {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// splitTop splits s at sep outside parentheses and backslash escapes.
func splitTop(s string, sep byte) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			depth = max(0, depth-1)
		case sep:
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
