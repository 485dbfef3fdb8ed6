package interceptor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/bpf"
)

// Job marks.
//
// The kernel marks every task of a job (bpf/jobs.c): a task of a job cgroup
// (the runners' and the containers' cgroups) that forks or execs (under a
// scope also one that connects) is marked in its task storage, and every child of a marked task is
// marked at fork. A mark stays wherever the task moves. With a Scope, the
// connect programs are attached to that cgroup alone and act for marked
// tasks (and tasks of job cgroups) only, so a job task that moved itself
// out of its cgroup, anywhere below the scope, is still intercepted, and a
// process that never belonged to a job is left alone.
//
// The same programs report what a marked task does against Sluice as
// tamper events, in a pinned ring buffer that outlives the daemon.

// tracing are the job programs, attached with pinned tracing links.
var tracing = []struct {
	pin  string
	prog func(*bpf.Objects) *ebpf.Program
}{
	{"trace_fork", func(o *bpf.Objects) *ebpf.Program { return o.Fork }},
	{"trace_exec", func(o *bpf.Objects) *ebpf.Program { return o.Exec }},
	{"trace_cgroup_attach", func(o *bpf.Objects) *ebpf.Program { return o.CgroupAttach }},
	{"trace_signal", func(o *bpf.Objects) *ebpf.Program { return o.Signal }},
	{"trace_sys_enter", func(o *bpf.Objects) *ebpf.Program { return o.SysEnter }},
}

func tracingPinDir(name string) string { return filepath.Join(PinDir(name), "tracing") }

// attachTracing attaches the job programs and pins their links. Links an
// earlier daemon pinned are replaced: the new link is attached first, then
// the old one removed, so marking never lapses (for a moment both run; a
// mark is set twice, an event may be reported twice).
func (ic *Interceptor) attachTracing() error {
	dir := tracingPinDir(ic.cfg.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	for _, t := range tracing {
		l, err := link.AttachTracing(link.TracingOptions{Program: t.prog(ic.objs), AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return fmt.Errorf("attach %s: %w", t.pin, err)
		}
		pin := filepath.Join(dir, t.pin)
		if old, err := link.LoadPinnedLink(pin, nil); err == nil {
			old.Unpin()
			old.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			os.Remove(pin)
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("pin %s: %w", pin, err)
		}
		ic.tracing = append(ic.tracing, l)
	}
	return nil
}

// watchedSyscalls are the system calls a marked task is reported for, by
// architecture: number -> tamper kind | path argument << 8.
var watchedSyscalls = map[string]map[uint32]uint32{
	"amd64": {
		321: bpf.TamperBPF,                           // bpf
		101: bpf.TamperPtrace,                        // ptrace
		175: bpf.TamperModule, 313: bpf.TamperModule, // init_module, finit_module
		176: bpf.TamperModule,                 // delete_module
		87:  bpf.TamperPin, 84: bpf.TamperPin, // unlink, rmdir
		263: bpf.TamperPin | 1<<8, 82: bpf.TamperPin, // unlinkat (path in arg 1), rename
		264: bpf.TamperPin | 1<<8, 316: bpf.TamperPin | 1<<8, // renameat, renameat2
	},
	"arm64": {
		280: bpf.TamperBPF,
		117: bpf.TamperPtrace,
		105: bpf.TamperModule, 273: bpf.TamperModule, 106: bpf.TamperModule,
		35: bpf.TamperPin | 1<<8, 38: bpf.TamperPin | 1<<8, 276: bpf.TamperPin | 1<<8, // unlinkat, renameat, renameat2
	},
}

// writeJobConfig fills the system call table and the protected processes
// (this daemon).
func (ic *Interceptor) writeJobConfig() error {
	for nr, kind := range watchedSyscalls[runtime.GOARCH] {
		if err := ic.objs.Syscalls.Put(nr, kind); err != nil {
			return fmt.Errorf("write syscall table: %w", err)
		}
	}
	// Earlier daemons' pids are stale: a reused pid is no daemon.
	var k, v uint32
	var stale []uint32
	it := ic.objs.Protect.Iterate()
	for it.Next(&k, &v) {
		stale = append(stale, k)
	}
	for _, p := range stale {
		ic.objs.Protect.Delete(p)
	}
	if err := ic.objs.Protect.Put(uint32(os.Getpid()), uint32(1)); err != nil {
		return fmt.Errorf("write protected processes: %w", err)
	}
	return nil
}

// JobCgroup is a cgroup whose tasks belong to jobs.
type JobCgroup struct {
	Path string `json:"path"`
	ID   uint64 `json:"id"`
}

// addJobCgroup makes rel a job cgroup: its tasks, and their children
// wherever they go, are marked. The tasks already there are marked now.
func (ic *Interceptor) addJobCgroup(rel string, id uint64) error {
	if err := ic.objs.JobCgroups.Put(id, uint32(1)); err != nil {
		return fmt.Errorf("write job cgroup %s: %w", rel, err)
	}
	ic.jobMu.Lock()
	if ic.jobs == nil {
		ic.jobs = map[uint64]string{}
	}
	ic.jobs[id] = cleanRel(rel)
	ic.jobMu.Unlock()
	n := ic.markTasks(filepath.Join(ic.mount, rel), id)
	if n > 0 {
		ic.log.Debug("marked the tasks already in a job cgroup", "cgroup", rel, "tasks", n)
	}
	return nil
}

// markTasks marks every process in dir and below.
func (ic *Interceptor) markTasks(dir string, id uint64) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			fd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			if ic.objs.Marks.Update(uint32(fd), bpf.JobMark{JobCgroup: id}, ebpf.UpdateNoExist) == nil {
				n++
			}
			unix.Close(fd)
		}
		return nil
	})
	return n
}

// JobCgroups lists the job cgroups, sorted by path.
func (ic *Interceptor) JobCgroups() []JobCgroup {
	ic.jobMu.Lock()
	defer ic.jobMu.Unlock()
	out := make([]JobCgroup, 0, len(ic.jobs))
	for id, p := range ic.jobs {
		out = append(out, JobCgroup{Path: p, ID: id})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// pruneJobCgroups forgets job cgroups that no longer exist, and entries an
// earlier daemon wrote that this one does not want.
func (ic *Interceptor) pruneJobCgroups() {
	ic.jobMu.Lock()
	defer ic.jobMu.Unlock()
	for id, p := range ic.jobs {
		if cid, err := CgroupID(filepath.Join(ic.mount, p)); err != nil || cid != id {
			delete(ic.jobs, id)
		}
	}
	var k uint64
	var v uint32
	var stale []uint64
	it := ic.objs.JobCgroups.Iterate()
	for it.Next(&k, &v) {
		if _, ok := ic.jobs[k]; !ok {
			stale = append(stale, k)
		}
	}
	for _, id := range stale {
		ic.objs.JobCgroups.Delete(id)
	}
}

// InJobCgroup reports whether a cgroup path (as /proc/PID/cgroup or the
// kernel's cgroup_attach_task give it) is a job cgroup or below one.
func (ic *Interceptor) InJobCgroup(path string) bool {
	rel := cleanRel(path)
	ic.jobMu.Lock()
	defer ic.jobMu.Unlock()
	for _, p := range ic.jobs {
		if within(rel, p) {
			return true
		}
	}
	return false
}

// Intercepts reports whether the connects of every process of a cgroup (a
// path as /proc/PID/cgroup gives it) are intercepted: it is a job cgroup or
// below one, or below a cgroup hooked as a whole. Not merely below the
// scope: there only job tasks are, and a process started by a service (a
// container's, started by its runtime) is none.
func (ic *Interceptor) Intercepts(path string) bool {
	if ic.InJobCgroup(path) {
		return true
	}
	rel := cleanRel(path)
	for _, h := range ic.Cgroups() {
		if h.Source != SourceScope && within(rel, h.Path) {
			return true
		}
	}
	return false
}

// JobCgroupPath names a job cgroup by id ("" when unknown).
func (ic *Interceptor) JobCgroupPath(id uint64) string {
	ic.jobMu.Lock()
	defer ic.jobMu.Unlock()
	return ic.jobs[id]
}

// Tamper kinds, as TamperEvent.Kind names them.
var tamperKinds = map[uint32]string{
	bpf.TamperCgroupMove: "cgroup_move",
	bpf.TamperSignal:     "signal_sluiced",
	bpf.TamperPtrace:     "ptrace_sluiced",
	bpf.TamperBPF:        "bpf",
	bpf.TamperModule:     "module_load",
	bpf.TamperPin:        "pin_removal",
}

// TamperKinds lists the kinds of kernel-side tamper events.
func TamperKinds() []string {
	out := make([]string, 0, len(tamperKinds))
	for _, k := range tamperKinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TamperEvent is what a marked task did against Sluice, as the kernel
// reported it.
type TamperEvent struct {
	Kind string
	Time time.Time
	// PID and TID are the acting task; Comm its name; PPID its parent's
	// process id when the kernel reported it (the job's identity is looked
	// up through the parent when the actor is gone).
	PID, TID, PPID uint32
	Comm           string
	// Target is the moved task (cgroup_move), the protected process
	// (signal_sluiced, ptrace_sluiced) or the bpf() command.
	Target uint32
	// Arg is the signal, or the system call number.
	Arg uint64
	// Path is the destination cgroup (cgroup_move) or the path removed
	// (pin_removal).
	Path string
	// JobCgroup is the job cgroup the actor's mark came from.
	JobCgroup     uint64
	JobCgroupPath string
}

// TamperEvents reads the tamper ring buffer until ctx ends, calling fn for
// each event, those written while no daemon ran first. Moves of a task
// within the job cgroups are not tampering and are left out.
func (ic *Interceptor) TamperEvents(ctx context.Context, fn func(TamperEvent)) error {
	rd, err := ringbuf.NewReader(ic.objs.Tamper)
	if err != nil {
		return fmt.Errorf("open tamper ring buffer: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	defer rd.Close()
	var rec ringbuf.Record
	for {
		if err := rd.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read tamper ring buffer: %w", err)
		}
		var e bpf.TamperEvent
		if len(rec.RawSample) < int(unsafe.Sizeof(e)) {
			continue
		}
		// The record is the kernel's struct tamper_event, in this
		// machine's byte order and layout.
		e = *(*bpf.TamperEvent)(unsafe.Pointer(&rec.RawSample[0]))
		ev := TamperEvent{Kind: tamperKinds[e.Kind], Time: bootTime(e.TimeNs), PID: e.Pid, TID: e.Tid, PPID: e.Ppid,
			Comm: cString(e.Comm[:]), Target: e.Target, Arg: e.Arg, Path: cString(e.Path[:]),
			JobCgroup: e.JobCgroup, JobCgroupPath: ic.JobCgroupPath(e.JobCgroup)}
		if ev.Kind == "" {
			ev.Kind = "unknown"
		}
		if ev.Kind == "cgroup_move" && ic.InJobCgroup(ev.Path) {
			continue
		}
		fn(ev)
	}
}

// bootTime converts a CLOCK_BOOTTIME reading to wall time.
func bootTime(ns uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(uint64(ts.Nano()) - ns))
}

// JobTask reports whether pid is a job task (its thread group leader
// carries a mark), and the job cgroup of its mark. A process that is gone
// is not.
func (ic *Interceptor) JobTask(pid uint32) (bool, uint64) {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return false, 0
	}
	defer unix.Close(fd)
	var m bpf.JobMark
	if err := ic.objs.Marks.Lookup(uint32(fd), &m); err != nil {
		return false, 0
	}
	return true, m.JobCgroup
}

// TamperEvent is also how the daemon reports what it finds itself (a
// configuration file changed by a job task): NewTamperEvent fills in the
// job cgroup of pid's mark.
func (ic *Interceptor) NewTamperEvent(kind string, pid uint32, path string) (TamperEvent, bool) {
	ok, cg := ic.JobTask(pid)
	if !ok {
		return TamperEvent{}, false
	}
	comm, _ := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/comm")
	return TamperEvent{Kind: kind, Time: time.Now(), PID: pid, TID: pid, Comm: strings.TrimSpace(string(comm)), Path: path,
		JobCgroup: cg, JobCgroupPath: ic.JobCgroupPath(cg)}, true
}
