package daemon

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/interceptor/containers"
)

// maxLabels bounds the runtime labels a flow carries into its recording;
// maxLabelLen bounds each value.
const (
	maxLabels   = 32
	maxLabelLen = 256
)

// dockerAttribution returns the proxy's container lookup: the container
// id from the process's cgroup, then its name, image and labels from
// Docker. A container the runtime cannot describe keeps its id. Without a
// Docker client only the id is known.
func dockerAttribution(d *containers.Docker) func(ctx context.Context, cgroup string) *decoder.Container {
	return func(ctx context.Context, cgroup string) *decoder.Container {
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
				if len(v) > maxLabelLen {
					v = v[:maxLabelLen]
				}
				out.Labels[k] = v
			}
		}
		return out
	}
}
