package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/runners"
	"github.com/sluicehq/sluice/internal/api"
)

// discoverer keeps the hooked cgroups in step with the host: it hooks the
// configured cgroups and, with a discover block, every runner service
// found under the discovery root, whenever they (re)appear. A runner
// service gets a new cgroup each time it starts, so the configured ones
// are re-checked too. It only ever adds hooks; pins of cgroups that died
// are cleaned up, and nothing else is ever removed.
type discoverer struct {
	cfg   *Config
	ic    *interceptor.Interceptor
	log   hclog.Logger
	every time.Duration
	// reported remembers the last refusal logged per cgroup, so a refusal
	// that stays the same is logged once, not at every rescan.
	reported map[string]string
	// wasMissing remembers the configured cgroups found missing before:
	// the first time is logged at error level, later times (a runner
	// service restarting) at warn.
	wasMissing map[string]bool
	now        func() time.Time

	mu sync.Mutex
	// unhooked are the wanted cgroups not hooked, by path: status serves
	// them (api.Status.Unhooked) and sluice_cgroups_unhooked counts them.
	unhooked map[string]api.Unhooked
}

func newDiscoverer(cfg *Config, ic *interceptor.Interceptor, log hclog.Logger) *discoverer {
	d := &discoverer{cfg: cfg, ic: ic, log: log, every: 30 * time.Second, reported: map[string]string{},
		wasMissing: map[string]bool{}, now: time.Now, unhooked: map[string]api.Unhooked{}}
	if cfg.Discover != nil {
		d.every = cfg.Discover.Every
	}
	return d
}

// want is a cgroup the daemon should hook.
type want struct {
	cgroup, source string
	runner         runners.Runner
}

// scan hooks every wanted cgroup that is not hooked yet.
func (d *discoverer) scan() {
	d.ic.Prune()
	// A container address someone took off lo would send containers'
	// connects to the default route: it is put back, or withdrawn from
	// the hooks (containers' connects to targets are then refused).
	if err := d.ic.CheckContainerAddrs(); err != nil {
		d.log.Error("container address", "error", err)
	}
	var wants []want
	for _, cg := range d.cfg.Cgroups {
		wants = append(wants, want{cgroup: cg, source: interceptor.SourceConfig, runner: runners.Runner{Kind: runners.Classify(filepath.Base(cg)), Unit: filepath.Base(cg)}})
	}
	if dc := d.cfg.Discover; dc != nil {
		found, err := runners.Find(d.ic.Mount(), dc.Root)
		if err != nil {
			d.report(dc.Root, "runner discovery failed", err)
		} else {
			delete(d.reported, dc.Root)
		}
		for _, r := range found {
			wants = append(wants, want{cgroup: r.Cgroup, source: interceptor.SourceDiscovered, runner: r})
		}
	}
	wanted := map[string]bool{}
	for _, w := range wants {
		wanted[w.cgroup] = true
		added, err := d.ic.AddCgroup(w.cgroup, w.source)
		switch {
		case err == nil:
			delete(d.reported, w.cgroup)
			d.setHooked(w.cgroup)
			if added {
				d.log.Info("runner cgroup hooked", "cgroup", w.cgroup, "kind", w.runner.Kind, "unit", w.runner.Unit, "source", w.source)
			}
		case errors.Is(err, interceptor.ErrCgroupMissing) && w.source == interceptor.SourceConfig:
			d.missing(w)
		case errors.Is(err, interceptor.ErrCgroupMissing), errors.Is(err, interceptor.ErrCovered):
			// Gone again since the scan, or below a hooked cgroup: its
			// connects are intercepted already.
			d.setHooked(w.cgroup)
		default:
			d.setUnhooked(w, "sluiced refuses to hook it: "+err.Error())
			d.report(w.cgroup, "runner cgroup refused", err)
		}
	}
	// A discovered runner that went away is no longer wanted.
	d.mu.Lock()
	for p := range d.unhooked {
		if !wanted[p] {
			delete(d.unhooked, p)
		}
	}
	d.mu.Unlock()
}

// missing records a configured cgroup that does not exist. While it is
// missing, nothing in it is intercepted, though the daemon reports
// ready: the first time is logged at error level with the fix, and
// status lists it under Unhooked until it is hooked.
func (d *discoverer) missing(w want) {
	if !d.setUnhooked(w, missingReason) {
		return // already listed: logged when it went missing
	}
	level := hclog.Error
	if d.wasMissing[w.cgroup] {
		level = hclog.Warn // a runner service that restarts: seen before
	}
	d.wasMissing[w.cgroup] = true
	d.log.Log(level, "configured cgroup does not exist, so nothing in it is intercepted: start the runner service, or correct cgroup/cgroups in the config (sluice install writes them); sluiced hooks it as soon as it appears",
		"cgroup", w.cgroup, "config", d.cfg.Path)
}

// missingReason is an Unhooked reason for a configured cgroup that does
// not exist.
const missingReason = "the cgroup does not exist (runner service stopped, or a wrong path in the config): nothing in it is intercepted; sluiced hooks it when it appears"

// setUnhooked lists w as not hooked, for reason, keeping since when it
// first was. It reports whether w was not listed before.
func (d *discoverer) setUnhooked(w want, reason string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	u, listed := d.unhooked[w.cgroup]
	if !listed {
		u = api.Unhooked{Path: w.cgroup, Source: w.source, Since: d.now()}
	}
	u.Reason = reason
	d.unhooked[w.cgroup] = u
	return !listed
}

// setHooked takes cgroup off the unhooked list.
func (d *discoverer) setHooked(cgroup string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.unhooked, cgroup)
}

// unhookedList returns the wanted cgroups not hooked, sorted by path.
// It is safe for concurrent use.
func (d *discoverer) unhookedList() []api.Unhooked {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]api.Unhooked, 0, len(d.unhooked))
	for _, u := range d.unhooked {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// unhookedCount is len(unhookedList()), for the metric.
func (d *discoverer) unhookedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.unhooked)
}

func (d *discoverer) report(key, msg string, err error) {
	if d.reported[key] == err.Error() {
		return
	}
	d.reported[key] = err.Error()
	d.log.Warn(msg, "cgroup", key, "error", err)
}

// run rescans every d.every, and at once when a directory is created where
// runner cgroups appear or go (inotify on the discovery root and its slices, and
// on the parents of the configured cgroups), until ctx ends.
func (d *discoverer) run(ctx context.Context) {
	wake := make(chan struct{}, 1)
	stop := d.watch(wake)
	defer stop()
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
			// Let a burst of mkdirs settle.
			time.Sleep(20 * time.Millisecond)
		}
		d.scan()
	}
}

// watch sends to wake when a directory is created under the watched
// cgroups. Without inotify the timer alone rescans.
func (d *discoverer) watch(wake chan<- struct{}) (stop func()) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		d.log.Warn("no inotify; runner cgroups are found by the timer only", "every", d.every, "error", err)
		return func() {}
	}
	f := os.NewFile(uintptr(fd), "inotify")
	dirs := map[string]bool{}
	for _, cg := range d.cfg.Cgroups {
		dirs[filepath.Dir(filepath.Join(d.ic.Mount(), cg))] = true
	}
	if dc := d.cfg.Discover; dc != nil {
		root := filepath.Join(d.ic.Mount(), dc.Root)
		dirs[root] = true
		if ents, err := os.ReadDir(root); err == nil {
			for _, e := range ents {
				if e.IsDir() && strings.HasSuffix(e.Name(), ".slice") {
					dirs[filepath.Join(root, e.Name())] = true
				}
			}
		}
	}
	for dir := range dirs {
		if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
			d.log.Debug("cannot watch cgroup directory; the timer rescans it", "dir", dir, "error", err)
		}
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	return func() { f.Close() }
}
