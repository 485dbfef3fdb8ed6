package containers

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/sluicehq/sluice/internal/procfs"
)

// Unhooked is a running container whose processes no hook sees.
type Unhooked struct {
	Container Container
	// Cgroup is where its init process is (a path as /proc/PID/cgroup
	// gives it).
	Cgroup string
	// Killed says whether the Watcher killed it; Err why that failed.
	Killed bool
	Err    error
}

// Watcher keeps the runtime's containers under the hooks: it follows the
// runtime's start events (and lists the running containers when it starts
// and after every reconnect) and checks each container's cgroup against
// the hooked ones. A container outside all of them is reported through
// OnUnhooked, and killed when Kill is set.
//
// The check runs after the runtime reports the start, so the container's
// first few milliseconds are not covered by it; the hooks of the cgroup
// parent set by `sluice install` are what covers containers from their
// first instruction. The Watcher closes the gap a job opens on purpose
// (`docker run --cgroup-parent` elsewhere) as fast as the runtime tells.
type Watcher struct {
	Docker *Docker
	// Covered reports whether the processes of a cgroup (a path as
	// /proc/PID/cgroup gives it) are intercepted.
	Covered func(cgroup string) bool
	// Kill kills a container outside the hooked cgroups.
	Kill bool
	// OnUnhooked is called for each container found outside them.
	OnUnhooked func(Unhooked)
	// OnError is called when the runtime cannot be reached; nil after a
	// reconnect succeeded.
	OnError  func(error)
	Log      hclog.Logger
	ProcRoot string // default /proc

	mu       sync.Mutex
	reported map[string]bool // unhooked containers already reported, until they die
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		errc := make(chan error, 1)
		go func() {
			// Events from the moment the stream opens; the lists below
			// cover what started before, and what a stream that opened
			// late missed.
			errc <- w.Docker.Events(ctx, func(ev Event) {
				switch ev.Action {
				case "start":
					w.Docker.Forget(ev.ID)
					w.Check(ctx, ev.ID)
				case "die":
					w.Docker.Forget(ev.ID)
					w.mu.Lock()
					delete(w.reported, ev.ID)
					w.mu.Unlock()
				}
			})
		}()
		err := w.scan(ctx)
		if err == nil {
			if w.OnError != nil {
				w.OnError(nil)
			}
			backoff = 500 * time.Millisecond
		}
		tick := time.NewTicker(rescanEvery)
	wait:
		for {
			select {
			case serr := <-errc:
				err = errors.Join(err, serr)
				break wait
			case <-tick.C:
				w.scan(ctx)
			}
		}
		tick.Stop()
		if ctx.Err() != nil {
			return
		}
		if w.OnError != nil {
			w.OnError(err)
		}
		w.Log.Error("cannot follow the container runtime; containers started meanwhile are checked when it is back", "socket", w.Docker.Socket(), "error", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// rescanEvery is how often the running containers are listed again while
// the event stream is open.
const rescanEvery = 10 * time.Second

func (w *Watcher) scan(ctx context.Context) error {
	ids, err := w.Docker.Running(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		w.Check(ctx, id)
	}
	return nil
}

// Check checks one container now.
func (w *Watcher) Check(ctx context.Context, id string) {
	c, err := w.Docker.Inspect(ctx, id)
	if err != nil || c.Pid == 0 {
		return // gone already
	}
	root := w.ProcRoot
	if root == "" {
		root = "/proc"
	}
	cg, err := procfs.Cgroup(root, c.Pid)
	if err != nil {
		return
	}
	if w.Covered(cg) {
		return
	}
	w.mu.Lock()
	if w.reported == nil {
		w.reported = map[string]bool{}
	}
	again := w.reported[id]
	if !again && len(w.reported) < cacheSize {
		w.reported[id] = true
	}
	w.mu.Unlock()
	if again && !w.Kill {
		return // reported once; it is alerted, not killed
	}
	u := Unhooked{Container: c, Cgroup: cg}
	if w.Kill {
		u.Err = w.Docker.Kill(ctx, id)
		u.Killed = u.Err == nil
	}
	w.Log.Error("container outside the hooked cgroups: its connections would not be intercepted",
		"container_id", c.ID, "container_name", c.Name, "image", c.Image, "cgroup", cg, "pid", c.Pid,
		"killed", u.Killed, "kill_error", u.Err)
	if w.OnUnhooked != nil {
		w.OnUnhooked(u)
	}
}
