package interceptor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// KernelFloor is the oldest kernel the daemon accepts. The probe still
// checks each feature it uses, so a kernel above the floor that lacks one
// is named precisely.
var KernelFloor = [2]int{5, 15}

// ProbeError lists what the machine is missing for interception.
type ProbeError struct {
	Missing []string
}

func (e *ProbeError) Error() string {
	return "this machine cannot run sluiced: " + strings.Join(e.Missing, "; ")
}

// capabilities the daemon needs in its effective set.
var neededCaps = []struct {
	bit  uint
	name string
	why  string
}{
	{unix.CAP_BPF, "CAP_BPF", "load eBPF programs and maps"},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "attach cgroup socket programs and set SO_MARK"},
	{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN", "pin objects and use the cgroup programs' helpers"},
	{unix.CAP_SYS_PTRACE, "CAP_SYS_PTRACE", "read the executable of a job's processes"},
}

// Probe checks, without changing anything, that this process and kernel
// can intercept: privileges, a cgroup2 mount, the kernel version, the
// program types and helpers the programs use. The error is a *ProbeError
// naming everything missing.
func Probe() error {
	var missing []string
	eff, err := effectiveCaps()
	if err != nil {
		missing = append(missing, err.Error())
	} else {
		for _, c := range neededCaps {
			if eff&(1<<c.bit) == 0 {
				missing = append(missing, fmt.Sprintf("not root: %s is missing (needed to %s)", c.name, c.why))
			}
		}
	}
	if len(missing) > 0 {
		// Without privileges the feature probes below cannot run.
		return &ProbeError{Missing: missing}
	}
	if _, err := Cgroup2Mount(); err != nil {
		missing = append(missing, "no cgroup2 mount found: mount the unified hierarchy (cgroup2) at /sys/fs/cgroup or /sys/fs/cgroup/unified")
	}
	if major, minor, err := kernelVersion(); err != nil {
		missing = append(missing, err.Error())
	} else if major < KernelFloor[0] || major == KernelFloor[0] && minor < KernelFloor[1] {
		missing = append(missing, fmt.Sprintf("kernel too old: %d.%d, need %d.%d or newer", major, minor, KernelFloor[0], KernelFloor[1]))
	}
	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.SockOps} {
		if err := features.HaveProgramType(pt); err != nil {
			missing = append(missing, fmt.Sprintf("kernel lacks BPF program type %s: %v", pt, err))
		}
	}
	helpers := []struct {
		pt ebpf.ProgramType
		fn asm.BuiltinFunc
	}{
		{ebpf.CGroupSockAddr, asm.FnGetCurrentComm},
		{ebpf.CGroupSockAddr, asm.FnGetCurrentCgroupId},
		{ebpf.CGroupSockAddr, asm.FnGetSocketCookie},
		{ebpf.CGroupSockAddr, asm.FnSkStorageGet},
		{ebpf.SockOps, asm.FnGetSocketCookie},
	}
	for _, h := range helpers {
		if err := features.HaveProgramHelper(h.pt, h.fn); err != nil {
			missing = append(missing, fmt.Sprintf("kernel lacks helper %s for %s programs: %v", h.fn, h.pt, err))
		}
	}
	if len(missing) > 0 {
		return &ProbeError{Missing: missing}
	}
	return nil
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("read capabilities: no CapEff line")
}

func kernelVersion() (major, minor int, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return 0, 0, fmt.Errorf("read kernel version: %w", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err != nil {
		return 0, 0, fmt.Errorf("read kernel version from %q: %w", rel, err)
	}
	return major, minor, nil
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when nothing is mounted there,
// as systemd does on most distributions.
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFSRoot, &st); err != nil {
		return fmt.Errorf("stat %s: %w", BPFFSRoot, err)
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", BPFFSRoot, err)
	}
	return nil
}
