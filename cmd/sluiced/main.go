// Command sluiced is the Sluice daemon: it attaches the interception
// programs to the runner's cgroup, runs the proxy that receives the
// redirected connections, and serves the local control API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"github.com/sluicehq/sluice/decoder/tcp"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
)

func main() {
	os.Exit(run())
}

func run() int {
	configPath := flag.String("config", "/etc/sluice/sluiced.hcl", "path to the daemon's HCL config")
	flag.Parse()

	cfg, diags, files := loadConfig(*configPath)
	if diags.HasErrors() || cfg == nil {
		wr := hcl.NewDiagnosticTextWriter(os.Stderr, files, 100, term.IsTerminal(int(os.Stderr.Fd())))
		wr.WriteDiagnostics(diags)
		return 2
	}
	log := newLogger(cfg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("sluiced stopped", "error", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config) hclog.Logger {
	json := cfg.LogFormat == "json" || cfg.LogFormat == "auto" && !term.IsTerminal(int(os.Stderr.Fd()))
	return hclog.New(&hclog.LoggerOptions{
		Name:       "sluiced",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: json,
		Output:     os.Stderr,
	})
}

// serve runs the daemon until ctx ends. The sequence matters: the proxy
// listens before any hook exists, the hooks are attached (or re-adopted)
// once the kernel maps know where the proxy is, and on the way out the
// daemon drops only its own handles so the pinned hooks keep refusing
// traffic until a new daemon takes over.
func serve(ctx context.Context, cfg *config, log hclog.Logger) error {
	if err := interceptor.Probe(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}

	// 1. Listen.
	lns, err := interceptor.Listen(cfg.ProxyPort, log.Named("proxy"))
	if err != nil {
		return err
	}
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()

	// 2. Attach or re-adopt the hooks.
	ic, err := interceptor.Attach(interceptor.Config{
		Name: cfg.Name, Cgroup: cfg.Cgroup, ProxyPort: cfg.ProxyPort, Mark: cfg.Mark,
		Logger: log.Named("interceptor"),
	}, cfg.Targets)
	if err != nil {
		return err
	}
	defer ic.Close()

	proxy := &interceptor.Proxy{
		IC:       ic,
		Log:      log.Named("proxy"),
		Handlers: map[string]interceptor.Handler{"tcp": tcpHandler},
	}

	// 3. Control API.
	started := time.Now()
	apiSrv, err := startAPI(cfg, log.Named("api"), func() api.Status {
		return statusOf(cfg, ic, proxy, started)
	})
	if err != nil {
		return err
	}
	defer apiSrv.Close()

	log.Info("sluiced ready", "name", cfg.Name, "cgroup", cfg.Cgroup, "proxy_port", cfg.ProxyPort,
		"targets", len(cfg.Targets), "readopted", ic.Readopted(), "api_socket", cfg.APISocket)

	// 4. Serve until told to stop; re-resolve hostname targets meanwhile.
	var wg sync.WaitGroup
	for _, l := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			proxy.Serve(ctx, l)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		resolveLoop(ctx, ic, cfg, log)
	}()
	<-ctx.Done()
	log.Info("sluiced stopping; pinned hooks stay in place and refuse connections until a daemon is back")
	wg.Wait()
	proxy.Wait()
	return nil
}

// tcpHandler relays a flow opaquely.
func tcpHandler(ctx context.Context, f *interceptor.Flow, client net.Conn, dial interceptor.DialFunc) interceptor.Result {
	up, err := dial(ctx)
	if err != nil {
		client.Close()
		return interceptor.Result{Err: fmt.Errorf("dial upstream %s: %w", f.Dest, err)}
	}
	c, err := tcp.Relay(ctx, client, up)
	return interceptor.Result{BytesFromClient: c.ClientToServer, BytesToClient: c.ServerToClient, Err: err}
}

// resolveInterval is how often hostname targets are looked up again.
const resolveInterval = 30 * time.Second

func resolveLoop(ctx context.Context, ic *interceptor.Interceptor, cfg *config, log hclog.Logger) {
	hasHost := false
	for _, t := range cfg.Targets {
		for _, a := range t.Addresses {
			hasHost = hasHost || a.Host != ""
		}
	}
	if !hasHost {
		return
	}
	tk := time.NewTicker(resolveInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			if err := ic.SyncTargets(cfg.Targets); err != nil {
				log.Error("re-resolving targets failed; keeping the previous map", "error", err)
			}
		}
	}
}

func statusOf(cfg *config, ic *interceptor.Interceptor, p *interceptor.Proxy, started time.Time) api.Status {
	st := api.Status{
		Name: cfg.Name, PID: os.Getpid(), Cgroup: cfg.Cgroup, ProxyPort: cfg.ProxyPort,
		PinDir: interceptor.PinDir(cfg.Name), Readopted: ic.Readopted(), Started: started,
	}
	for _, t := range cfg.Targets {
		at := api.Target{Name: t.Name, Protocol: t.Protocol}
		for _, a := range t.Addresses {
			at.Addresses = append(at.Addresses, a.String())
		}
		st.Targets = append(st.Targets, at)
	}
	ps := p.Stats()
	st.Flows = api.Flows{Total: ps.FlowsTotal, Active: ps.FlowsActive, NoOrigin: ps.NoOrigin, Refused: ps.FlowsRefused}
	st.Kernel, _ = ic.Stats()
	return st
}

// startAPI serves the control API on a unix socket that only root may
// open (mode 0600 in a 0700 directory).
func startAPI(cfg *config, log hclog.Logger, status func() api.Status) (*http.Server, error) {
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
	if err := os.Chmod(cfg.APISocket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict api socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server failed", "error", err)
		}
	}()
	return srv, nil
}
