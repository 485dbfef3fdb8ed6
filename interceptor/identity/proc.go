package identity

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/internal/procfs"
)

// proc is one process as /proc/<pid>/stat describes it.
type proc struct {
	pid   uint32
	ppid  uint32
	comm  string // the kernel's comm: the executable's basename, at most 15 bytes
	start uint64 // field 22: start time in clock ticks after boot
}

// maxDepth bounds an ancestry walk; real process trees are far shallower.
const maxDepth = 512

// errGone reports that a process no longer exists.
var errGone = errors.New("process gone")

// readStat reads /proc/<pid>/stat under root. It is on every
// connection's path, so it reads into a stack buffer with plain system
// calls; a stat line is a few hundred bytes.
func readStat(root string, pid uint32) (proc, error) {
	path := root + "/" + strconv.FormatUint(uint64(pid), 10) + "/stat"
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH) {
		return proc{}, errGone
	}
	if err != nil {
		return proc{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	var buf [1024]byte
	n, err := syscall.Read(fd, buf[:])
	syscall.Close(fd)
	if errors.Is(err, syscall.ESRCH) {
		return proc{}, errGone
	}
	if err != nil {
		return proc{}, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	return parseStat(pid, buf[:n])
}

// parseStat parses the text of /proc/<pid>/stat. comm is in parentheses and
// may itself hold spaces and parentheses, so the fields after it are found
// from the last ')'.
func parseStat(pid uint32, b []byte) (proc, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return proc{}, fmt.Errorf("parse stat of pid %d: no comm", pid)
	}
	rest := bytes.Fields(b[end+1:])
	// rest[0] is field 3 (state); field N is rest[N-3].
	if len(rest) < 20 {
		return proc{}, fmt.Errorf("parse stat of pid %d: %d fields", pid, len(rest)+2)
	}
	ppid, err := strconv.ParseUint(string(rest[1]), 10, 32)
	if err != nil {
		return proc{}, fmt.Errorf("parse stat of pid %d: ppid: %w", pid, err)
	}
	start, err := strconv.ParseUint(string(rest[19]), 10, 64)
	if err != nil {
		return proc{}, fmt.Errorf("parse stat of pid %d: starttime: %w", pid, err)
	}
	return proc{pid: pid, ppid: uint32(ppid), comm: string(b[open+1 : end]), start: start}, nil
}

// findJob walks from p (the connecting process, as readStat just read it)
// up its live ancestry to the job's anchor. It returns the processes from
// p to the anchor, nearest first, with the anchor last, and the job's
// kind; or a nil chain when no ancestor up to the process whose parent is
// 0 (init, kthreadd) is an anchor. See Resolver.anchor for what an anchor
// is.
//
// Walking is not atomic: a parent can exit and its pid be reused between
// two reads. A parent must therefore have started no later than its child;
// a chain where that fails is cut at the break, as if the child had been
// reparented, so a process can never borrow an unrelated process's
// ancestry.
func findJob(root string, p proc, isAnchor func(p, parent proc, hasParent bool) string) ([]proc, string, error) {
	var err error
	chain := []proc{p}
	for len(chain) < maxDepth {
		// Asked first without the parent, saving a read for an anchor
		// known by its own name.
		if kind := isAnchor(p, proc{}, false); kind != "" {
			return chain, kind, nil
		}
		var parent proc
		hasParent := false
		if p.ppid != 0 {
			parent, err = readStat(root, p.ppid)
			switch {
			case errors.Is(err, errGone):
			case err != nil:
				return nil, "", err
			case parent.start <= p.start:
				hasParent = true
			}
		}
		if kind := isAnchor(p, parent, hasParent); hasParent && kind != "" {
			return chain, kind, nil
		}
		if !hasParent {
			break
		}
		chain = append(chain, parent)
		p = parent
	}
	return nil, "", nil
}

// containerChain walks from pid up its live ancestry while the processes
// are in the cgroup container or below it, and returns them nearest first;
// the last is the container's outermost process. pid itself must be in
// the container.
func containerChain(root string, pid uint32, container string) ([]proc, error) {
	in := func(pid uint32) (bool, error) {
		cg, err := readCgroup(root, pid)
		if err != nil {
			return false, err
		}
		return cg == container || strings.HasPrefix(cg, strings.TrimSuffix(container, "/")+"/"), nil
	}
	p, err := readStat(root, pid)
	if err != nil {
		return nil, err
	}
	ok, err := in(pid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("pid %d is not in container cgroup %s", pid, container)
	}
	chain := []proc{p}
	for len(chain) < maxDepth && p.ppid != 0 {
		parent, err := readStat(root, p.ppid)
		if errors.Is(err, errGone) {
			break
		}
		if err != nil {
			return nil, err
		}
		if parent.start > p.start {
			break // the parent's pid was reused: p was reparented
		}
		if ok, err := in(parent.pid); err != nil && !errors.Is(err, errGone) {
			return nil, err
		} else if !ok {
			break
		}
		chain = append(chain, parent)
		p = parent
	}
	return chain, nil
}

// readCgroup returns the cgroup2 path of pid (the "0::" line of
// /proc/PID/cgroup).
func readCgroup(root string, pid uint32) (string, error) {
	cg, err := procfs.Cgroup(root, int(pid))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return "", errGone
	}
	return cg, err
}

// alive reports whether pid still is the process that started at start.
func alive(root string, pid uint32, start uint64) bool {
	p, err := readStat(root, pid)
	return err == nil && p.start == start
}

// maxEnviron bounds how much of a process's environment is read.
const maxEnviron = 1 << 20

// readEnviron reads /proc/<pid>/environ: the environment the process was
// started with (a process can overwrite that memory, so nothing read here is
// trusted beyond where to fetch a token from). Reading another user's
// process needs root or CAP_SYS_PTRACE.
func readEnviron(root string, pid uint32) (map[string]string, error) {
	f, err := os.Open(root + "/" + strconv.FormatUint(uint64(pid), 10) + "/environ")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errGone
		}
		return nil, fmt.Errorf("read environment of pid %d: %w", pid, err)
	}
	defer f.Close()
	buf, err := io.ReadAll(io.LimitReader(f, maxEnviron))
	if errors.Is(err, syscall.ESRCH) {
		return nil, errGone
	}
	if err != nil {
		return nil, fmt.Errorf("read environment of pid %d: %w", pid, err)
	}
	env := make(map[string]string)
	for kv := range bytes.SplitSeq(buf, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		if _, dup := env[string(k)]; !dup { // the first definition is the one getenv sees
			env[string(k)] = string(v)
		}
	}
	return env, nil
}
