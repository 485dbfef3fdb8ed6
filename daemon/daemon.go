// Package daemon is sluiced: its configuration (one schema, which sluice
// doctor reads too), and the wiring that runs it: the ruleset and its
// reloads, the interception hooks and runner discovery, the proxy with
// every registered protocol, recordings and their index, approvals, the
// local and remote APIs, metrics. cmd/sluiced keeps only flags, signals
// and exit statuses, so everything here can be imported and tested.
package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/sluicehq/sluice/decoder"
	_ "github.com/sluicehq/sluice/decoder/all" // every protocol of this build registers itself
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/containers"
	"github.com/sluicehq/sluice/interceptor/identity"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/sshca"
	"github.com/sluicehq/sluice/internal/tlsutil"
	"github.com/sluicehq/sluice/ruleset"
)

func NewLogger(cfg *Config) hclog.Logger {
	json := cfg.LogFormat == "json" || cfg.LogFormat == "auto" && !term.IsTerminal(int(os.Stderr.Fd()))
	return hclog.New(&hclog.LoggerOptions{
		Name:       "sluiced",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: json,
		Output:     os.Stderr,
	})
}

// Run runs the daemon until ctx ends. The sequence matters: the ruleset
// is loaded first (its targets go into the kernel map), the proxy listens
// before any hook exists, the hooks are attached (or re-adopted) once the
// kernel maps know where the proxy is, and on the way out the daemon drops
// only its own handles so the pinned hooks keep refusing traffic until a
// new daemon takes over.
func Run(ctx context.Context, cfg *Config, log hclog.Logger) error {
	// 0. What the config alone decides comes first, before anything that
	// needs root or the kernel: a bad config is reported as such, on any
	// machine and as any user.
	rm := &rules{cfg: cfg, log: log.Named("rules")}
	rs, source, err := rm.initial()
	if err != nil {
		return err
	}
	if err := preflight(cfg); err != nil {
		return err
	}
	if err := interceptor.Probe(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return dataDirError(cfg, err)
	}

	if rm.pull != nil {
		rs, source = rm.pull.atStart(ctx, rs, source)
	}

	// 1. The ruleset.
	rm.store = ruleset.NewStore(rs, source)
	rm.warnUndecoded(rs)

	// 2. Listen.
	// Listen takes the sockets a socket unit passed (and unsets the
	// variables that say so).
	activated := os.Getenv("LISTEN_FDS") != "" && os.Getenv("LISTEN_PID") == strconv.Itoa(os.Getpid())
	var containerAddrs []netip.Addr
	var cc Containers
	if cfg.Containers != nil {
		cc = *cfg.Containers
		// The addresses containers reach the proxy at go on lo first, and
		// are checked to be local, before anything listens on them or the
		// hooks send connects there.
		for _, a := range []netip.Addr{cc.Addr4, cc.Addr6} {
			if !a.IsValid() {
				continue
			}
			if err := interceptor.AddLocalAddr(a); err != nil {
				return RuntimeError(err, fmt.Sprintf("give the containers block in %s an address this host can put on lo (address_ipv4, address_ipv6 = \"none\" for no IPv6)", cfg.Path), "container address")
			}
			containerAddrs = append(containerAddrs, a)
		}
		// The runtime's cgroup parent exists before the runtime makes it,
		// so that the hooks are on it before its first container.
		if mount, err := interceptor.Cgroup2Mount(); err == nil {
			if err := os.Mkdir(filepath.Join(mount, cc.Cgroup), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				log.Error("cannot create the containers cgroup", "cgroup", cc.Cgroup, "error", err)
			}
		}
	}
	lns, err := interceptor.Listen(cfg.ProxyPort, containerAddrs, log.Named("proxy"))
	if err != nil {
		if errno := syscall.Errno(0); activated && !errors.As(err, &errno) {
			// Not the kernel refusing a listener: the passed sockets do
			// not fit the config, which the next start would find too.
			return configError(err, fmt.Sprintf("make sluiced.socket's ListenStream= (systemctl edit sluiced.socket) and proxy_port in %s agree, then restart sluiced.socket and sluiced", cfg.Path),
				"the listening sockets the service manager passed")
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return RuntimeError(err, fmt.Sprintf("stop the process that holds it (a sluiced that is stopping frees it by itself), or change proxy_port in %s", cfg.Path),
				"proxy_port %d is in use", cfg.ProxyPort)
		}
		return err
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()

	// 3. Attach or re-adopt the hooks.
	ic, err := interceptor.Attach(interceptor.Config{
		Name: cfg.Name, Cgroups: cfg.Cgroups, Scope: cfg.Scope, ProxyPort: cfg.ProxyPort, Mark: cfg.Mark,
		ContainerAddr4: cc.Addr4, ContainerAddr6: cc.Addr6,
		Logger: log.Named("interceptor"),
	}, rs.Targets())
	if err != nil {
		return err
	}
	defer ic.Close()
	rm.ic = ic
	// Runner services running now are hooked before the daemon reports
	// ready; the loop below hooks those that appear later.
	disc := newDiscoverer(cfg, ic, log.Named("discover"))
	disc.scan()

	ca, err := tlsutil.LoadOrCreateCA(cfg.DataDir)
	if err != nil {
		return dataDirError(cfg, err)
	}
	maskKey, err := mask.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return dataDirError(cfg, err)
	}
	sshHostCA, err := loadSSHHostCA(cfg, log.Named("ssh"))
	if err != nil {
		return dataDirError(cfg, err)
	}
	rec, err := newRecorder(cfg, log.Named("recorder"))
	if err != nil {
		return dataDirError(cfg, err)
	}
	defer rec.Close()
	upl, err := startUploads(cfg, rec, log.Named("store"))
	if err != nil {
		return configError(err, "correct the store block in "+cfg.Path, "invalid store block")
	}
	defer upl.stop(0) // early returns; the end of Run waits for uploads first
	evp, err := startEvents(cfg, rec, log.Named("events"))
	if err != nil {
		return dataDirError(cfg, err)
	}
	defer evp.stop(0)
	broker, fleetAp, err := newBroker(cfg, log.Named("approvals"))
	if err != nil {
		return configError(err, "correct the approvals block in "+cfg.Path, "invalid approvals block")
	}
	defer fleetAp.stop() // after the broker's Close: the holds' final states are written
	defer broker.Close(context.Background())
	rec.broker = broker
	idr, err := identity.New(ctx, cfg.Identity, log.Named("identity"))
	if err != nil {
		return configError(err, "correct the identity block in "+cfg.Path, "invalid identity block")
	}
	defer idr.Close()
	// Flows outlive the signal to stop by up to drainTimeout: accepting
	// stops at once, the flows already accepted get to finish.
	flowCtx, cancelFlows := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlows()
	var met *metrics
	sessions := rec.open
	if cfg.MetricsAddr != "" {
		met = newMetrics(broker)
		met.watchUnhooked(disc.unhookedCount)
		sessions = met.wrapSessions(rec.open)
	}
	var docker *containers.Docker
	cst := &containerState{}
	if cfg.Containers != nil && cfg.Containers.DockerSocket != "" {
		docker = containers.NewDocker(cfg.Containers.DockerSocket)
	}
	proxy := &interceptor.Proxy{
		FlowContext: flowCtx,
		IC:          ic,
		Rules:       rm.store.Current,
		Sessions:    sessions,
		Identify: func(ctx context.Context, f *interceptor.Flow) interceptor.Identity {
			var r identity.Result
			if cg, ok := containersCgroupOf(cfg, f.Process.Cgroup); ok {
				r = idr.ResolveContainer(ctx, f.Process.TGID, cg)
			} else {
				r = idr.Resolve(ctx, f.Process.TGID)
			}
			if met != nil {
				met.identity(r)
			}
			id := interceptor.Identity{Identity: r.Identity, Reason: r.Reason, Hints: r.Hints}
			if r.Job.Kind != "" {
				id.Job = r.Job.String()
			}
			if c := f.Process.Container; c != nil && id.Reason != "" {
				id.Reason = fmt.Sprintf("container %s (%s): %s", c.Name, c.Image, id.Reason)
			}
			return id
		},
		Container:   dockerAttribution(cfg, docker),
		Log:         log.Named("proxy"),
		MaxSessions: cfg.MaxSessions,
		Handlers:    map[string]interceptor.Handler{},
		Busy:        map[string]func(net.Conn, int){},
		Refusers:    map[string]interceptor.Refuser{},
	}
	// Every protocol of this build (decoder/all), from the registry: its
	// decoder, or the undecoded handler that relays or refuses as each
	// target says; its refusals in its own terms.
	env := decoder.Env{ClientTLS: ca.ServerConfig(), MaskKey: maskKey, MaxMessage: cfg.MaxMessage, SSHHostCA: sshHostCA}
	for _, p := range decoder.Protocols() {
		env.Log = log.Named(p.Name)
		if p.New != nil {
			proxy.Handlers[p.Name] = p.New(env)
		} else {
			proxy.Handlers[p.Name] = decoder.Undecoded(p.Refuse, env.Log)
		}
		if p.Refuse != nil {
			proxy.Refusers[p.Name] = p.Refuse
		}
		if p.Busy != nil {
			proxy.Busy[p.Name] = p.Busy
		}
	}
	if met != nil {
		proxy.OnFlowEnd = met.flowEnd
		met.watchProxy(proxy)
		if err := met.serve(ctx, cfg.MetricsAddr, log.Named("metrics")); err != nil {
			return listenError(err, "metrics_addr "+cfg.MetricsAddr, fmt.Sprintf("stop the process that holds it, or change metrics_addr in %s", cfg.Path),
				fmt.Sprintf("give a loopback address of this machine as metrics_addr in %s, such as 127.0.0.1:9464", cfg.Path))
		}
	}

	if cfg.PprofAddr != "" {
		go func() {
			mux := http.NewServeMux()
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
			srv := &http.Server{Addr: cfg.PprofAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			log.Warn("serving pprof; do not leave this on in production", "addr", cfg.PprofAddr)
			if err := srv.ListenAndServe(); err != nil {
				log.Error("pprof server failed", "error", err)
			}
		}()
	}

	rep := &tamperReporter{log: log.Named("tamper"), met: met, rec: rec, broker: broker, idr: idr}

	// 4. Control API.
	started := time.Now()
	apiSrv, err := startAPI(cfg, log.Named("api"), rm, rec, func() api.Status {
		st := statusOf(cfg, ic, disc, proxy, rm.store, started)
		st.Containers = cst.status(cfg, containerAddrs)
		st.Tamper = rep.counts()
		st.Uploads = upl.status()
		st.Events = evp.status()
		st.FleetApprovals = fleetAp.status()
		st.Ruleset.Pulled = rm.pull.status()
		for _, r := range broker.List() {
			if r.State == approve.StatePending {
				st.Holds = append(st.Holds, api.Hold{ID: r.ID, Rule: r.Rule, Target: r.Target, Stage: r.Stage, Statement: r.Statement, Deadline: r.Deadline})
			}
		}
		return st
	})
	if err != nil {
		return RuntimeError(err, fmt.Sprintf("check that root can create the api_socket %s and its directory", cfg.APISocket), "control API")
	}
	defer apiSrv.Close()
	if cfg.Remote != nil {
		rsrv, err := startRemote(cfg, ca, rec, func() api.Status { return statusOf(cfg, ic, disc, proxy, rm.store, started) }, log.Named("remote"))
		if err != nil {
			return listenError(err, "remote_api listen address", "stop the process that holds it, or change remote_api's listen in "+cfg.Path,
				"correct the remote_api block in "+cfg.Path)
		}
		defer rsrv.Close()
	}

	var hooked []string
	for _, h := range ic.Cgroups() {
		hooked = append(hooked, h.Path)
	}
	var unhooked []string
	for _, u := range disc.unhookedList() {
		unhooked = append(unhooked, u.Path)
	}
	log.Info("sluiced ready", "name", cfg.Name, "cgroups", hooked, "missing", ic.Missing(), "unhooked", unhooked, "proxy_port", cfg.ProxyPort,
		"ruleset", source, "targets", len(rs.Targets()), "readopted", ic.Readopted(), "api_socket", cfg.APISocket)

	// 5. Serve until told to stop; reload rules and re-resolve hostname
	// targets meanwhile.
	var wg sync.WaitGroup
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			proxy.Serve(ctx, l)
		}()
	}
	wg.Add(5)
	go func() {
		defer wg.Done()
		disc.run(ctx)
	}()
	go func() {
		defer wg.Done()
		retainLoop(ctx, rec, cfg, log)
	}()
	go func() {
		defer wg.Done()
		rm.watch(ctx)
	}()
	go func() {
		defer wg.Done()
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				rm.reload("sighup")
			}
		}
	}()
	go func() {
		defer wg.Done()
		resolveLoop(ctx, ic, rm.store, log)
	}()
	rm.startRulesPull(ctx, &wg, evp)
	// Tamper events: the kernel's, those written while no daemon ran first.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ic.TamperEvents(ctx, func(ev interceptor.TamperEvent) { rep.report(ctx, ev) }); err != nil {
			log.Error("cannot read the kernel's tamper events", "error", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := watchConfig(ctx, cfg, ic, func(ev interceptor.TamperEvent) { rep.report(ctx, ev) }, log.Named("configwatch")); err != nil {
			log.Error("cannot watch the configuration files for changes by jobs", "error", err)
		}
	}()
	if docker != nil {
		cst.runtimeErr.Store("not followed yet")
		w := &containers.Watcher{
			Docker:  docker,
			Covered: ic.Intercepts,
			Kill:    cfg.Containers.Kill,
			Log:     log.Named("containers"),
			OnUnhooked: func(u containers.Unhooked) {
				cst.unhooked.Add(1)
				met.containerUnhooked(u)
			},
			OnError: func(err error) {
				msg := ""
				if err != nil {
					msg = err.Error()
				}
				cst.runtimeErr.Store(msg)
			},
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Run(ctx)
		}()
	}
	<-ctx.Done()
	log.Info("sluiced stopping; pinned hooks stay in place and refuse connections until a daemon is back")
	wg.Wait()
	drained := make(chan struct{})
	go func() {
		proxy.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		log.Warn("flows still open after the drain timeout; ending them", "active", proxy.Stats().FlowsActive, "drain_timeout", drainTimeout)
		cancelFlows()
		<-drained
	}
	rec.waitEnds() // the ended sessions' final index entries and uploads
	upl.stop(uploadOnStop)
	evp.stop(eventsOnStop)
	return nil
}

// preflight checks what the config decides and a person must fix, that
// the ruleset does not cover, before the daemon touches the kernel: the
// approvals admin group exists, and no configured cgroup holds the daemon
// itself.
func preflight(cfg *Config) error {
	if g := cfg.Approvals.AdminGroup; g != "" {
		if _, err := user.LookupGroup(g); err != nil {
			return configError(err, fmt.Sprintf("create the group, or correct or remove admin_group in %s", cfg.Path), "approvals admin_group %q", g)
		}
	}
	if self, err := interceptor.SelfCgroup(); err == nil {
		for _, cg := range cfg.Cgroups {
			s, c := filepath.Clean("/"+self), filepath.Clean("/"+cg)
			if s == c || strings.HasPrefix(s, c+"/") {
				return configError(nil, "run sluiced outside the runner's cgroup (the packaged unit runs it in sluice.slice), or correct the cgroup in "+cfg.Path,
					"sluiced runs in cgroup %s, inside the cgroup %s it is configured to hook", s, c)
			}
		}
	}
	return nil
}

// dataDirError is a failure to create or read the daemon's files under
// data_dir: a full or read-only file system may be cured, so it is not a
// configuration error.
func dataDirError(cfg *Config, err error) error {
	return RuntimeError(err, fmt.Sprintf("check that root can write data_dir %s (with systemd, that it is under ReadWritePaths) and that its file system is not full", cfg.DataDir),
		"prepare data_dir %s", cfg.DataDir)
}

// loadSSHHostCA loads the SSH host CA from data_dir/ssh_host_ca, creating
// it when sluice install has not (the same key either way), and logs
// when this runner's ssh clients do not trust it through the system-wide
// known_hosts file: then they refuse the host certificates the SSH decoder
// presents. An operator who trusts it some other way can ignore that.
func loadSSHHostCA(cfg *Config, log hclog.Logger) (ed25519.PrivateKey, error) {
	path := filepath.Join(cfg.DataDir, sshca.KeyFile)
	key, created, err := sshca.LoadOrCreate(path)
	if err != nil {
		return nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	if created {
		log.Info("created the SSH host CA", "path", path, "public_key", sshca.PublicLine(pub))
	}
	if kh, err := os.ReadFile(sshca.DefaultKnownHosts); err == nil && sshca.Trusted(kh, pub) {
		return key, nil
	}
	log.Info("the system known_hosts file does not trust the SSH host CA: ssh clients will refuse Sluice's host certificates; run sluice install, or add the line sluice ssh-ca prints",
		"known_hosts", sshca.DefaultKnownHosts, "line", sshca.KnownHostsLine(pub))
	return key, nil
}

// listenError classifies a listener that could not be opened for what:
// an address in use may be freed (exit 1, inUseFix); any other failure,
// an address this machine does not have for example, is the config's
// (exit 2, fix).
func listenError(err error, what, inUseFix, fix string) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return RuntimeError(err, inUseFix, "%s is in use", what)
	}
	return configError(err, fix, "%s", what)
}

// drainTimeout is how long a stopping daemon lets the flows it accepted
// finish before it ends them.
const drainTimeout = 10 * time.Second

// resolveLoop re-resolves hostname targets at the shortest resolve_every
// of the active ruleset's targets that name a host.
func resolveLoop(ctx context.Context, ic *interceptor.Interceptor, store *ruleset.Store, log hclog.Logger) {
	for {
		every := time.Duration(0)
		rs := store.Current()
		for _, t := range rs.Targets() {
			for _, a := range t.Addresses {
				if a.Host != "" && (every == 0 || t.ResolveEvery < every) {
					every = t.ResolveEvery
				}
			}
		}
		if every <= 0 {
			every = ruleset.DefaultResolveEvery
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		if every == ruleset.DefaultResolveEvery && !hasHost(store.Current()) {
			continue
		}
		if err := ic.SyncTargets(store.Current().Targets()); err != nil {
			log.Error("re-resolving targets failed; keeping the previous map", "error", err)
		}
	}
}

// retainLoop applies the recording retention limits hourly.
func retainLoop(ctx context.Context, rec *recorder, cfg *Config, log hclog.Logger) {
	for {
		removed, err := rec.index.Retain(cfg.Recording.MaxAge, cfg.Recording.MaxBytes)
		if err != nil {
			log.Error("recording retention failed", "error", err)
		} else if len(removed) > 0 {
			log.Info("recordings removed by retention", "sessions", len(removed))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
	}
}

func hasHost(rs *ruleset.Ruleset) bool {
	for _, t := range rs.Targets() {
		for _, a := range t.Addresses {
			if a.Host != "" {
				return true
			}
		}
	}
	return false
}

func statusOf(cfg *Config, ic *interceptor.Interceptor, disc *discoverer, p *interceptor.Proxy, store *ruleset.Store, started time.Time) api.Status {
	st := api.Status{
		Name: cfg.Name, PID: os.Getpid(), ProxyPort: cfg.ProxyPort,
		PinDir: interceptor.PinDir(cfg.Name), Readopted: ic.Readopted(), Started: started,
		Unhooked: disc.unhookedList(),
	}
	for _, h := range ic.Cgroups() {
		st.Cgroups = append(st.Cgroups, api.Cgroup{Path: h.Path, ID: h.ID, Source: h.Source})
	}
	st.Scope = cfg.Scope
	for _, j := range ic.JobCgroups() {
		st.JobCgroups = append(st.JobCgroups, api.Cgroup{Path: j.Path, ID: j.ID, Source: "job"})
	}
	if len(st.Cgroups) > 0 {
		st.Cgroup = st.Cgroups[0].Path
	}
	rs := store.Current()
	for _, t := range rs.Targets() {
		at := api.Target{Name: t.Name, Protocol: t.Protocol, Decoded: decoder.ModeOf(t) == decoder.Decoded, Mode: decoder.ModeOf(t).String()}
		if !at.Decoded && t.Protocol != ruleset.ProtoTCP {
			at.Why = decoder.WhyUndecoded(t)
		}
		if !at.Decoded {
			at.Undecoded, at.Rule = t.Undecoded, decoder.UndecodedRule(t)
		} else if p, _ := decoder.Lookup(t.Protocol); p.DecodedWhen != "" {
			// Decoded flow by flow (k8s): Why, Undecoded and Rule say
			// what the flows that are not decoded get.
			at.Why, at.Undecoded, at.Rule = p.NotDecoded, t.Undecoded, decoder.UndecodedRule(t)
		}
		for _, a := range t.Addresses {
			at.Addresses = append(at.Addresses, a.String())
		}
		st.Targets = append(st.Targets, at)
	}
	rst := store.Status()
	st.Ruleset = api.Ruleset{
		Generation: rst.Generation, Source: rst.Source, Loaded: rst.Loaded, Digest: rst.Digest,
		Mode: rs.Mode().String(), Signed: cfg.RulesKey != nil,
	}
	if le := rst.LastError; le != nil {
		st.Ruleset.LastError = &api.RulesetError{Source: le.Source, At: le.At, Errors: loadErrorLines(le)}
	}
	ps := p.Stats()
	st.Flows = api.Flows{Total: ps.FlowsTotal, Active: ps.FlowsActive, NoOrigin: ps.NoOrigin, Refused: ps.FlowsRefused, Denied: ps.FlowsDenied, TooMany: ps.TooMany}
	st.Kernel, _ = ic.Stats()
	return st
}

// startAPI serves the control API on a unix socket that only root may
// open (mode 0600 in a 0700 directory).
func startAPI(cfg *Config, log hclog.Logger, rm *rules, rec *recorder, status func() api.Status) (*http.Server, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.APISocket), 0o700); err != nil {
		return nil, fmt.Errorf("create api socket dir: %w", err)
	}
	if err := os.Remove(cfg.APISocket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale api socket: %w", err)
	}
	ln, err := net.Listen("unix", cfg.APISocket)
	if err != nil {
		return nil, fmt.Errorf("listen on api socket: %w", err)
	}
	mode := os.FileMode(0o600)
	if g := cfg.Approvals.AdminGroup; g != "" {
		// The admin group may connect; each endpoint still checks who.
		grp, err := user.LookupGroup(g)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("admin_group %q: %w", g, err)
		}
		gid, _ := strconv.Atoi(grp.Gid)
		if err := os.Chown(cfg.APISocket, 0, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("api socket group: %w", err)
		}
		os.Chmod(filepath.Dir(cfg.APISocket), 0o750)
		os.Chown(filepath.Dir(cfg.APISocket), 0, gid)
		mode = 0o660
	}
	if err := os.Chmod(cfg.APISocket, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict api socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, status())
	})
	rec.routes(mux)
	approvalRoutes(mux, rec.broker, func(r *http.Request) (approve.Approver, error) {
		return localApprover(r.Context(), cfg.Approvals.AdminGroup)
	})
	mux.HandleFunc("POST /v1/rules", func(w http.ResponseWriter, r *http.Request) {
		// The socket is root's alone (0600), and a push must also come
		// from uid 0 by the kernel's word.
		if uid, ok := peerUID(r.Context()); !ok || uid != 0 {
			api.WriteError(w, http.StatusForbidden, errors.New("rules push is for root only"))
			return
		}
		var req api.PushRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&req); err != nil {
			api.WriteError(w, http.StatusBadRequest, fmt.Errorf("decode push: %w", err))
			return
		}
		b := &ruleset.Bundle{Files: map[string][]byte{}, Signature: req.Signature}
		for n, c := range req.Files {
			b.Files[n] = []byte(c)
		}
		ok, msgs := rm.push(b)
		resp := api.PushResponse{Accepted: ok, Messages: msgs, Ruleset: status().Ruleset}
		code := http.StatusOK
		if !ok {
			code = http.StatusUnprocessableEntity
		}
		api.WriteJSON(w, code, resp)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ConnContext: withPeer}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server failed", "error", err)
		}
	}()
	return srv, nil
}

type peerKey struct{}

// withPeer remembers the unix socket peer's credentials for handlers.
func withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred.Uid)
}

func peerUID(ctx context.Context) (uint32, bool) {
	uid, ok := ctx.Value(peerKey{}).(uint32)
	return uid, ok
}
