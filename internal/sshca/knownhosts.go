package sshca

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"golang.org/x/crypto/ssh"
)

// DefaultKnownHosts is the system-wide known_hosts file: the first of
// OpenSSH's default GlobalKnownHostsFile list, read by every user's ssh.
const DefaultKnownHosts = "/etc/ssh/ssh_known_hosts"

// DefaultName is the installation name of a config that names none.
const DefaultName = "default"

// plainName is an installation name that goes into Marker unquoted.
var plainName = regexp.MustCompile(`^[A-Za-z0-9._@:+-]+$`)

// Marker returns the comment line, without a newline, that sits right
// above the CA line of installation name in a known_hosts file. It is how
// RemoveLine finds the line it may remove: a line an operator wrote
// without it is never touched. An empty name is DefaultName; a name with
// characters other than letters, digits and ._@:+- is quoted.
func Marker(name string) string {
	const m = markerPrefix
	switch {
	case name == "" || name == DefaultName:
		return m + ")"
	case plainName.MatchString(name):
		return m + " --name " + name + ")"
	default:
		return m + " --name " + strconv.Quote(name) + ")"
	}
}

const markerPrefix = "# sluice: SSH host CA of this runner (sluice install; removed by sluice uninstall"

// Change is what an edit of a known_hosts file did.
type Change int

const (
	// Unchanged: the file already said what was asked (or, for a
	// removal, held no line of the installation). Nothing was written.
	Unchanged Change = iota
	// Added: the installation's marker and CA line were appended.
	Added
	// Replaced: the installation's CA line named another key (or was
	// edited) and now names the current one, in the same place.
	Replaced
	// Removed: the installation's marker and CA line were taken out.
	Removed
	// Present: a line the installation did not write (an operator's)
	// already trusts the CA for every host; the file was left alone, and
	// RemoveLine will leave that line too.
	Present
)

func (c Change) String() string {
	switch c {
	case Unchanged:
		return "unchanged"
	case Added:
		return "added"
	case Replaced:
		return "replaced"
	case Removed:
		return "removed"
	case Present:
		return "present"
	}
	return fmt.Sprintf("Change(%d)", int(c))
}

// line is one line of a file with its terminator ("\n", or none for an
// unterminated last line).
type line struct {
	raw  []byte // the bytes as in the file, terminator included
	text string // without the terminator and a trailing \r
}

func splitLines(data []byte) []line {
	var out []line
	for len(data) > 0 {
		n := bytes.IndexByte(data, '\n') + 1
		if n == 0 {
			n = len(data)
		}
		raw := data[:n]
		text := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
		out = append(out, line{raw: raw, text: text})
		data = data[n:]
	}
	return out
}

// block is a managed entry: the marker at index at, and the CA line below
// it when hasLine (an edited file may have lost it).
type block struct {
	at      int
	hasLine bool
}

// blocks returns the managed entries of installation name in lines, or
// of every installation when all is set.
func blocks(lines []line, name string, all bool) []block {
	marker := Marker(name)
	var out []block
	for i := 0; i < len(lines); i++ {
		if lines[i].text != marker && !(all && strings.HasPrefix(lines[i].text, markerPrefix)) {
			continue
		}
		b := block{at: i}
		if i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1].text), "@cert-authority") {
			b.hasLine = true
			i++
		}
		out = append(out, b)
	}
	return out
}

// AddLine returns data, a known_hosts file's content, with the CA line of
// installation name trusting pub, and what changed. Every other byte of
// data stays as it was. The installation's existing line is replaced in
// place when it names another key or was edited; further copies of it are
// dropped. Without one, the marker and the line are appended, unless a line
// no installation wrote (an operator's) trusts pub already (Present).
// Another installation's line for the same key does not count: each
// installation's line goes with that installation. data is returned as it
// is when nothing changes.
func AddLine(data []byte, name string, pub ed25519.PublicKey) ([]byte, Change) {
	want := KnownHostsLine(pub)
	lines := splitLines(data)
	bs := blocks(lines, name, false)
	if len(bs) == 1 && bs[0].hasLine && lines[bs[0].at+1].text == want {
		return data, Unchanged
	}
	if len(bs) == 0 {
		if unmanaged, _ := removeBlocks(data, "", true); Trusted(unmanaged, pub) {
			return data, Present
		}
		out := bytes.Clone(data)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, '\n')
		}
		return append(out, Marker(name)+"\n"+want+"\n"...), Added
	}
	change := Added // a marker whose line an editor took away
	for _, b := range bs {
		if b.hasLine {
			change = Replaced
		}
	}
	var out []byte
	skip := map[int]bool{}
	for _, b := range bs[1:] {
		skip[b.at] = true
		if b.hasLine {
			skip[b.at+1] = true
		}
	}
	first := bs[0]
	for i := 0; i < len(lines); i++ {
		switch {
		case i == first.at:
			out = append(out, Marker(name)+"\n"+want+"\n"...)
			if first.hasLine {
				i++
			}
		case !skip[i]:
			out = append(out, lines[i].raw...)
		}
	}
	return out, change
}

// RemoveLine returns data without the marker and CA line of installation
// name (every copy of them), and Removed, or data itself and Unchanged
// when it holds none. Lines the installation did not write stay, even one
// that trusts the same key.
func RemoveLine(data []byte, name string) ([]byte, Change) {
	return removeBlocks(data, name, false)
}

// removeBlocks is RemoveLine, for every installation when all is set.
func removeBlocks(data []byte, name string, all bool) ([]byte, Change) {
	lines := splitLines(data)
	bs := blocks(lines, name, all)
	if len(bs) == 0 {
		return data, Unchanged
	}
	skip := map[int]bool{}
	for _, b := range bs {
		skip[b.at] = true
		if b.hasLine {
			skip[b.at+1] = true
		}
	}
	out := []byte{}
	for i, l := range lines {
		if !skip[i] {
			out = append(out, l.raw...)
		}
	}
	return out, Removed
}

// Trusted reports whether data, a known_hosts file's content, makes ssh
// trust host certificates signed by pub for every host: a
// `@cert-authority` line whose host patterns include "*" names the key,
// and no `@revoked` line names it. Malformed lines are skipped, as ssh
// skips them.
func Trusted(data []byte, pub ed25519.PublicKey) bool {
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		return false
	}
	want := pk.Marshal()
	trusted := false
	for _, l := range splitLines(data) {
		f := strings.Fields(l.text)
		if len(f) < 4 || (f[0] != "@cert-authority" && f[0] != "@revoked") {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.Join(f[2:], " ")))
		if err != nil || !bytes.Equal(k.Marshal(), want) {
			continue
		}
		if f[0] == "@revoked" {
			return false
		}
		for _, p := range strings.Split(f[1], ",") {
			if p == "*" {
				trusted = true
			}
		}
	}
	return trusted
}

// AddToFile makes the known_hosts file at path trust pub through the CA
// line of installation name, as AddLine does, and writes the file when
// that changes it: atomically (a synced temporary file renamed over it),
// keeping its mode and owner, 0644 for a new file (and 0755 for a
// directory it has to create). A symlink is followed and its target
// rewritten. Another process writing the file at the same moment may lose
// its change or this one: the last rename wins.
func AddToFile(path, name string, pub ed25519.PublicKey) (Change, error) {
	return editFile(path, func(data []byte) ([]byte, Change) { return AddLine(data, name, pub) })
}

// RemoveFromFile takes the marker and CA line of installation name out of
// the known_hosts file at path, as RemoveLine does, writing it as AddToFile
// does. A missing file is Unchanged. The file stays when it ends up empty.
func RemoveFromFile(path, name string) (Change, error) {
	return editFile(path, func(data []byte) ([]byte, Change) { return RemoveLine(data, name) })
}

func editFile(path string, edit func([]byte) ([]byte, Change)) (Change, error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	mode, uid, gid := os.FileMode(0o644), -1, -1
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return Unchanged, fmt.Errorf("read known hosts: %w", err)
	default:
		fi, err := os.Stat(path)
		if err != nil {
			return Unchanged, fmt.Errorf("read known hosts: %w", err)
		}
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	next, change := edit(data)
	if change == Unchanged || change == Present {
		return change, nil
	}
	if err := writeAtomic(path, next, mode, uid, gid); err != nil {
		return Unchanged, fmt.Errorf("write known hosts: %w", err)
	}
	return change, nil
}

// writeAtomic replaces path with data through a synced temporary file in
// the same directory, with mode perm and, when uid is not -1, that owner.
func writeAtomic(path string, data []byte, perm os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := atomicfile.WriteTemp(dir, "."+filepath.Base(path)+".tmp*", data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if uid != -1 {
		if fi, err := os.Stat(tmp); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && (int(st.Uid) != uid || int(st.Gid) != gid) {
				if err := os.Chown(tmp, uid, gid); err != nil {
					return err
				}
			}
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}
