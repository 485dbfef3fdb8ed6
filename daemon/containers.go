package daemon

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/interceptor/containers"
	"github.com/sluicehq/sluice/internal/api"
)

// containerState is what status says of container jobs.
type containerState struct {
	runtimeErr atomic.Value // string
	unhooked   atomic.Uint64
}

func (s *containerState) status(cfg *Config, addrs []netip.Addr) *api.Containers {
	cc := cfg.Containers
	if cc == nil {
		return nil
	}
	out := &api.Containers{Cgroup: cc.Cgroup, DockerSocket: cc.DockerSocket, Outside: "alert", Unhooked: s.unhooked.Load()}
	if cc.Kill {
		out.Outside = "kill"
	}
	for _, a := range addrs {
		out.Addresses = append(out.Addresses, a.String())
	}
	if e, _ := s.runtimeErr.Load().(string); e != "" {
		out.RuntimeError = e
	}
	return out
}

// maxLabels bounds the runtime labels a flow carries into its recording;
// maxLabelLen bounds each value.
const (
	maxLabels   = 32
	maxLabelLen = 256
)

// clip bounds a label's key or value (whoever starts a container chooses
// them) to maxLabelLen bytes.
func clip(s string) string {
	if len(s) > maxLabelLen {
		return s[:maxLabelLen]
	}
	return s
}

// inContainersCgroup reports whether a process cgroup path is below the
// containers block's cgroup: only there does a cgroup named like a
// container id belong to the runtime. Elsewhere a job could name a cgroup
// of its own that way to pass for a container.
func inContainersCgroup(cfg *Config, cgroup string) bool {
	if cfg.Containers == nil {
		return false
	}
	rel := strings.Trim(cgroup, "/")
	return strings.HasPrefix(rel, cfg.Containers.Cgroup+"/")
}

// containersCgroupOf returns the container's own cgroup for a process
// below the containers cgroup; ok is false for every other process, which
// costs one prefix comparison on the flow's path.
func containersCgroupOf(cfg *Config, cgroup string) (string, bool) {
	if !inContainersCgroup(cfg, cgroup) {
		return "", false
	}
	return containers.CgroupOf(cgroup)
}

// dockerAttribution returns the proxy's container lookup: the container
// id from the process's cgroup, then its name, image and labels from
// Docker. A container the runtime cannot describe keeps its id. Without a
// Docker client only the id is known.
func dockerAttribution(cfg *Config, d *containers.Docker) func(ctx context.Context, cgroup string) *decoder.Container {
	return func(ctx context.Context, cgroup string) *decoder.Container {
		if !inContainersCgroup(cfg, cgroup) {
			return nil
		}
		id, ok := containers.IDFromCgroup(cgroup)
		if !ok {
			return nil
		}
		out := &decoder.Container{ID: id}
		if d == nil {
			return out
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := d.Inspect(ctx, id)
		if err != nil {
			return out
		}
		out.Name, out.Image, out.Runtime = c.Name, c.Image, c.Runtime
		if len(c.Labels) > 0 {
			out.Labels = make(map[string]string, min(len(c.Labels), maxLabels))
			for k, v := range c.Labels {
				if len(out.Labels) == maxLabels {
					break
				}
				out.Labels[clip(k)] = clip(v)
			}
		}
		return out
	}
}
