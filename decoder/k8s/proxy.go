package k8s

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// ServerName is the TLS server name of a kubeconfig that trusts Sluice's
// CA: sluice kubeconfig writes it as the cluster's tls-server-name. A flow
// whose ClientHello names it is decoded; any other (a client that pins
// the cluster's own CA, whose handshake with Sluice would fail) is
// relayed opaquely or refused, as its target's undecoded setting says.
const ServerName = "kubernetes.sluice.internal"

// Bounds of what one session holds.
const (
	// maxBody bounds a request body Sluice reads to decide it (a create,
	// update or patch); a larger one is refused (etcd keeps objects of
	// at most 1.5 MiB).
	maxBody = 8 << 20
	// maxMasked bounds a response body held whole to be masked or
	// counted (a list); a larger one is refused. Watches and logs are
	// masked as they stream, item by item and line by line.
	maxMasked = 64 << 20
	// maxEvent bounds one watch event.
	maxEvent = 16 << 20
	// idleTimeout ends a session whose client sends nothing.
	idleTimeout = 10 * time.Minute
)

// session is one decoded flow: one connection of a client, with every
// request on it (HTTP/1.1 one after another, HTTP/2 at once).
type session struct {
	ctx     context.Context
	f       *decoder.Flow
	sess    *enforcer.Session
	decider decoder.Decider
	log     hclog.Logger
	up      *upstream
	// refuseAll, when set, answers every request with a 403 saying it:
	// the flow was granted no credential on a target that injects them.
	refuseAll string
	// channels numbers the upgraded streams (exec, attach, port-forward)
	// for the recording.
	channels atomic.Uint64
	// hijacked counts the upgraded connections still being relayed.
	hijacked sync.WaitGroup
	// refused remembers the job's refused upgrades for a moment (shared
	// by the handler's sessions).
	refused *refusals
	// l is the session's listener: its connection ends when the server
	// closes it, or when an upgrade that took it over ends.
	l *connListener
}

// serve decodes one flow whose client trusts Sluice's CA: it terminates
// TLS (HTTP/2 or HTTP/1.1, as the client offers), decides every request,
// and sends the allowed ones to the API server with the flow's injected
// credential, if any.
func serve(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc, env decoder.Env, masks *mask.Cache, refused *refusals, log hclog.Logger) decoder.Result {
	s := &session{ctx: ctx, f: f, sess: f.Session, decider: decoder.Decider{Session: f.Session, Masks: masks}, refused: refused, log: log}
	cc := &decoder.CountConn{Conn: decoder.AsDialed(client, f)}
	cfg := env.ClientTLS.Clone()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	tc, err := decoder.ServerHandshake(ctx, cc, cfg)
	if err != nil {
		cc.Close()
		return decoder.Result{Err: err}
	}
	up, who, err := s.upstream(ctx, dial)
	if err != nil {
		// Told to every request, in the API's own terms.
		s.refuseAll = err.Error()
		log.Warn("k8s flow refused", "error", err)
	}
	s.up = up

	l := newConnListener(tc)
	s.l = l
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: decoder.HandshakeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          hclog.NewNullLogger().StandardLogger(nil),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				l.done()
			}
		},
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	go srv.Serve(l)
	<-l.closed
	stop()
	srv.Close()
	s.hijacked.Wait()
	if up != nil {
		up.tr.CloseIdleConnections()
	}
	statements, denied := s.sess.Counts()
	counts := cc.Counts()
	fields := []any{"statements", statements, "denied", denied, "alpn", tc.ConnectionState().NegotiatedProtocol}
	if who != "" {
		fields = append(fields, "credential", who)
	}
	return decoder.Result{BytesFromClient: counts.ClientToServer, BytesToClient: counts.ServerToClient, Fields: fields}
}

// upstream is the session's way to the API server: an HTTP transport
// (HTTP/2 where the server offers it) over the flow's own dial, and the
// credential to present.
type upstream struct {
	tr     *http.Transport
	tlsCfg *tls.Config
	dial   decoder.DialFunc
	// bearer is the injected token's Authorization header, "" for none.
	bearer string
	// inject says a credential was injected: the client's own
	// Authorization is never passed on.
	inject bool
}

// upstream builds the session's upstream from the target's upstream_tls
// and upstream_ca and the flow's injected credential. It returns the
// credential's name, and an error a client is told when the flow may
// not reach the server at all.
func (s *session) upstream(ctx context.Context, dial decoder.DialFunc) (*upstream, string, error) {
	cfg, attempt, _, err := decoder.UpstreamTLS(s.f)
	if err != nil {
		return nil, "", fmt.Errorf("sluice: cannot reach the API server: %v", err)
	}
	if !attempt || cfg == nil {
		return nil, "", errors.New("sluice: the target's upstream_tls is disable, but the Kubernetes API is served over TLS")
	}
	up := &upstream{dial: dial, tlsCfg: cfg}
	who := ""
	inj, err := s.sess.Injection()
	if err != nil {
		var ge *ruleset.GrantError
		if errors.As(err, &ge) {
			return nil, "", fmt.Errorf("sluice: no credential for this job on target %q: %s. Sluice holds this cluster's credentials and presents them only for jobs the runner's ruleset grants them to (`sluice rules explain` shows the grants)", ge.Target, ge.Reason)
		}
		return nil, "", fmt.Errorf("sluice: credential injection failed: %v", err)
	}
	if inj != nil {
		sec, err := inj.Secret(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("sluice: credential %s cannot be read: %v", inj.Name, err)
		}
		b := bytes.TrimSpace(sec.Bytes())
		switch inj.K8sAuth() {
		case ruleset.K8sClientCertificate:
			cert, err := tls.X509KeyPair(b, b)
			sec.Wipe()
			if err != nil {
				return nil, "", fmt.Errorf("sluice: credential %s is not a PEM certificate and key: %v", inj.Name, err)
			}
			cfg = cfg.Clone()
			cfg.Certificates = []tls.Certificate{cert}
			up.tlsCfg = cfg
		default:
			if len(b) == 0 || bytes.ContainsAny(b, "\r\n") {
				sec.Wipe()
				return nil, "", fmt.Errorf("sluice: credential %s is not a bearer token (empty, or more than one line)", inj.Name)
			}
			up.bearer = "Bearer " + string(b)
			sec.Wipe()
		}
		up.inject = true
		who = inj.Name
	}
	h2 := up.tlsCfg.Clone()
	h2.NextProtos = []string{"h2", "http/1.1"}
	up.tr = &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return up.dialTLS(ctx, h2)
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
		// The transport asks for gzip itself and hands Sluice the
		// decompressed body: what is decided, masked and recorded is
		// what the client reads.
		DisableCompression: false,
	}
	return up, who, nil
}

// dialTLS connects to the API server and completes TLS with cfg.
func (u *upstream) dialTLS(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	raw, err := u.dial(ctx)
	if err != nil {
		return nil, err
	}
	tc, err := decoder.ClientHandshake(ctx, raw, cfg)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// ServeHTTP decides one request and, allowed, relays it.
func (s *session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if s.refuseAll != "" {
		writeStatus(w, http.StatusForbidden, "Forbidden", s.refuseAll)
		return
	}
	k, cerr := resolve(r)
	var body []byte
	if cerr == nil {
		cerr = refusedHeaders(r)
	}
	if cerr == nil && hasBody(k) {
		body, cerr = readBody(r)
		if cerr == nil {
			cerr = bodyFacts(r.Header.Get("Content-Type"), body, k)
		}
	}
	text := r.Method + " " + r.URL.RequestURI()
	if k == nil {
		k = &ruleset.K8sRequest{Verb: strings.ToLower(r.Method), Path: r.URL.Path, UserAgent: r.UserAgent()}
	}
	c := &decoder.Command{Cmd: enforcer.Command{Text: text, ClassifyErr: cerr,
		Statement: ruleset.Statement{Kind: k.Verb, Text: text, K8s: k}}}
	upgrade := isUpgrade(r)
	if upgrade || isStream(k) {
		c.Cmd.Unmaskable = "an exec, attach, port-forward or proxy stream (mask rules apply to API objects and pod logs)"
	}
	s.decider.Decide(c)
	var rkey string
	if upgrade && cerr == nil {
		rkey = s.refusalKey(r)
		if msg, ok := s.refused.get(rkey); ok && c.Verdict.Action == ruleset.Hold {
			// kubectl retries a refused WebSocket exec over SPDY at
			// once; the retry is not put to a human a second time.
			c.Verdict.Action = ruleset.Deny
			c.Verdict.Decision.Reason = "the same request was refused a moment ago (" + msg + ")"
		}
	}
	s.decider.AwaitHold(r.Context(), c, s.notify)
	if c.Blocked() && rkey != "" && c.Verdict.Decision.Rule != nil {
		s.refused.put(rkey, c.Verdict.Decision.Rule.ID+": "+c.Verdict.Decision.Reason)
	}
	if c.Blocked() {
		code, reason := http.StatusForbidden, "Forbidden"
		if cerr != nil {
			code, reason = http.StatusBadRequest, "BadRequest"
		}
		writeStatus(w, code, reason, refusal(c))
		return
	}
	if s.sess.WantsWire() {
		s.wireRequest(r, c, k, body)
	}
	if upgrade {
		s.upgrade(w, r, c, k, start)
		return
	}
	s.proxy(w, r, c, k, body, start)
}

// refusalKey names an upgrade request of the flow's job: its process
// and its path and query (the WebSocket try is a GET, kubectl's SPDY
// retry a POST of the same URL).
func (s *session) refusalKey(r *http.Request) string {
	return fmt.Sprintf("%s|%d|%s?%s", s.f.Identity.Job, s.f.Process.TGID, r.URL.Path, r.URL.RawQuery)
}

// refusals remembers refused upgrades for refusalTTL, at most
// maxRefusals of them: kubectl retries a refused exec over SPDY at once,
// on a new connection, and the retry must not wait for a human again.
type refusals struct {
	mu sync.Mutex
	m  map[string]pastRefusal
}

type pastRefusal struct {
	msg string
	at  time.Time
}

const (
	refusalTTL  = 30 * time.Second
	maxRefusals = 1024
)

func newRefusals() *refusals { return &refusals{m: map[string]pastRefusal{}} }

func (rs *refusals) get(key string) (string, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.m[key]
	if !ok || time.Since(r.at) > refusalTTL {
		return "", false
	}
	return r.msg, true
}

func (rs *refusals) put(key, msg string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	now := time.Now()
	if len(rs.m) >= maxRefusals {
		for k, r := range rs.m {
			if now.Sub(r.at) > refusalTTL {
				delete(rs.m, k)
			}
		}
		for k := range rs.m {
			if len(rs.m) < maxRefusals {
				break
			}
			delete(rs.m, k)
		}
	}
	rs.m[key] = pastRefusal{msg: msg, at: now}
}

// notify is told of a hold. HTTP has no way to tell the client before
// its answer, so kubectl waits without a word; the hold's id and how to
// decide it go to the log (and to the approvals' webhook).
func (s *session) notify(id, msg string) {
	s.log.Info("k8s request held: the client waits for the decision", "hold", id, "message", msg)
}

// isStream reports whether k's response is a stream of bytes Sluice
// cannot mask (exec, attach, port-forward, the API server's proxy to a
// pod, service or node).
func isStream(k *ruleset.K8sRequest) bool {
	switch k.Subresource {
	case "exec", "attach", "portforward", "proxy":
		return true
	}
	return k.Verb == "proxy"
}

// refusedHeaders refuses what would make the API server act as someone
// else than the credential: impersonation headers (Sluice would lend its
// credential's right to impersonate to the job).
func refusedHeaders(r *http.Request) error {
	for h := range r.Header {
		if strings.HasPrefix(strings.ToLower(h), "impersonate-") {
			return fmt.Errorf("%w: impersonation (%s) is not passed on", errRequest, h)
		}
	}
	return nil
}

// readBody reads a request body rules need, up to maxBody.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading the body: %v", errRequest, err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("%w: the body is over %d MiB", errRequest, maxBody>>20)
	}
	return b, nil
}

// refusal is the message of a refused request, as kubectl prints it
// after "Error from server (Forbidden): ".
func refusal(c *decoder.Command) string {
	what := c.Cmd.Text
	if k := c.Cmd.Statement.K8s; k != nil && k.IsResource {
		what = k.Verb + " " + k.Resource
		if k.Subresource != "" {
			what += "/" + k.Subresource
		}
		if k.Name != "" {
			what += " " + k.Name
		}
		if k.Namespace != "" {
			what += " in namespace " + k.Namespace
		} else if k.Verb == ruleset.K8sList || k.Verb == ruleset.K8sWatch {
			what += " in all namespaces"
		}
	}
	return c.Refusal(what)
}

// status is a metav1.Status, the body of every refusal.
type status struct {
	Kind       string            `json:"kind"`
	APIVersion string            `json:"apiVersion"`
	Metadata   map[string]string `json:"metadata"`
	Status     string            `json:"status"`
	Message    string            `json:"message"`
	Reason     string            `json:"reason"`
	Code       int               `json:"code"`
}

func statusOf(code int, reason, msg string) status {
	return status{Kind: "Status", APIVersion: "v1", Metadata: map[string]string{}, Status: "Failure", Message: msg, Reason: reason, Code: code}
}

// writeStatus answers a request with a Status, as the API server answers
// one it refuses.
func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	b, _ := json.Marshal(statusOf(code, reason, msg))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

// filter says what a response goes through: masked and counted in
// objects (JSON, a watch), masked in lines (a pod log), or passed as is.
type filter struct {
	c     *decoder.Command
	k     *ruleset.K8sRequest
	plan  *mask.Plan
	gate  decoder.ResultGate
	yaml  bool // the client asked for YAML: the JSON is converted back
	items int64
}

// refusedResult is a result the ruleset stopped (a hold on its size that
// was refused).
type refusedResult struct{ msg string }

func (e *refusedResult) Error() string { return e.msg }

// proxy relays one allowed request that is not an upgrade.
func (s *session) proxy(w http.ResponseWriter, r *http.Request, c *decoder.Command, k *ruleset.K8sRequest, body []byte, start time.Time) {
	fl := &filter{c: c, k: k}
	if c.Masker != nil {
		fl.plan = c.Plan(maskColumns)
	}
	decode := (fl.plan != nil && fl.plan.NeedsDecode() && maskable(k)) || c.Verdict.Decision.AwaitResult
	if !decode {
		fl.plan = nil
	}
	var outcome enforcer.Outcome
	outcome.Fields = map[string]string{}
	var respBytes atomic.Int64
	rp := &httputil.ReverseProxy{
		Transport:     s.up.tr,
		FlushInterval: -1,
		ErrorLog:      hclog.NewNullLogger().StandardLogger(nil),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "https", s.f.Dest.String()
			pr.Out.Host = r.Host
			s.up.authorize(pr.Out.Header)
			pr.Out.Header.Del("Accept-Encoding")
			if decode {
				fl.yaml = rewriteAccept(pr.Out.Header)
			}
			if body != nil {
				pr.Out.Body = io.NopCloser(bytes.NewReader(body))
				pr.Out.ContentLength = int64(len(body))
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			outcome.Fields["status"] = strconv.Itoa(resp.StatusCode)
			if resp.StatusCode >= 400 {
				outcome.ErrCode = strconv.Itoa(resp.StatusCode)
			}
			if decode {
				if err := s.filterResponse(r.Context(), resp, fl); err != nil {
					return err
				}
			}
			resp.Body = &countBody{ReadCloser: resp.Body, n: &respBytes}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			var rr *refusedResult
			if errors.As(err, &rr) {
				outcome.ErrCode = "403"
				writeStatus(w, http.StatusForbidden, "Forbidden", rr.msg)
				return
			}
			outcome.ErrCode = "502"
			s.log.Warn("k8s request failed", "request", c.Cmd.Text, "error", err)
			writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "sluice: "+err.Error())
		},
	}
	rp.ServeHTTP(w, r)
	outcome.Bytes, outcome.Duration = respBytes.Load(), time.Since(start)
	outcome.Rows = fl.items
	if fl.plan != nil {
		if n := maskedValues(fl.plan); n > 0 {
			outcome.Fields["masked"] = strconv.FormatInt(n, 10)
		}
	}
	s.sess.Done(&c.Cmd, c.Verdict, outcome)
}

// maskable reports whether k's responses can hold values mask rules
// apply to: Secrets, ConfigMaps and Pods (and pod logs).
func maskable(k *ruleset.K8sRequest) bool {
	if !k.IsResource || k.Group != "" {
		return false
	}
	switch k.Resource {
	case "secrets", "configmaps", "pods":
		return true
	}
	return false
}

// mayMask reports whether a JSON response about resource can hold a
// value mask rules apply to; when it cannot, it is not decoded. A pod
// (or a list or Table of them) holds one only in its containers' env or
// in the last-applied annotation; Secrets and ConfigMaps always may.
func mayMask(resource string, b []byte) bool {
	if resource != "pods" {
		return true
	}
	return bytes.Contains(b, []byte(`"env"`)) || bytes.Contains(b, []byte(lastApplied))
}

// maskedValues counts what a plan masked.
func maskedValues(p *mask.Plan) int64 {
	var n int64
	for _, rc := range p.Counts() {
		n += rc.Values
	}
	return n
}

// PlaceholderToken is the bearer token of the user sluice kubeconfig
// writes. kubectl asks for a user name and password when its user has no
// credential at all, so the user has this one; Sluice never passes it
// on: an injected credential takes its place, or else the request goes
// without one.
const PlaceholderToken = "sluice-injects-credentials"

// authorize sets the request's credential: the injected one in place of
// the client's, or the client's own when nothing is injected (never
// PlaceholderToken).
func (u *upstream) authorize(h http.Header) {
	if h.Get("Authorization") == "Bearer "+PlaceholderToken {
		h.Del("Authorization")
	}
	if u.inject {
		h.Del("Authorization")
		if u.bearer != "" {
			h.Set("Authorization", u.bearer)
		}
	}
}

// rewriteAccept asks the server for JSON, the one encoding Sluice masks
// and counts, keeping the client's JSON variants (a Table) in its order.
// It reports whether the client asked for YAML only, whose answer is then
// converted back.
func rewriteAccept(h http.Header) (toYAML bool) {
	var keep []string
	yamlAsked := false
	for _, a := range h.Values("Accept") {
		for _, part := range strings.Split(a, ",") {
			part = strings.TrimSpace(part)
			mt, _, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			switch mt {
			case ctJSON, "*/*", "application/*":
				keep = append(keep, part)
			case ctYAML:
				yamlAsked = true
			}
		}
	}
	if len(keep) == 0 {
		keep = []string{ctJSON}
	}
	h.Set("Accept", strings.Join(keep, ", "))
	return yamlAsked && len(keep) == 1 && keep[0] == ctJSON
}

// filterResponse masks and counts a response the command's verdict needs
// to see, or refuses it when it cannot.
func (s *session) filterResponse(ctx context.Context, resp *http.Response, fl *filter) error {
	ct := resp.Header.Get("Content-Type")
	mt, params, _ := mime.ParseMediaType(ct)
	switch {
	case fl.k.Verb == ruleset.K8sWatch || (mt == ctJSON && params["stream"] == "watch"):
		if mt != ctJSON {
			if resp.StatusCode >= 300 && fl.plan == nil {
				return nil
			}
			return &refusedResult{fmt.Sprintf("sluice: the watch is %s, and Sluice masks and counts JSON watches (it asked the server for JSON); the watch is refused rather than passed unchecked", mt)}
		}
		resp.Body = s.watchFilter(ctx, resp.Body, fl)
		return nil
	case mt == ctJSON:
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxMasked+1))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("read the response: %w", err)
		}
		if len(b) > maxMasked {
			return &refusedResult{fmt.Sprintf("sluice: the response is over %d MiB, more than Sluice holds to mask or count it; ask for less (kubectl --chunk-size, a label selector)", maxMasked>>20)}
		}
		if !fl.c.Verdict.Decision.AwaitResult && !mayMask(fl.k.Resource, b) {
			s.wireResponse(b)
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return nil
		}
		v, err := decodeJSON(b)
		if err != nil {
			return &refusedResult{"sluice: the response is not JSON Sluice can read, so it cannot be masked: " + err.Error()}
		}
		items, changed := objects(fl.plan, v, fl.k.Resource)
		fl.items = items
		if fl.c.Verdict.Decision.AwaitResult && items > 0 {
			if refused, v := s.decider.CheckResult(ctx, fl.c, &fl.gate, items, int64(len(b)), s.notify); refused {
				return &refusedResult{resultRefusal(fl.c, v)}
			}
		}
		if changed || fl.yaml {
			if changed {
				b, err = json.Marshal(v)
				if err != nil {
					return &refusedResult{"sluice: the masked response cannot be written: " + err.Error()}
				}
			}
			if fl.yaml {
				if y, err := yaml.JSONToYAML(b); err == nil {
					b = y
					resp.Header.Set("Content-Type", ctYAML)
				}
			}
		}
		s.wireResponse(b)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	case strings.HasPrefix(mt, "text/") && fl.k.Resource == "pods" && fl.k.Subresource == "log":
		if fl.plan != nil {
			resp.Body = newLogMasker(resp.Body, fl.plan)
			resp.Header.Del("Content-Length")
			resp.ContentLength = -1
		}
		return nil
	case resp.StatusCode >= 300 && fl.plan == nil:
		return nil
	case fl.plan == nil || !fl.plan.NeedsDecode():
		if fl.c.Verdict.Decision.AwaitResult {
			return &refusedResult{fmt.Sprintf("sluice: a rule waits on this result's size, and Sluice counts JSON, not %s", mt)}
		}
		return nil
	}
	return &refusedResult{fmt.Sprintf("sluice: the response is %s, and Sluice masks JSON (it asked the server for JSON); the result is refused rather than passed unmasked", mt)}
}

// resultRefusal is the message of a result stopped at its size.
func resultRefusal(c *decoder.Command, v enforcer.Verdict) string {
	return fmt.Sprintf("sluice: the result of %s was stopped by rule %s: %s", c.Cmd.Text, decoder.RuleID(v), v.Decision.Reason)
}

// watchFilter masks and counts a JSON watch as it streams: one event at a
// time, decided again at the counts where a rule on its size can change
// its verdict. A refused watch ends with an ERROR event carrying a 403
// Status, as the API server ends a watch it stops.
func (s *session) watchFilter(ctx context.Context, body io.ReadCloser, fl *filter) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		defer body.Close()
		br := bufio.NewReaderSize(body, 64<<10)
		enc := json.NewEncoder(pw)
		for {
			line, err := readLine(br, maxEvent)
			if len(bytes.TrimSpace(line)) == 0 {
				if err != nil {
					if errors.Is(err, io.EOF) {
						pw.Close()
					} else {
						pw.CloseWithError(err)
					}
					return
				}
				continue
			}
			v, derr := decodeJSON(line)
			if derr != nil {
				// An event Sluice cannot read is not passed unmasked.
				enc.Encode(map[string]any{"type": "ERROR", "object": statusOf(http.StatusBadGateway, "ServiceUnavailable",
					"sluice: a watch event is not JSON Sluice can read: "+derr.Error())})
				pw.Close()
				return
			}
			n, changed := objects(fl.plan, v, fl.k.Resource)
			if ev, ok := v.(map[string]any); ok && (ev["type"] == "ADDED" || ev["type"] == "MODIFIED") {
				fl.items += n
				if fl.c.Verdict.Decision.AwaitResult {
					if refused, vd := s.decider.CheckResult(ctx, fl.c, &fl.gate, fl.items, 0, s.notify); refused {
						enc.Encode(map[string]any{"type": "ERROR", "object": statusOf(http.StatusForbidden, "Forbidden", resultRefusal(fl.c, vd))})
						pw.Close()
						return
					}
				}
			}
			if changed {
				b, merr := json.Marshal(v)
				if merr != nil {
					pw.CloseWithError(merr)
					return
				}
				line = append(b, '\n')
			}
			s.wireResponse(line)
			if _, werr := pw.Write(line); werr != nil {
				return
			}
			if err != nil {
				pw.Close()
				return
			}
		}
	}()
	return pr
}

// errEventTooLong ends a watch whose event is over maxEvent.
var errEventTooLong = errors.New("sluice: a watch event is longer than Sluice holds to mask it")

// readLine reads one line of at most max bytes, with its newline.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > max {
			return nil, errEventTooLong
		}
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// countBody counts the bytes of a response body as the client reads
// them.
type countBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// wireRequest records a request at record = "full": its line and, for a
// create, update or patch, its body masked as a response would be.
func (s *session) wireRequest(r *http.Request, c *decoder.Command, k *ruleset.K8sRequest, body []byte) {
	var b bytes.Buffer
	b.WriteString(r.Method + " " + r.URL.RequestURI() + " " + r.Proto + "\n")
	if len(body) > 0 {
		if c.Masker != nil {
			if v, err := decodeJSON(body); err == nil {
				if _, changed := objects(c.Plan(maskColumns), v, k.Resource); changed {
					body, _ = json.Marshal(v)
				}
			} else {
				body = []byte("[body not recorded: it cannot be masked]")
			}
		}
		b.Write(body)
	}
	s.sess.Wire(record.DirClientToServer, b.Bytes())
}

// wireResponse records a response body, as the client gets it, at
// record = "full".
func (s *session) wireResponse(b []byte) {
	if s.sess.WantsWire() {
		s.sess.Wire(record.DirServerToClient, b)
	}
}

// isUpgrade reports whether r asks to switch protocols (exec, attach and
// port-forward over WebSocket or SPDY).
func isUpgrade(r *http.Request) bool {
	for _, v := range r.Header.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), "upgrade") {
				return r.Header.Get("Upgrade") != ""
			}
		}
	}
	return false
}

// upgrade relays an allowed exec, attach or port-forward: the request
// goes to the server on a connection of its own (HTTP/1.1, as upgrades
// need), and once the server switches protocols the bytes flow both ways
// unchanged, decoded on the side for the recording (NewTap): an exec or
// attach as the terminal or the stdin, stdout and stderr streams it is,
// a port-forward as metadata.
func (s *session) upgrade(w http.ResponseWriter, r *http.Request, c *decoder.Command, k *ruleset.K8sRequest, start time.Time) {
	outcome := enforcer.Outcome{Fields: map[string]string{}}
	defer func() {
		outcome.Duration = time.Since(start)
		s.sess.Done(&c.Cmd, c.Verdict, outcome)
	}()
	hj, ok := w.(http.Hijacker)
	if !ok {
		outcome.ErrCode = "400"
		writeStatus(w, http.StatusBadRequest, "BadRequest", "sluice: exec, attach and port-forward need HTTP/1.1 (an upgrade), which this connection is not")
		return
	}
	h1 := s.up.tlsCfg.Clone()
	h1.NextProtos = []string{"http/1.1"}
	uc, err := s.up.dialTLS(r.Context(), h1)
	if err != nil {
		outcome.ErrCode = "502"
		writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "sluice: cannot reach the API server: "+err.Error())
		return
	}
	out := r.Clone(r.Context())
	out.URL = &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out.RequestURI, out.Host = "", r.Host
	out.Header.Del("Accept-Encoding")
	s.up.authorize(out.Header)
	if err := out.Write(uc); err != nil {
		uc.Close()
		outcome.ErrCode = "502"
		writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "sluice: the API server did not take the request: "+err.Error())
		return
	}
	br := bufio.NewReader(uc)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		uc.Close()
		outcome.ErrCode = "502"
		writeStatus(w, http.StatusBadGateway, "ServiceUnavailable", "sluice: the API server's answer does not parse: "+err.Error())
		return
	}
	outcome.Fields["status"] = strconv.Itoa(resp.StatusCode)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer uc.Close()
		defer resp.Body.Close()
		if resp.StatusCode >= 400 {
			outcome.ErrCode = strconv.Itoa(resp.StatusCode)
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		n, _ := io.Copy(w, io.LimitReader(resp.Body, maxMasked))
		outcome.Bytes = n
		return
	}
	conn, cbuf, err := hj.Hijack()
	if err != nil {
		uc.Close()
		outcome.ErrCode = "500"
		return
	}
	s.hijacked.Add(1)
	defer s.hijacked.Done()
	defer s.l.done() // the connection was the session's: it ends with the upgrade
	defer conn.Close()
	defer uc.Close()
	if err := resp.Write(conn); err != nil {
		outcome.ErrCode = "client gone"
		return
	}
	kind, sub := UpgradeWebSocket, resp.Header.Get("Sec-Websocket-Protocol")
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		kind, sub = UpgradeSPDY, resp.Header.Get("X-Stream-Protocol-Version")
	}
	ch := strconv.FormatUint(s.channels.Add(1)-1, 10)
	outcome.Fields["channel"], outcome.Fields["upgrade"], outcome.Fields["protocol"] = ch, kind, sub
	tty := k.Subresource != "portforward" && (r.URL.Query().Get("tty") == "true" || r.URL.Query().Get("tty") == "1")
	rec := &streamRecorder{s: s, channel: ch, tty: tty, portForward: k.Subresource == "portforward"}
	// The pair shares SPDY's stream names, which only the client's
	// frames carry, with the server's direction.
	toServer, toClient := NewTapPair(kind, sub, rec.emit(record.DirClientToServer), rec.emit(record.DirServerToClient))
	// What either side sent with the handshake is relayed first.
	var fromClient io.Reader = conn
	if n := cbuf.Reader.Buffered(); n > 0 {
		pre, _ := cbuf.Reader.Peek(n)
		fromClient = io.MultiReader(bytes.NewReader(append([]byte(nil), pre...)), conn)
	}
	var fromServer io.Reader = uc
	if n := br.Buffered(); n > 0 {
		pre, _ := br.Peek(n)
		fromServer = io.MultiReader(bytes.NewReader(append([]byte(nil), pre...)), uc)
	}
	stop := context.AfterFunc(s.ctx, func() { conn.Close(); uc.Close() })
	defer stop()
	var wg sync.WaitGroup
	var up int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		up, _ = io.Copy(uc, io.TeeReader(fromClient, toServer))
		uc.CloseWrite()
	}()
	down, _ := io.Copy(conn, io.TeeReader(fromServer, toClient))
	conn.Close()
	uc.Close()
	wg.Wait()
	outcome.Bytes = down
	outcome.Fields["bytes_from_client"] = strconv.FormatInt(up, 10)
	if rec.portForward {
		outcome.Fields["ports"] = rec.portList()
	}
}

// streamRecorder records the streams of one upgraded connection: an exec
// or attach's as the terminal (tty) or stdin, stdout and stderr, with the
// terminal's size changes as notes; a port-forward's only as the ports
// it used.
type streamRecorder struct {
	s           *session
	channel     string
	tty         bool
	portForward bool
	mu          sync.Mutex
	ports       map[int]bool
}

func (sr *streamRecorder) emit(dir string) func(stream string, port int, data []byte) {
	return func(stream string, port int, data []byte) {
		if sr.portForward {
			if port > 0 {
				sr.mu.Lock()
				if sr.ports == nil {
					sr.ports = map[int]bool{}
				}
				if len(sr.ports) < 64 {
					sr.ports[port] = true
				}
				sr.mu.Unlock()
			}
			return
		}
		switch stream {
		case "resize":
			var sz struct{ Width, Height uint16 }
			if json.Unmarshal(data, &sz) == nil {
				sr.s.sess.Record(record.Metadata, record.Event{Type: record.TypeNote, Reason: "window-change", Fields: map[string]string{
					"channel": sr.channel, "cols": strconv.Itoa(int(sz.Width)), "rows": strconv.Itoa(int(sz.Height))}})
			}
			return
		case "stdin", "stdout", "stderr":
			if sr.tty {
				stream = "tty"
			}
		case "error", "raw":
		default:
			return
		}
		sr.s.sess.WireStream(dir, map[string]string{"channel": sr.channel, "stream": stream}, data)
	}
}

func (sr *streamRecorder) portList() string {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	var out []string
	for p := range sr.ports {
		out = append(out, strconv.Itoa(p))
	}
	return strings.Join(out, ",")
}

// connListener hands one connection to an http.Server, then blocks
// until it is closed.
type connListener struct {
	c      chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newConnListener(c net.Conn) *connListener {
	l := &connListener{c: make(chan net.Conn, 1), closed: make(chan struct{}), addr: c.LocalAddr()}
	l.c <- c
	return l
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.c:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) done()          { l.once.Do(func() { close(l.closed) }) }
func (l *connListener) Close() error   { l.done(); return nil }
func (l *connListener) Addr() net.Addr { return l.addr }
