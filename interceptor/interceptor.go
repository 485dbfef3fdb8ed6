// Package interceptor puts Sluice on a cgroup's data path: it probes the
// kernel, loads the eBPF programs, attaches them to the runner's cgroup
// with pinned links, keeps the kernel's target map in step with the
// configuration, and runs the proxy listener that receives the redirected
// connections, finds each one's origin, dials the real destination with
// SO_MARK and hands both ends to a protocol decoder.
//
// Attachments outlive the daemon on purpose: the links are pinned under
// /sys/fs/bpf/sluice/<name>/, so a crashed or restarting daemon leaves the
// redirect in place and clients get "connection refused" until a new daemon
// re-adopts the pins. Only Uninstall removes them.
package interceptor

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/bpf"
)

// BPFFSRoot is where bpffs is expected; pins live in BPFFSRoot/sluice/<name>.
var BPFFSRoot = "/sys/fs/bpf"

// DefaultMark is the SO_MARK the daemon sets on its upstream sockets when
// the configuration names none.
const DefaultMark = 0x51c3

// PinDir returns the directory holding the pins of the named installation.
func PinDir(name string) string {
	return filepath.Join(BPFFSRoot, "sluice", name)
}

// Config says where and how to intercept.
type Config struct {
	// Name picks the pin directory, so several installations (a test's and
	// a real one) never share kernel objects. Default "default".
	Name string
	// Cgroups are the cgroups to hook at Attach, relative to the cgroup2
	// mount. The root, any cgroup holding the daemon itself, and a cgroup
	// nested in (or containing) another hooked one are refused. A cgroup
	// that does not exist yet is not an error: Attach reports it in
	// Missing, and AddCgroup hooks it once it appears.
	Cgroups []string
	// ProxyPort is the listener port on 127.0.0.1 and ::1.
	ProxyPort uint16
	// Mark is set with SO_MARK on upstream sockets. Default DefaultMark.
	Mark uint32
	// Scope, when set, is a cgroup above the job cgroups (Cgroups) where
	// the connect programs are attached instead of on each job cgroup:
	// they act for job tasks only (marked, or in a job cgroup), so a job
	// task that moves anywhere below Scope stays intercepted, and other
	// tasks below it are left alone. The job cgroups must be below it.
	Scope string
	// ContainerAddr4 and ContainerAddr6, when set, are where connects made
	// in other network namespaces (containers) are sent: addresses on this
	// host's loopback device that the proxy also listens on (AddLocalAddr
	// puts them there). Attach refuses one the kernel does not deliver
	// locally. Unset, such connects to a target are refused.
	ContainerAddr4, ContainerAddr6 netip.Addr
	// Logger receives attach and sync messages. Default: a null logger.
	Logger hclog.Logger
}

// hooks are the attachments, in the order they are made.
var hooks = []struct {
	pin    string
	attach ebpf.AttachType
	prog   func(*bpf.Objects) *ebpf.Program
}{
	{"link_sockops", ebpf.AttachCGroupSockOps, func(o *bpf.Objects) *ebpf.Program { return o.SockOps }},
	{"link_connect4", ebpf.AttachCGroupInet4Connect, func(o *bpf.Objects) *ebpf.Program { return o.Connect4 }},
	{"link_connect6", ebpf.AttachCGroupInet6Connect, func(o *bpf.Objects) *ebpf.Program { return o.Connect6 }},
	{"link_getpeername4", ebpf.AttachCgroupInet4GetPeername, func(o *bpf.Objects) *ebpf.Program { return o.GetPeername4 }},
	{"link_getpeername6", ebpf.AttachCgroupInet6GetPeername, func(o *bpf.Objects) *ebpf.Program { return o.GetPeername6 }},
}

// Interceptor is an attached installation. It is safe for concurrent use.
// Close releases the daemon's handles only: the pinned links keep
// redirecting, and the pinned maps keep their contents.
type Interceptor struct {
	cfg   Config
	log   hclog.Logger
	mount string
	objs  *bpf.Objects

	hookMu    sync.Mutex
	hooked    map[uint64]*hookedCgroup // by cgroup id
	readopted bool
	missing   []string

	mu      sync.Mutex
	targets *targetTable

	tracing []link.Link // the job programs' links

	jobMu sync.Mutex
	jobs  map[uint64]string // job cgroups: id -> path
}

// Attach probes the kernel, loads the programs, writes targets and
// configuration into the maps, and then hooks the cgroups, in that order,
// so that no connect is ever hooked before the kernel knows where the
// proxy is. Links pinned by an earlier daemon of the same Name are
// re-adopted, whichever cgroup they hook: each is kept and switched to the
// newly loaded program, so interception never lapses. Pins whose cgroup no
// longer exists are removed. A configured cgroup that does not exist yet
// is listed by Missing rather than failing the attach.
func Attach(cfg Config, targets []*Target) (*Interceptor, error) {
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Mark == 0 {
		cfg.Mark = DefaultMark
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ProxyPort == 0 {
		return nil, errors.New("attach: proxy port is not set")
	}
	if err := Probe(); err != nil {
		return nil, err
	}
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	// Refuse a bad configuration before touching any kernel object.
	for _, rel := range cfg.Cgroups {
		if _, err := checkCgroup(mount, rel); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
	}
	if err := ensureBPFFS(); err != nil {
		return nil, err
	}

	objs, err := bpf.Load(PinDir(cfg.Name))
	if err != nil {
		return nil, err
	}
	ic := &Interceptor{cfg: cfg, log: cfg.Logger, mount: mount, objs: objs, hooked: map[uint64]*hookedCgroup{}}
	if err := ic.SyncTargets(targets); err != nil {
		objs.Close()
		return nil, err
	}
	if err := ic.writeNetCfg(cfg.ContainerAddr4, cfg.ContainerAddr6); err != nil {
		objs.Close()
		return nil, fmt.Errorf("attach: %w", err)
	}
	if err := ic.writeConfig(true); err != nil {
		objs.Close()
		return nil, err
	}
	if err := ic.adopt(); err != nil {
		ic.Close()
		return nil, err
	}
	if err := ic.writeJobConfig(); err != nil {
		ic.Close()
		return nil, err
	}
	// The job programs mark before any connect program acts on marks.
	if err := ic.attachTracing(); err != nil {
		ic.Close()
		return nil, err
	}
	if cfg.Scope != "" {
		if _, err := ic.AddCgroup(cfg.Scope, SourceScope); err != nil {
			ic.Close()
			return nil, fmt.Errorf("attach: scope: %w", err)
		}
	}
	for _, rel := range cfg.Cgroups {
		if _, err := ic.AddCgroup(rel, SourceConfig); err != nil {
			if errors.Is(err, ErrCgroupMissing) {
				ic.missing = append(ic.missing, rel)
				// The daemon reports it (at error level, with the fix, and
				// in status) and keeps trying; this line is only for tracing.
				ic.log.Debug("configured cgroup does not exist yet; it is hooked when it appears", "cgroup", rel)
				continue
			}
			ic.Close()
			return nil, err
		}
	}
	return ic, nil
}

func (ic *Interceptor) writeConfig(enabled bool) error {
	c := bpf.Config{ProxyPort: ic.cfg.ProxyPort, Mark: ic.cfg.Mark}
	if enabled {
		c.Enabled = 1
	}
	if err := ic.objs.Config.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write config map: %w", err)
	}
	return nil
}

// Readopted reports whether Attach found and kept links pinned by an
// earlier daemon.
func (ic *Interceptor) Readopted() bool {
	ic.hookMu.Lock()
	defer ic.hookMu.Unlock()
	return ic.readopted
}

// Missing lists the configured cgroups that did not exist at Attach.
func (ic *Interceptor) Missing() []string { return ic.missing }

// Mount returns the cgroup2 mount the installation works under.
func (ic *Interceptor) Mount() string { return ic.mount }

// Stats returns the programs' counters.
func (ic *Interceptor) Stats() (map[string]uint64, error) { return ic.objs.ReadStats() }

// Close releases the daemon's file descriptors. The pinned links stay
// attached and the configuration stays enabled: redirected connects then
// find no listener and are refused, which is the fail-closed state.
func (ic *Interceptor) Close() error {
	var errs []error
	ic.hookMu.Lock()
	for _, h := range ic.hooked {
		for _, l := range h.links {
			errs = append(errs, l.Close())
		}
		h.links = nil
	}
	ic.hookMu.Unlock()
	for _, l := range ic.tracing {
		errs = append(errs, l.Close())
	}
	errs = append(errs, ic.objs.Close())
	return errors.Join(errs...)
}
