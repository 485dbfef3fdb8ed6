package interceptor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/internal/procfs"
)

// ErrNoCgroup2 is returned when the machine has no cgroup2 mount.
var ErrNoCgroup2 = errors.New("no cgroup2 mount found")

// Cgroup2Mount returns where the unified (cgroup2) hierarchy is mounted. It
// is /sys/fs/cgroup on a pure cgroup2 host and often /sys/fs/cgroup/unified
// on a hybrid one, so it is read from /proc/self/mountinfo, never assumed.
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fs := strings.Fields(post); len(fs) > 0 && fs[0] == "cgroup2" {
			if f := strings.Fields(pre); len(f) >= 5 {
				return unescapeMount(f[4]), nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	return "", ErrNoCgroup2
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// CgroupPath turns a cgroup given relative to the cgroup2 mount ("runner" or
// "/system.slice/runner.service") into an absolute directory. The root of
// the hierarchy is refused: hooking it would catch every process on the
// machine, the daemon included.
func CgroupPath(mount, rel string) (string, error) {
	clean := filepath.Clean("/" + rel)
	if clean == "/" {
		return "", errors.New("refusing the root cgroup: name the runner's own cgroup")
	}
	return filepath.Join(mount, clean), nil
}

// CgroupID returns the kernel's id of a cgroup2 directory: its inode number,
// the value bpf_get_current_cgroup_id reports.
func CgroupID(dir string) (uint64, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", dir)
	}
	return st.Ino, nil
}

// SelfCgroup returns this process's cgroup2 path relative to the mount.
func SelfCgroup() (string, error) {
	cg, err := procfs.Cgroup("/proc", 0)
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	return cg, nil
}

// within reports whether cgroup a is b or below it.
func within(a, b string) bool {
	a, b = filepath.Clean("/"+a), filepath.Clean("/"+b)
	return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/")
}

// FindCgroupByID walks the hierarchy under mount for the cgroup with id and
// returns its path relative to mount, or "" when none has it.
func FindCgroupByID(mount string, id uint64) string {
	var found string
	filepath.WalkDir(mount, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if cid, err := CgroupID(p); err == nil && cid == id {
			rel, _ := filepath.Rel(mount, p)
			found = "/" + rel
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// fdCgroupID returns the id of the cgroup directory open as f.
func fdCgroupID(f *os.File) (uint64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat cgroup: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", f.Name())
	}
	return st.Ino, nil
}
