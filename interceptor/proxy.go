package interceptor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/bpf"
	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/internal/procfs"
	"github.com/sluicehq/sluice/ruleset"
)

// The flow types are the decoders' vocabulary (package decoder); these
// names are the same types.
type (
	// Process is what the kernel saw of the process that connected.
	Process = decoder.Process
	// Flow is one redirected connection.
	Flow = decoder.Flow
	// Result is what a Handler reports when a flow ends.
	Result = decoder.Result
	// DialFunc connects to the flow's original destination.
	DialFunc = decoder.DialFunc
	// Handler serves one flow.
	Handler = decoder.Handler
	// Refuser refuses a connection in its protocol's terms.
	Refuser = decoder.Refuser
	// Identity is a flow's workload identity as the proxy records it.
	Identity = decoder.Identity
)

// Flow outcomes, as FlowEnd reports them.
const (
	// OutcomeNoOrigin: the connection had no origin entry (not
	// redirected by the hooks) and was closed unserved.
	OutcomeNoOrigin = "no_origin"
	// OutcomeRefused: the flow was refused before its handler ran (its
	// destination is no longer a target, no decoder for the protocol, or
	// its session cannot be recorded).
	OutcomeRefused = "refused"
	// OutcomeDenied: the ruleset's default denied the flow.
	OutcomeDenied = "denied"
	// OutcomeServed: the handler served the flow and it ended cleanly.
	OutcomeServed = "served"
	// OutcomeError: the handler served the flow and it ended with an
	// error.
	OutcomeError = "error"
	// OutcomeTooMany: refused because MaxSessions flows were open.
	OutcomeTooMany = "too_many_sessions"
)

// DefaultMaxSessions is the cap on open flows when the configuration sets
// none.
const DefaultMaxSessions = 4096

// maxBusyRefusals bounds the goroutines that tell clients past the cap
// why they are refused; past it a connection is closed without a word.
const maxBusyRefusals = 64

// FlowEnd is how one accepted connection ended, for metrics.
type FlowEnd struct {
	// Target and Protocol are empty when no target was found.
	Target, Protocol string
	// Outcome is one of the Outcome constants.
	Outcome string
	// Rule is the rule that denied the flow (OutcomeDenied).
	Rule string
}

// ErrNoOrigin means an accepted connection was not redirected by the hooks
// (or its origin entry is gone); such connections are closed unserved.
var ErrNoOrigin = errors.New("no origin entry for this connection")

// Proxy accepts redirected connections and hands each to the Handler for
// its target's protocol. A protocol without a handler is refused.
type Proxy struct {
	IC *Interceptor
	// Rules returns the active ruleset; every flow is matched against it.
	Rules func() *ruleset.Ruleset
	// Sessions opens a flow's session and its recording once the flow is
	// matched; end finishes both with the flow's result. An error (the
	// recording cannot be written) refuses the flow: fail closed. Nil
	// gives unrecorded sessions.
	Sessions func(ctx context.Context, f *Flow, connect ruleset.Decision) (s *enforcer.Session, end func(Result), err error)
	// Identify returns the workload identity of the connecting process
	// (f.Process is filled in, its container too). Nil gives every flow the
	// unverified level with process facts only.
	Identify func(ctx context.Context, f *Flow) Identity
	// Container returns the container whose cgroup is cgroup, or nil when
	// it is no container's (or the runtime does not know it). Nil: no
	// container attribution.
	Container func(ctx context.Context, cgroup string) *decoder.Container
	Handlers  map[string]Handler
	Refusers  map[string]Refuser
	// MaxSessions caps the flows open at once (0: DefaultMaxSessions).
	// A connection past it is refused with Busy's answer for its
	// protocol (PostgreSQL's "too many connections"), or closed.
	MaxSessions int
	Busy        map[string]func(c net.Conn, limit int)
	Log         hclog.Logger
	DialTimeout time.Duration // default 10s
	// FlowContext, when set, is the context flows run under instead of the
	// one given to Serve, so that accepting can stop while the flows
	// already accepted drain (a daemon being replaced). Cancelling it ends
	// the flows.
	FlowContext context.Context
	// OnFlowEnd, when set, is called once for every accepted connection
	// when it ends or is refused, on the connection's goroutine. It must
	// not block.
	OnFlowEnd func(FlowEnd)

	nextID    atomic.Uint64
	open      atomic.Int64 // accepted connections not yet ended
	busy      atomic.Int64 // refusals past MaxSessions in progress
	tooMany   atomic.Uint64
	total     atomic.Uint64
	active    atomic.Int64
	noOrigin  atomic.Uint64
	refused   atomic.Uint64
	denied    atomic.Uint64
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// ProxyStats are counters for status output.
type ProxyStats struct {
	FlowsTotal   uint64 `json:"flows_total"`
	FlowsActive  int64  `json:"flows_active"`
	NoOrigin     uint64 `json:"no_origin"`
	FlowsRefused uint64 `json:"flows_refused"`
	FlowsDenied  uint64 `json:"flows_denied"`
	// TooMany counts connections refused past max_sessions.
	TooMany uint64 `json:"too_many_sessions"`
	// Open is the accepted connections not yet ended, the number
	// MaxSessions caps (FlowsActive counts only those handed to their
	// protocol's handler).
	Open int64 `json:"open"`
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{FlowsTotal: p.total.Load(), FlowsActive: p.active.Load(), NoOrigin: p.noOrigin.Load(), FlowsRefused: p.refused.Load(), FlowsDenied: p.denied.Load(), TooMany: p.tooMany.Load(), Open: p.open.Load()}
}

// Limit returns the cap on open connections in force: MaxSessions, or
// DefaultMaxSessions when that is 0 or less.
func (p *Proxy) Limit() int {
	if p.MaxSessions <= 0 {
		return DefaultMaxSessions
	}
	return p.MaxSessions
}

// Serve accepts on ln until ctx ends or ln is closed; ln is closed then.
// Flows it accepted keep running (see FlowContext); Wait waits for them.
//
// When ctx ends, the connections the kernel has already completed into
// ln's accept queue are taken and served before ln is closed: closing a
// listener resets what waits in its queue, and those clients had been
// redirected and answered by the kernel (a daemon being replaced must
// leave each connect served or refused, never reset).
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		if d, ok := ln.(interface{ SetDeadline(time.Time) error }); !ok || d.SetDeadline(time.Unix(1, 0)) != nil {
			ln.Close()
		}
	})
	defer stop()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				p.drainQueue(ctx, ln)
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			p.Log.Error("accept failed", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p.accepted(ctx, c)
	}
}

// accepted hands c to its flow's goroutine, or refuses it past the cap.
func (p *Proxy) accepted(ctx context.Context, c net.Conn) {
	fctx := ctx
	if p.FlowContext != nil {
		fctx = p.FlowContext
	}
	limit := int64(p.Limit())
	if p.open.Add(1) > limit {
		p.open.Add(-1)
		p.refuseBusy(c, int(limit))
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.open.Add(-1)
		p.serveConn(fctx, c)
	}()
}

// drainQueue takes every connection waiting in a TCP listener's accept
// queue without waiting for more (accept4 until EAGAIN) and serves each.
// The window in which a connect can still complete into the queue and be
// reset by the close that follows is the few microseconds between the
// last empty accept and that close.
func (p *Proxy) drainQueue(ctx context.Context, ln net.Listener) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return
	}
	tl.SetDeadline(time.Time{})
	rc, err := tl.SyscallConn()
	if err != nil {
		return
	}
	var fds []int
	rc.Read(func(fd uintptr) bool {
		for {
			nfd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			if err != nil {
				return true // EAGAIN: the queue is empty
			}
			fds = append(fds, nfd)
		}
	})
	for _, fd := range fds {
		f := os.NewFile(uintptr(fd), "drained")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			p.Log.Warn("cannot serve a connection taken from the accept queue at stop", "error", err)
			continue
		}
		p.accepted(ctx, c)
	}
	if len(fds) > 0 {
		p.Log.Info("served connections waiting in the accept queue at stop", "count", len(fds))
	}
}

// refuseBusy answers a connection past the session cap: its origin entry
// is taken (so the kernel map does not fill), and the client gets its
// protocol's "too many connections" from a bounded set of goroutines, or
// a close when those are all busy.
func (p *Proxy) refuseBusy(c net.Conn, limit int) {
	p.tooMany.Add(1)
	peer := addrPort(c.RemoteAddr())
	o, err := p.IC.LookupOrigin(peer)
	end := FlowEnd{Outcome: OutcomeTooMany}
	var answer func(net.Conn, int)
	if err == nil {
		dest := netip.AddrPortFrom(netip.AddrFrom16(o.Addr).Unmap(), o.Port)
		if t, ok := p.IC.TargetByID(o.TargetId, dest); ok {
			end.Target, end.Protocol = t.Name, t.Protocol
			answer = p.Busy[t.Protocol]
		}
	}
	p.Log.Warn("flow refused: too many sessions", "max_sessions", limit, "client", peer.String(), "target", end.Target, "pid", o.Tgid)
	p.flowEnd(end)
	if answer == nil || p.busy.Add(1) > maxBusyRefusals {
		if answer != nil {
			p.busy.Add(-1)
		}
		c.Close()
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.busy.Add(-1)
		answer(c, limit)
	}()
}

// Wait blocks until every flow has ended.
func (p *Proxy) Wait() { p.wg.Wait() }

func (p *Proxy) serveConn(ctx context.Context, c net.Conn) {
	peer := addrPort(c.RemoteAddr())
	o, err := p.IC.LookupOrigin(peer)
	if err != nil {
		p.noOrigin.Add(1)
		p.Log.Warn("connection without origin refused", "client", peer.String(), "error", err)
		c.Close()
		p.flowEnd(FlowEnd{Outcome: OutcomeNoOrigin})
		return
	}
	f := &Flow{
		ID:     p.nextID.Add(1),
		Client: peer,
		Dest:   netip.AddrPortFrom(netip.AddrFrom16(o.Addr).Unmap(), o.Port),
		Process: Process{
			PID: o.Pid, TGID: o.Tgid, UID: o.Uid, GID: o.Gid, CgroupID: o.CgroupId,
			Comm:   cString(o.Comm[:]),
			Exe:    readExe(o.Tgid),
			Cgroup: readCgroup(o.Tgid),
		},
		Start: time.Now(),
	}
	f.Process.Netns = readNetns(o.Tgid, o.Pid)
	f.Process.HostNetns = f.Process.Netns != 0 && f.Process.Netns == hostNetns()
	if p.Container != nil && f.Process.Cgroup != "" {
		f.Process.Container = p.Container(ctx, f.Process.Cgroup)
	}
	log := p.Log.With("flow", f.ID)
	t, ok := p.IC.TargetByID(o.TargetId, f.Dest)
	if !ok {
		p.refused.Add(1)
		log.Warn("flow refused: its destination is no longer a target", "orig_dst", f.Dest.String(), "pid", f.Process.TGID)
		c.Close()
		p.flowEnd(FlowEnd{Outcome: OutcomeRefused})
		return
	}
	f.Target = t
	h := p.Handlers[t.Protocol]
	if h == nil {
		p.refused.Add(1)
		log.Error("flow refused: no decoder for the target's protocol", "target", t.Name, "protocol", t.Protocol, "orig_dst", f.Dest.String(), "pid", f.Process.TGID, "comm", f.Process.Comm)
		c.Close()
		p.flowEnd(FlowEnd{Target: t.Name, Protocol: t.Protocol, Outcome: OutcomeRefused})
		return
	}

	// Match the flow against the ruleset once. A flow that no policy
	// matches gets the ruleset's default; when that denies, the flow
	// ends here. Per-statement decisions are the decoder's.
	f.Identity = Identity{Identity: ruleset.Identity{Level: ruleset.LevelUnverified}, Reason: "workload identity is not configured"}
	if p.Identify != nil {
		f.Identity = p.Identify(ctx, f)
	}
	f.Facts = ruleset.Flow{
		Identity: f.Identity.Identity,
		Process: ruleset.Process{
			PID: int64(f.Process.TGID), UID: int64(f.Process.UID), GID: int64(f.Process.GID),
			Exe: f.Process.Exe, Comm: f.Process.Comm, Cgroup: f.Process.Cgroup,
		},
		Target: ruleset.Endpoint{Name: t.Name, Protocol: t.Protocol, Addr: f.Dest},
	}
	f.Match = p.Rules().Match(f.Facts)
	d := f.Match.Decide(&ruleset.Statement{Kind: ruleset.KindConnect}, ruleset.Result{})
	end := func(Result) {}
	if p.Sessions != nil {
		sess, e, err := p.Sessions(ctx, f, d)
		if err != nil {
			p.refused.Add(1)
			log.Error("flow refused: its session cannot be recorded", "target", t.Name, "orig_dst", f.Dest.String(), "error", err)
			if refuse := p.Refusers[t.Protocol]; refuse != nil {
				refuse(c, "sluice/recording-failed", "the session cannot be recorded")
			} else {
				c.Close()
			}
			p.flowEnd(FlowEnd{Target: t.Name, Protocol: t.Protocol, Outcome: OutcomeRefused})
			return
		}
		f.Session, end = sess, e
	} else {
		f.Session = enforcer.NewSession(ctx, f.Match, nil, 0, log)
	}
	// A flow no policy matches gets the ruleset's default; when that
	// denies, the flow ends here. Per-statement decisions are the
	// decoder's.
	if len(f.Match.Policies()) == 0 {
		if d.Enforced() == ruleset.Deny {
			p.denied.Add(1)
			log.Warn("flow denied", "target", t.Name, "orig_dst", f.Dest.String(), "rule", d.Rule.ID, "reason", d.Reason,
				"pid", f.Process.TGID, "uid", f.Process.UID, "comm", f.Process.Comm, "exe", f.Process.Exe,
				"identity", f.Identity.Level, "job", f.Identity.Job, "identity_reason", f.Identity.Reason,
				"netns", f.Process.Netns, "container_id", containerID(f))
			if refuse := p.Refusers[t.Protocol]; refuse != nil {
				refuse(c, d.Rule.ID, d.Reason)
			} else {
				c.Close()
			}
			end(Result{Err: fmt.Errorf("flow denied by rule %s", d.Rule.ID)})
			p.flowEnd(FlowEnd{Target: t.Name, Protocol: t.Protocol, Outcome: OutcomeDenied, Rule: d.Rule.ID})
			return
		}
		if d.Monitor && d.Action == ruleset.Deny {
			log.Warn("flow would be denied (monitor mode)", "target", t.Name, "rule", d.Rule.ID, "reason", d.Reason)
		}
	}
	p.total.Add(1)
	p.active.Add(1)
	defer p.active.Add(-1)

	res := h(ctx, f, c, p.dialer(f))
	end(res)

	kv := []any{
		"identity", f.Identity.Level, "job", f.Identity.Job,
		"policies", f.Match.Policies(),
		"target", t.Name, "protocol", t.Protocol,
		"orig_dst", f.Dest.String(), "client", f.Client.String(),
		"pid", f.Process.TGID, "tid", f.Process.PID, "uid", f.Process.UID, "gid", f.Process.GID,
		"cgroup_id", f.Process.CgroupID, "comm", f.Process.Comm, "exe", f.Process.Exe,
		"netns", f.Process.Netns, "host_netns", f.Process.HostNetns,
		"bytes_from_client", res.BytesFromClient, "bytes_to_client", res.BytesToClient,
		"duration_ms", time.Since(f.Start).Milliseconds(),
	}
	kv = append(kv, res.Fields...)
	if c := f.Process.Container; c != nil {
		kv = append(kv, "container_id", c.ID, "container_name", c.Name, "container_image", c.Image, "container_runtime", c.Runtime)
	}
	if f.Identity.Level != ruleset.LevelOIDC {
		kv = append(kv, "identity_reason", f.Identity.Reason)
	} else {
		for _, c := range []string{"repository", "ref", "run_id", "actor"} {
			if v := f.Identity.Claims[c]; v != "" {
				kv = append(kv, c, v)
			}
		}
	}
	if res.Err != nil {
		log.Warn("flow", append(kv, "error", res.Err)...)
		p.flowEnd(FlowEnd{Target: t.Name, Protocol: t.Protocol, Outcome: OutcomeError})
	} else {
		log.Info("flow", kv...)
		p.flowEnd(FlowEnd{Target: t.Name, Protocol: t.Protocol, Outcome: OutcomeServed})
	}
}

func (p *Proxy) flowEnd(e FlowEnd) {
	if p.OnFlowEnd != nil {
		p.OnFlowEnd(e)
	}
}

func (p *Proxy) dialer(f *Flow) DialFunc {
	mark := int(p.IC.cfg.Mark)
	timeout := p.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	return func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{
			Timeout: timeout,
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
				}); err != nil {
					return err
				}
				if serr != nil {
					return fmt.Errorf("set SO_MARK: %w", serr)
				}
				return nil
			},
		}
		return d.DialContext(ctx, "tcp", f.Dest.String())
	}
}

// LookupOrigin takes (reads and deletes) the origin the sockops program
// stored for a client address. Each origin serves exactly one accept.
func (ic *Interceptor) LookupOrigin(peer netip.AddrPort) (bpf.Origin, error) {
	var o bpf.Origin
	k := bpf.PeerKey{Addr: peer.Addr().As16(), Port: peer.Port()}
	if peer.Addr().Is4() {
		k.Addr = netip.AddrFrom16(peer.Addr().As16()).As16() // As16 maps IPv4 to ::ffff:a.b.c.d
	}
	if err := ic.objs.ByPeer.LookupAndDelete(&k, &o); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return o, ErrNoOrigin
		}
		return o, fmt.Errorf("look up origin: %w", err)
	}
	return o, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func cString(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	s := make([]byte, n)
	for i := range s {
		s[i] = byte(b[i])
	}
	return string(s)
}

// readCgroup returns the cgroup2 path of a process, or "" if it is gone.
func readCgroup(pid uint32) string {
	cg, _ := procfs.Cgroup("/proc", int(pid))
	return cg
}

func containerID(f *Flow) string {
	if f.Process.Container == nil {
		return ""
	}
	return f.Process.Container.ID
}

// readNetns returns the inode of the network namespace of thread tid of
// process pid (a thread may have entered another one), or 0.
func readNetns(pid, tid uint32) uint64 {
	p := "/proc/" + strconv.FormatUint(uint64(pid), 10)
	for _, path := range []string{p + "/task/" + strconv.FormatUint(uint64(tid), 10) + "/ns/net", p + "/ns/net"} {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err == nil {
			return st.Ino
		}
	}
	return 0
}

var hostNetnsOnce = sync.OnceValue(func() uint64 { return readNetns(uint32(os.Getpid()), uint32(os.Getpid())) })

// hostNetns is the inode of the daemon's own network namespace.
func hostNetns() uint64 { return hostNetnsOnce() }

func readExe(pid uint32) string {
	exe, err := os.Readlink("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/exe")
	if err != nil {
		return ""
	}
	return exe
}
