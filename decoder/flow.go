package decoder

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/ruleset"
)

// Process is what the kernel saw of the process that connected. Exe is read
// from /proc when the proxy accepts and is empty if the process is gone.
type Process struct {
	PID      uint32 // thread id
	TGID     uint32 // process id
	UID      uint32
	GID      uint32
	CgroupID uint64
	Comm     string
	Exe      string
	// Cgroup is the process's cgroup2 path, as /proc/PID/cgroup gives it.
	Cgroup string
	// Netns is the inode number of the process's network namespace (as
	// `ls -l /proc/PID/ns/net` shows it); HostNetns says it is the
	// daemon's own.
	Netns     uint64
	HostNetns bool
	// Container is the container the process runs in; nil for none.
	Container *Container
}

// Container is what the container runtime says of a flow's container.
type Container struct {
	ID      string
	Name    string
	Image   string
	Runtime string
	// Labels are the runtime's labels (a CI runner's among them). They are
	// set by whoever started the container: hints, never identity.
	Labels map[string]string
}

// Flow is one redirected connection.
type Flow struct {
	ID      uint64
	Client  netip.AddrPort // the job's end, as the proxy sees it
	Dest    netip.AddrPort // where the job was connecting
	Target  *ruleset.Target
	Process Process
	Start   time.Time
	// Match is the flow matched against the ruleset active when it was
	// accepted; the flow keeps that ruleset for its whole life.
	Match *ruleset.Match
	// Facts are the flow's facts as the ruleset sees them.
	Facts ruleset.Flow
	// Identity is the flow's workload identity (also in Facts.Identity).
	Identity Identity
	// Session decides the flow's commands and records it.
	Session *enforcer.Session
}

// Result is what a Handler reports when a flow ends.
type Result struct {
	BytesFromClient int64
	BytesToClient   int64
	Err             error
	// Fields are extra key/value pairs for the flow log line.
	Fields []any
}

// DialFunc connects to the flow's original destination.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Handler serves one flow: it owns client and must close it. dial reaches
// the original destination, with SO_MARK set so the hooks let it through.
type Handler func(ctx context.Context, f *Flow, client net.Conn, dial DialFunc) Result

// Refuser tells a client, in its protocol's terms, that the ruleset denies
// its connection, and closes c. Protocols without one get a closed
// connection.
type Refuser func(c net.Conn, rule, reason string)

// Identity is a flow's workload identity as the proxy records it.
type Identity struct {
	ruleset.Identity
	// Job names the CI job ("github:PID@START"), empty when none was found.
	Job string
	// Reason says why the level is not oidc.
	Reason string
	// Hints are environment values the job claims but nothing verified.
	Hints map[string]string
}
