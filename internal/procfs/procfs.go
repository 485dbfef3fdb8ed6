// Package procfs reads what Sluice needs from /proc.
package procfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrNoCgroup2 means a process's cgroup file has no cgroup2 ("0::") line.
var ErrNoCgroup2 = errors.New("no cgroup2 path")

// Cgroup returns the cgroup2 path of process pid (the "0::" line of
// root/PID/cgroup, such as "/system.slice/x.service"); pid 0 means the
// calling process ("self"). An error wrapping os.ErrNotExist means the
// process is gone.
func Cgroup(root string, pid int) (string, error) {
	p := "self"
	if pid != 0 {
		p = strconv.Itoa(pid)
	}
	b, err := os.ReadFile(root + "/" + p + "/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", fmt.Errorf("pid %s: %w", p, ErrNoCgroup2)
}
