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
	"os"
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
	// Cgroup is the hooked cgroup, relative to the cgroup2 mount. The root
	// and any cgroup holding the daemon itself are refused.
	Cgroup string
	// ProxyPort is the listener port on 127.0.0.1 and ::1.
	ProxyPort uint16
	// Mark is set with SO_MARK on upstream sockets. Default DefaultMark.
	Mark uint32
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
	cfg        Config
	log        hclog.Logger
	cgroupPath string
	cgroupID   uint64
	objs       *bpf.Objects
	links      []link.Link
	readopted  bool

	mu      sync.Mutex
	targets *targetTable
}

// Attach probes the kernel, loads the programs, writes targets and
// configuration into the maps, and then attaches the programs to the
// cgroup, in that order, so that no connect is ever hooked before the
// kernel knows where the proxy is. Pins left by an earlier daemon of the
// same Name are re-adopted: their links are kept and switched to the newly
// loaded programs, so interception never lapses.
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
	cgPath, err := CgroupPath(mount, cfg.Cgroup)
	if err != nil {
		return nil, err
	}
	if self, err := SelfCgroup(); err == nil && within(self, cfg.Cgroup) {
		return nil, fmt.Errorf("attach: the daemon itself runs in %s, inside the cgroup to hook (%s); run it outside the runner's cgroup", self, cfg.Cgroup)
	}
	cgID, err := CgroupID(cgPath)
	if err != nil {
		return nil, fmt.Errorf("attach: cgroup %s: %w", cfg.Cgroup, err)
	}
	if err := ensureBPFFS(); err != nil {
		return nil, err
	}

	objs, err := bpf.Load(PinDir(cfg.Name))
	if err != nil {
		return nil, err
	}
	ic := &Interceptor{cfg: cfg, log: cfg.Logger, cgroupPath: cgPath, cgroupID: cgID, objs: objs}
	if err := ic.SyncTargets(targets); err != nil {
		objs.Close()
		return nil, err
	}
	if err := ic.writeConfig(true); err != nil {
		objs.Close()
		return nil, err
	}
	if err := ic.attach(); err != nil {
		ic.Close()
		return nil, err
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

// attach makes or re-adopts the three links. A pinned link that belongs to
// another cgroup is an error: the operator moved the runner, and only
// `sluice uninstall` may take interception away from the old one.
func (ic *Interceptor) attach() error {
	dir := PinDir(ic.cfg.Name)
	cg, err := os.Open(ic.cgroupPath)
	if err != nil {
		return fmt.Errorf("open cgroup: %w", err)
	}
	defer cg.Close()
	for _, h := range hooks {
		pin := filepath.Join(dir, h.pin)
		prog := h.prog(ic.objs)
		l, err := link.LoadPinnedLink(pin, nil)
		switch {
		case err == nil:
			info, ierr := l.Info()
			if ierr != nil {
				l.Close()
				return fmt.Errorf("read pinned link %s: %w", pin, ierr)
			}
			if c := info.Cgroup(); c == nil || c.CgroupId != ic.cgroupID {
				l.Close()
				return fmt.Errorf("pinned link %s is attached to another cgroup; run `sluice uninstall --name %s` first", pin, ic.cfg.Name)
			}
			// Swap in this daemon's program atomically: the hook never
			// goes empty.
			if err := l.Update(prog); err != nil {
				l.Close()
				return fmt.Errorf("update pinned link %s: %w", pin, err)
			}
			ic.readopted = true
			ic.log.Info("re-adopted pinned link", "pin", pin)
		case errors.Is(err, os.ErrNotExist):
			// The link is pinned below so that it outlives this process:
			// the hook stays in place across daemon crashes and restarts.
			l, err = link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: prog, Attach: h.attach})
			if err != nil {
				if errors.Is(err, ebpf.ErrNotSupported) {
					return fmt.Errorf("attach %s: no BPF link support in this kernel: %w", h.pin, err)
				}
				return fmt.Errorf("attach %s to %s: %w", h.pin, ic.cgroupPath, err)
			}
			if err := l.Pin(pin); err != nil {
				l.Close()
				return fmt.Errorf("pin %s: %w", pin, err)
			}
			ic.log.Info("attached", "hook", h.pin, "cgroup", ic.cfg.Cgroup, "pin", pin)
		default:
			return fmt.Errorf("load pinned link %s: %w", pin, err)
		}
		ic.links = append(ic.links, l)
	}
	return nil
}

// Readopted reports whether Attach found and kept links pinned by an
// earlier daemon.
func (ic *Interceptor) Readopted() bool { return ic.readopted }

// Cgroup returns the hooked cgroup, relative to the cgroup2 mount.
func (ic *Interceptor) Cgroup() string { return ic.cfg.Cgroup }

// Stats returns the programs' counters.
func (ic *Interceptor) Stats() (map[string]uint64, error) { return ic.objs.ReadStats() }

// Close releases the daemon's file descriptors. The pinned links stay
// attached and the configuration stays enabled: redirected connects then
// find no listener and are refused, which is the fail-closed state.
func (ic *Interceptor) Close() error {
	var errs []error
	for _, l := range ic.links {
		errs = append(errs, l.Close())
	}
	ic.links = nil
	errs = append(errs, ic.objs.Close())
	return errors.Join(errs...)
}
