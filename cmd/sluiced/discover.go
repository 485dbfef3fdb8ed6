package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/runners"
)

// discoverer keeps the hooked cgroups in step with the host: it hooks the
// configured cgroups and, with a discover block, every runner service
// found under the discovery root, whenever they (re)appear. A runner
// service gets a new cgroup each time it starts, so the configured ones
// are re-checked too. It only ever adds hooks; pins of cgroups that died
// are cleaned up, and nothing else is ever removed.
type discoverer struct {
	cfg   *config
	ic    *interceptor.Interceptor
	log   hclog.Logger
	every time.Duration
	// reported remembers the last refusal logged per cgroup, so a refusal
	// that stays the same is logged once, not at every rescan.
	reported map[string]string
}

func newDiscoverer(cfg *config, ic *interceptor.Interceptor, log hclog.Logger) *discoverer {
	d := &discoverer{cfg: cfg, ic: ic, log: log, every: 30 * time.Second, reported: map[string]string{}}
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
	for _, w := range wants {
		added, err := d.ic.AddCgroup(w.cgroup, w.source)
		switch {
		case err == nil:
			delete(d.reported, w.cgroup)
			if added {
				d.log.Info("runner cgroup hooked", "cgroup", w.cgroup, "kind", w.runner.Kind, "unit", w.runner.Unit, "source", w.source)
			}
		case errors.Is(err, interceptor.ErrCgroupMissing) && w.source == interceptor.SourceConfig:
			d.report(w.cgroup, "configured cgroup does not exist (is the runner service stopped?); hooked when it appears", err)
		case errors.Is(err, interceptor.ErrCgroupMissing), errors.Is(err, interceptor.ErrCovered):
			// Gone again since the scan, or below a hooked cgroup: its
			// connects are intercepted already.
		default:
			d.report(w.cgroup, "runner cgroup refused", err)
		}
	}
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
