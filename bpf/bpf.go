// Package bpf holds Sluice's eBPF programs and the one Go API that loads
// them: cgroup/connect4 and cgroup/connect6 rewrite a job's connects to a
// target so they reach the proxy, and sockops hands each redirected socket's
// origin to a map keyed by the client's address, which the proxy reads on
// accept.
//
// The package knows nothing of protocols or rules. It only loads programs
// and maps; attaching them to a cgroup is the interceptor's job.
package bpf

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

// Kernel-facing types, shared with the C sources through bpf2go.
type (
	// Origin is where a redirected connection was going and who opened it.
	// Addr holds IPv4 destinations as ::ffff:a.b.c.d; ports are host order.
	Origin = connect4Origin
	// PeerKey is the client end of a redirected connection.
	PeerKey = connect4PeerKey
	// TargetKey is one entry of the target LPM trie: Prefixlen counts 32
	// bits of port and padding plus the address bits; Port 0 is any port.
	TargetKey = connect4TargetKey
	// TargetVal is the target id stored for a TargetKey.
	TargetVal = connect4TargetVal
	// Config is the runtime configuration the programs read. Enabled == 0
	// makes every connect to a target fail.
	Config = connect4Config
	// NetCfg says where connects made in other network namespaces
	// (containers) are sent: Addr4 (network order) and Addr6 on the host's
	// loopback device, for sockets outside HostNetns. A zero field means
	// none, and such connects to a target are refused.
	NetCfg = connect4Netcfg
	// JobMark is a job task's mark (task storage).
	JobMark = jobsJobMark
	// TamperEvent is one event of the tamper ring buffer.
	TamperEvent = jobsTamperEvent
)

// NetCfgScoped in NetCfg.Flags: the connect programs act for job tasks
// only (they are attached at a scope above the job cgroups).
const NetCfgScoped = 1

// Tamper kinds (TamperEvent.Kind), as in jobs.c.
const (
	TamperCgroupMove = 1
	TamperSignal     = 2
	TamperPtrace     = 3
	TamperBPF        = 4
	TamperModule     = 5
	TamperPin        = 6
)

// Stat indexes the programs' per-CPU counters in Objects.Stats.
type Stat uint32

// The counters kept by the programs, in the order of enum stat in sluice.h.
const (
	StatRedirected Stat = iota
	StatDeniedNoConfig
	StatDeniedMapWrite
	StatDeniedProxyDirect
	StatHandedOver
	StatHandoverFailed
	StatDeniedNetns
	StatRedirectedNetns
	statMax
)

// StatNames names each Stat for status output.
var StatNames = [...]string{
	StatRedirected:        "redirected",
	StatDeniedNoConfig:    "denied_no_config",
	StatDeniedMapWrite:    "denied_map_write",
	StatDeniedProxyDirect: "denied_proxy_direct",
	StatHandedOver:        "handed_over",
	StatHandoverFailed:    "handover_failed",
	StatDeniedNetns:       "denied_netns",
	StatRedirectedNetns:   "redirected_netns",
}

// TargetPrefixBase is the part of TargetKey.Prefixlen taken by the port and
// padding, which always match in full.
const TargetPrefixBase = 32

// ErrIncompatiblePins is returned by Load when maps pinned by another
// version of Sluice do not match this version's layout.
var ErrIncompatiblePins = errors.New("pinned maps do not match this version's layout")

// Objects are the loaded programs and maps. The maps are pinned by name in
// the directory given to Load: closing Objects releases this process's file
// descriptors, and the maps live on in bpffs until they are unpinned.
// Programs are not pinned; they stay loaded while an attached link holds
// them.
type Objects struct {
	Connect4     *ebpf.Program
	Connect6     *ebpf.Program
	SockOps      *ebpf.Program
	GetPeername4 *ebpf.Program
	GetPeername6 *ebpf.Program

	Targets  *ebpf.Map // LPM trie TargetKey -> TargetVal
	Config   *ebpf.Map // array of one Config
	ByCookie *ebpf.Map // socket cookie -> Origin, written by connect4/6
	ByPeer   *ebpf.Map // PeerKey -> Origin, written by sockops
	Stats    *ebpf.Map // per-CPU counters indexed by Stat
	SkOrig   *ebpf.Map // socket storage: original destination, for getpeername
	NetCfg   *ebpf.Map // array of one NetCfg

	// Job marks and tamper events (jobs.c): tracing programs, attached
	// by the interceptor.
	Fork         *ebpf.Program // tp_btf/sched_process_fork
	Exec         *ebpf.Program // tp_btf/sched_process_exec
	CgroupAttach *ebpf.Program // tp_btf/cgroup_attach_task
	Signal       *ebpf.Program // tp_btf/signal_generate
	SysEnter     *ebpf.Program // tp_btf/sys_enter
	Marks        *ebpf.Map     // task storage: JobMark
	JobCgroups   *ebpf.Map     // cgroup id -> 1: the job cgroups
	Protect      *ebpf.Map     // tgid -> 1: processes whose signals and ptrace are tampering
	Syscalls     *ebpf.Map     // syscall number -> tamper kind (| path argument << 8)
	Tamper       *ebpf.Map     // ring buffer of TamperEvent
}

// Load loads the three programs. Their maps are pinned under pinDir, which
// must be on a bpffs mount: existing pins there are reused, so a restarted
// daemon keeps the targets, configuration and in-flight origins of the one
// before it.
func Load(pinDir string) (*Objects, error) {
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin directory: %w", err)
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	if err := dropStaleStats(pinDir); err != nil {
		return nil, err
	}

	var c4 connect4Objects
	if err := loadConnect4Objects(&c4, opts); err != nil {
		return nil, loadError("connect4", err)
	}
	var c6 connect6Objects
	if err := loadConnect6Objects(&c6, opts); err != nil {
		c4.Close()
		return nil, loadError("connect6", err)
	}
	var so sockopsObjects
	if err := loadSockopsObjects(&so, opts); err != nil {
		c4.Close()
		c6.Close()
		return nil, loadError("sockops", err)
	}
	var g4 getpeername4Objects
	if err := loadGetpeername4Objects(&g4, opts); err != nil {
		c4.Close()
		c6.Close()
		so.Close()
		return nil, loadError("getpeername4", err)
	}
	var g6 getpeername6Objects
	if err := loadGetpeername6Objects(&g6, opts); err != nil {
		c4.Close()
		c6.Close()
		so.Close()
		g4.Close()
		return nil, loadError("getpeername6", err)
	}
	var jo jobsObjects
	if err := loadJobsObjects(&jo, opts); err != nil {
		c4.Close()
		c6.Close()
		so.Close()
		g4.Close()
		g6.Close()
		return nil, loadError("jobs", err)
	}
	// The other collections opened their own descriptors of the same
	// pinned maps; keep connect4's and drop theirs.
	c6.connect6Maps.Close()
	so.sockopsMaps.Close()
	g4.getpeername4Maps.Close()
	g6.getpeername6Maps.Close()
	for _, m := range []*ebpf.Map{jo.SluiceByCookie, jo.SluiceByPeer, jo.SluiceConfig, jo.SluiceJobcg, jo.SluiceMarks,
		jo.SluiceNetcfg, jo.SluiceSkOrig, jo.SluiceStats, jo.SluiceTargets} {
		m.Close()
	}

	return &Objects{
		Connect4:     c4.SluiceConnect4,
		Connect6:     c6.SluiceConnect6,
		SockOps:      so.SluiceSockops,
		GetPeername4: g4.SluiceGetpeername4,
		GetPeername6: g6.SluiceGetpeername6,
		Targets:      c4.SluiceTargets,
		Config:       c4.SluiceConfig,
		ByCookie:     c4.SluiceByCookie,
		ByPeer:       c4.SluiceByPeer,
		Stats:        c4.SluiceStats,
		SkOrig:       c4.SluiceSkOrig,
		NetCfg:       c4.SluiceNetcfg,
		Fork:         jo.SluiceFork,
		Exec:         jo.SluiceExec,
		CgroupAttach: jo.SluiceCgroupAttach,
		Signal:       jo.SluiceSignal,
		SysEnter:     jo.SluiceSysEnter,
		Marks:        c4.SluiceMarks,
		JobCgroups:   c4.SluiceJobcg,
		Protect:      jo.SluiceProtect,
		Syscalls:     jo.SluiceSyscalls,
		Tamper:       jo.SluiceTamper,
	}, nil
}

// dropStaleStats removes a pinned counter map of another size (versions
// before the map had room for new counters). Counters are the only state
// that may be lost across an upgrade; every other map keeps its layout, so
// targets, configuration and in-flight origins are re-adopted.
func dropStaleStats(pinDir string) error {
	pin := pinDir + "/sluice_stats"
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned counters: %w", err)
	}
	defer m.Close()
	spec, err := loadConnect4()
	if err != nil {
		return fmt.Errorf("load connect4 spec: %w", err)
	}
	if m.MaxEntries() == spec.Maps["sluice_stats"].MaxEntries {
		return nil
	}
	if err := os.Remove(pin); err != nil {
		return fmt.Errorf("remove outdated counters pin: %w", err)
	}
	return nil
}

func loadError(what string, err error) error {
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load %s: %w: run `sluice uninstall` to remove the old pins (%v)", what, ErrIncompatiblePins, err)
	}
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("load %s: the kernel's verifier refused the program: %+v", what, ve)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// Close releases the file descriptors. Pinned maps and attached links are
// not affected.
func (o *Objects) Close() error {
	var errs []error
	for _, c := range []interface{ Close() error }{o.Connect4, o.Connect6, o.SockOps, o.GetPeername4, o.GetPeername6,
		o.Targets, o.Config, o.ByCookie, o.ByPeer, o.Stats, o.SkOrig, o.NetCfg,
		o.Fork, o.Exec, o.CgroupAttach, o.Signal, o.SysEnter, o.Marks, o.JobCgroups, o.Protect, o.Syscalls, o.Tamper} {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// ReadStats sums the per-CPU counters.
func (o *Objects) ReadStats() (map[string]uint64, error) {
	out := make(map[string]uint64, statMax)
	for s := Stat(0); s < statMax; s++ {
		var per []uint64
		if err := o.Stats.Lookup(uint32(s), &per); err != nil {
			return nil, fmt.Errorf("read stat %s: %w", StatNames[s], err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[StatNames[s]] = sum
	}
	return out, nil
}

// Names returns the counter names in Stat order.
func Names() []string { return StatNames[:] }

// MapNames lists the names under which Load pins maps.
var MapNames = []string{"sluice_targets", "sluice_config", "sluice_by_cookie", "sluice_by_peer", "sluice_stats", "sluice_sk_orig", "sluice_netcfg",
	"sluice_marks", "sluice_jobcg", "sluice_protect", "sluice_syscalls", "sluice_tamper"}
