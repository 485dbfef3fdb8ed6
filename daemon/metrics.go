package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/containers"
	"github.com/sluicehq/sluice/interceptor/identity"
	"github.com/sluicehq/sluice/ruleset"
)

// metrics is the daemon's Prometheus registry. Counters are moved by
// hooks the proxy, sessions and identity resolver call (each a label
// lookup and an atomic add); gauges and the recording totals are read
// from the live sessions and the approval broker at scrape time, so the
// query path pays nothing for them.
type metrics struct {
	reg      *prometheus.Registry
	flows    *prometheus.CounterVec
	refused  *prometheus.CounterVec // sessions refused before serving, by reason
	verdicts *prometheus.CounterVec
	idents   *prometheus.CounterVec
	unhooked *prometheus.CounterVec // containers found outside the hooked cgroups
	tampered *prometheus.CounterVec // tamper events by kind
	latency  prometheus.Histogram
	observer *enforcer.Observer

	mu       sync.Mutex
	sessions map[*enforcer.Session]struct{} // open sessions, for the recording queue and bytes
	closed   int64                          // recording bytes of sessions that have ended

	queueDesc, bytesDesc *prometheus.Desc
}

// latencyBuckets span a cached point lookup on loopback (~100 µs) to a
// minutes-long export.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func newMetrics(broker *approve.Broker) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_flows_total",
			Help: "Intercepted connections by target, protocol and outcome (served, error, denied, refused, no_origin, too_many_sessions), counted when they end.",
		}, []string{"target", "protocol", "outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_sessions_refused_total",
			Help: "Connections refused before being served because of a daemon limit, by reason (max_sessions: the cap on open sessions was reached).",
		}, []string{"reason"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_verdicts_total",
			Help: "Ruleset verdicts by rule ID and action (allow, mask, hold, deny): every decided statement, every result stopped by a rule, and every flow the default denied. In monitor mode, the action the rule would have applied.",
		}, []string{"rule", "verdict"}),
		idents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_identity_resolutions_total",
			Help: "Workload identity resolutions (one per accepted flow) by level (oidc, unverified, none) and result.",
		}, []string{"level", "result"}),
		unhooked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_containers_unhooked_total",
			Help: "Containers found running outside the hooked cgroups (started with a cgroup parent of their own), by what was done: killed, alerted (outside = \"alert\"), or kill_failed.",
		}, []string{"action"}),
		tampered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tamper_events_total",
			Help: "What job processes did against Sluice, by kind: cgroup_move (left the job cgroup), signal_sluiced, ptrace_sluiced, bpf (called bpf()), module_load, pin_removal (removed a path under /sys/fs/bpf), config_change. Each is also logged at error level and recorded.",
		}, []string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_statement_latency_seconds",
			Help:    "Per allowed statement: seconds from the proxy forwarding it to the server (after its verdict, and after approval when it was held) until its result had ended at the proxy; server execution, relaying and masking the result, and any hold of the result. Denied statements are not observed.",
			Buckets: latencyBuckets,
		}),
		sessions:  map[*enforcer.Session]struct{}{},
		queueDesc: prometheus.NewDesc("sluice_recording_queue_depth", "Recorded events waiting for the recording writers, summed over open sessions (a full per-session queue stalls its session).", nil, nil),
		bytesDesc: prometheus.NewDesc("sluice_recording_bytes_total", "Bytes of recording frames written, over all sessions since the daemon started.", nil, nil),
	}
	m.observer = &enforcer.Observer{
		Verdict: func(rule string, a ruleset.Action) { m.verdicts.WithLabelValues(rule, a.String()).Inc() },
		Done:    func(o enforcer.Outcome) { m.latency.Observe(o.Duration.Seconds()) },
	}
	m.refused.WithLabelValues(reasonMaxSessions) // exported as 0 from the start
	for _, a := range []string{"killed", "alerted", "kill_failed"} {
		m.unhooked.WithLabelValues(a) // exported as 0 from the start
	}
	for _, k := range append(interceptor.TamperKinds(), "config_change") {
		m.tampered.WithLabelValues(k)
	}
	m.reg.MustRegister(m.flows, m.refused, m.verdicts, m.idents, m.unhooked, m.tampered, m.latency, m,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_holds_pending",
			Help: "Held statements waiting for an approver's decision.",
		}, func() float64 {
			n := 0
			for _, r := range broker.List() {
				if r.State == approve.StatePending {
					n++
				}
			}
			return float64(n)
		}),
	)
	return m
}

// Describe implements prometheus.Collector for the recording metrics.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.queueDesc
	ch <- m.bytesDesc
}

// Collect implements prometheus.Collector: it sums the open sessions'
// recording queues and bytes at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	queued, written := 0, m.closed
	for s := range m.sessions {
		q, w := s.RecordingStats()
		queued += q
		written += w
	}
	m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.queueDesc, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.CounterValue, float64(written))
}

// reasonMaxSessions is sluice_sessions_refused_total's reason for a
// connection past the max_sessions cap.
const reasonMaxSessions = "max_sessions"

// watchProxy exports the proxy's open sessions and their cap as gauges,
// read at scrape time.
func (m *metrics) watchProxy(p *interceptor.Proxy) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_sessions_active",
			Help: "Intercepted connections open now (accepted and not yet ended), the number max_sessions caps.",
		}, func() float64 { return float64(p.Stats().Open) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_sessions_max",
			Help: "The cap on open sessions (max_sessions); connections past it are refused.",
		}, func() float64 { return float64(p.Limit()) }),
	)
}

// watchUnhooked exports count, the number of wanted cgroups the daemon
// could not hook (api.Status.Unhooked), as a gauge read at scrape time.
func (m *metrics) watchUnhooked(count func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cgroups_unhooked",
		Help: "Cgroups the config names, or discovery found, that the daemon could not hook (missing or refused): while above 0 it protects less than its config says. sluice status lists them.",
	}, func() float64 { return float64(count()) }))
}

// flowEnd is the proxy's OnFlowEnd.
func (m *metrics) flowEnd(e interceptor.FlowEnd) {
	m.flows.WithLabelValues(e.Target, e.Protocol, e.Outcome).Inc()
	if e.Outcome == interceptor.OutcomeTooMany {
		m.refused.WithLabelValues(reasonMaxSessions).Inc()
	}
	if e.Outcome == interceptor.OutcomeDenied {
		m.verdicts.WithLabelValues(e.Rule, ruleset.Deny.String()).Inc()
	}
}

// tamper counts a tamper event. It is safe on a nil *metrics.
func (m *metrics) tamper(kind string) {
	if m == nil {
		return
	}
	m.tampered.WithLabelValues(kind).Inc()
}

// containerUnhooked counts a container found outside the hooked cgroups.
// It is safe on a nil *metrics (no metrics_addr).
func (m *metrics) containerUnhooked(u containers.Unhooked) {
	if m == nil {
		return
	}
	action := "alerted"
	switch {
	case u.Killed:
		action = "killed"
	case u.Err != nil:
		action = "kill_failed"
	}
	m.unhooked.WithLabelValues(action).Inc()
}

// identity counts one resolution.
func (m *metrics) identity(r identity.Result) {
	m.idents.WithLabelValues(r.Identity.Level, r.Outcome).Inc()
}

// wrapSessions wraps the proxy's session opener: each session reports its
// verdicts and outcomes, and is tracked while open for the recording
// metrics.
func (m *metrics) wrapSessions(open func(context.Context, *interceptor.Flow, ruleset.Decision) (*enforcer.Session, func(interceptor.Result), error)) func(context.Context, *interceptor.Flow, ruleset.Decision) (*enforcer.Session, func(interceptor.Result), error) {
	return func(ctx context.Context, f *interceptor.Flow, d ruleset.Decision) (*enforcer.Session, func(interceptor.Result), error) {
		s, end, err := open(ctx, f, d)
		if err != nil {
			return s, end, err
		}
		s.Observer = m.observer
		m.mu.Lock()
		m.sessions[s] = struct{}{}
		m.mu.Unlock()
		return s, func(r interceptor.Result) {
			end(r) // closes the recording: its byte count is final
			_, w := s.RecordingStats()
			m.mu.Lock()
			delete(m.sessions, s)
			m.closed += w
			m.mu.Unlock()
		}, nil
	}
}

// serve serves /metrics on addr until ctx ends. The listener is opened
// before serve returns, so a taken port fails the daemon's start.
func (m *metrics) serve(ctx context.Context, addr string, log hclog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: log.StandardLogger(nil)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	context.AfterFunc(ctx, func() { srv.Close() })
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server failed", "error", err)
		}
	}()
	log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	return nil
}
