// Package fleet shares a daemon's approval holds with the whole fleet
// through a NATS JetStream key-value bucket, so that an approver decides
// from anywhere (`sluice approvals list --nats`, `sluice approve ID
// --nats`) without reaching the VM that holds the statement.
//
// # Keys
//
//	hold.<ID>              JSON Hold: the webhook schema's request object
//	                       (approve.WireRequest), the holding VM's name and
//	                       this daemon run's X25519 public key (box_key).
//	                       Written when the hold starts, after each accepted
//	                       decision and when it ends.
//	decision.<ID>.<nonce>  an approver's Decision (hold ID, VM, approve or
//	                       deny, comment, OIDC ID token, time), sealed with
//	                       nacl/box SealAnonymous to the hold's box_key, so
//	                       the token is never readable on the bus and the
//	                       sealed content names the hold it is for.
//	result.<ID>.<nonce>    the holding VM's Result for that decision.
//
// The bus is not trusted with who approved: the holding VM opens the box,
// refuses a decision whose sealed hold ID or VM differs from its key,
// verifies the ID token against the configured issuer (Verifier), refuses a
// token already used for another hold (a bounded replay cache kept until
// each token expires), and hands the approver to approve.Broker.Decide,
// which applies the rule's approvers and refuses self-approval. The bucket
// is created when missing, with a maximum age so finished entries go away.
//
// Losing NATS changes no decision: holds wait until their own timeout;
// writes to the bucket are kept (the latest per hold, bounded) and retried
// when the connection returns; the watch of decisions is restarted then.
package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/nacl/box"

	"github.com/sluicehq/sluice/enforcer/approve"
)

// DefaultBucket is the key-value bucket's name when Config.Bucket is empty.
const DefaultBucket = "SLUICE_HOLDS"

// MaxAge is how long the bucket keeps an entry after its last write.
const MaxAge = 24 * time.Hour

// maxPending bounds the hold entries waiting to be written while NATS is
// away; the oldest are dropped beyond it.
const maxPending = 4096

// maxSealed bounds a decision entry's size.
const maxSealed = 64 << 10

// Hold is the value of hold.<ID>.
type Hold struct {
	VM string `json:"vm"`
	// BoxKey is the holding daemon run's X25519 public key, base64: seal
	// decisions to it.
	BoxKey  string              `json:"box_key"`
	Request approve.WireRequest `json:"request"`
}

// Decision is what an approver seals into decision.<ID>.<nonce>.
type Decision struct {
	Hold    string    `json:"hold"`
	VM      string    `json:"vm"`
	Approve bool      `json:"approve"`
	Comment string    `json:"comment,omitempty"`
	Token   string    `json:"token"`
	At      time.Time `json:"at"`
}

// Result is the value of result.<ID>.<nonce>: whether the decision was
// accepted, the hold's state after it, and why it was refused.
type Result struct {
	Accepted bool   `json:"accepted"`
	State    string `json:"state,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Conn says how to reach NATS and which bucket holds the holds.
type Conn struct {
	// URL is the NATS server list (nats://host:4222[,tls://...]).
	URL string
	// Bucket is the key-value bucket (DefaultBucket when empty).
	Bucket string
	// CredsFile and CAFile are optional: a NATS credentials file and the
	// only CAs trusted for the server's TLS certificate.
	CredsFile, CAFile string
}

func (c Conn) bucket() string {
	if c.Bucket == "" {
		return DefaultBucket
	}
	return c.Bucket
}

func (c Conn) options(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name)}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read NATS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("NATS CA file %s: no PEM certificates", c.CAFile)
		}
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	return opts, nil
}

// ensureBucket opens the bucket, creating it when missing.
func ensureBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, name)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", name, err)
	}
	kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, History: 1, TTL: MaxAge,
		Description: "sluice approval holds, decisions and results", Storage: jetstream.FileStorage})
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.KeyValue(ctx, name)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return kv, nil
}

// VerifyFunc verifies an approver's ID token and returns who they are and
// when the token expires. Its errors are shown to the approver.
type VerifyFunc func(ctx context.Context, token string) (approve.Approver, time.Time, error)

// Config configures a Fleet.
type Config struct {
	Conn
	// VM names this machine in hold entries; decisions must name it.
	VM string
	// Verify checks a decision's token (see Verifier).
	Verify VerifyFunc
	// Log is the Fleet's logger (nil: none).
	Log hclog.Logger
	// Retry is how long to wait after a failed write (default 1 s).
	Retry time.Duration
}

// Stats describe a Fleet for sluice status.
type Stats struct {
	Connected bool
	// Pending counts hold entries waiting to be written.
	Pending int
	// Accepted and Refused count decisions taken from the bucket.
	Accepted, Refused int64
	LastError         string
}

// Fleet publishes one daemon's holds and takes decisions on them from the
// bucket. Notify is its approve.Notifier; Run connects and works until its
// context ends. Its methods are safe for concurrent use.
type Fleet struct {
	cfg      Config
	log      hclog.Logger
	pub, sec *[32]byte
	boxKey   string
	replay   *replayCache

	mu       sync.Mutex
	broker   *approve.Broker
	pending  map[string]approve.Request // hold ID -> latest state to write
	order    []string                   // pending IDs, oldest first
	wake     chan struct{}
	nc       *nats.Conn
	lastErr  string
	accepted int64
	refused  int64
	seen     map[string]bool // decision keys handled (bounded)
	seenList []string
}

// New returns a Fleet with a fresh box key pair for this daemon run.
func New(cfg Config) (*Fleet, error) {
	if cfg.Verify == nil {
		return nil, errors.New("fleet approvals need a token verifier")
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	pub, sec, err := box.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate box key: %w", err)
	}
	return &Fleet{cfg: cfg, log: cfg.Log, pub: pub, sec: sec, boxKey: base64.StdEncoding.EncodeToString(pub[:]),
		replay: newReplayCache(4096), pending: map[string]approve.Request{}, wake: make(chan struct{}, 1), seen: map[string]bool{}}, nil
}

// Notify is an approve.Notifier: it queues the request's entry to be
// written. It never blocks on NATS.
func (f *Fleet) Notify(_ context.Context, ev approve.Event) {
	if ev.Kind != approve.EventRequest && ev.Kind != approve.EventDecision {
		return
	}
	f.queue(ev.Request)
}

func (f *Fleet) queue(r approve.Request) {
	f.mu.Lock()
	if _, ok := f.pending[r.ID]; !ok {
		f.order = append(f.order, r.ID)
		for len(f.order) > maxPending {
			delete(f.pending, f.order[0])
			f.order = f.order[1:]
		}
	}
	f.pending[r.ID] = r
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Stats returns the Fleet's state.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{Connected: f.nc != nil && f.nc.IsConnected(), Pending: len(f.pending), Accepted: f.accepted, Refused: f.refused, LastError: f.lastErr}
}

func (f *Fleet) fail(what string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	f.mu.Lock()
	first := f.lastErr == ""
	f.lastErr = what + ": " + err.Error()
	f.mu.Unlock()
	if first {
		f.log.Warn("fleet approvals: NATS unavailable; retrying", "step", what, "error", err)
	}
}

func (f *Fleet) ok() {
	f.mu.Lock()
	was := f.lastErr
	f.lastErr = ""
	f.mu.Unlock()
	if was != "" {
		f.log.Info("fleet approvals: NATS available again")
	}
}

// Run connects to NATS and, until ctx ends, writes hold entries and takes
// decisions for b's holds. It reconnects and retries forever. Before
// returning it tries, for up to flush, to write what is still queued.
func (f *Fleet) Run(ctx context.Context, b *approve.Broker, flush time.Duration) {
	f.mu.Lock()
	f.broker = b
	f.mu.Unlock()
	reconnected := make(chan struct{}, 1)
	opts, err := f.cfg.options("sluiced " + f.cfg.VM + " approvals")
	if err == nil {
		opts = append(opts, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true),
			nats.ReconnectHandler(func(*nats.Conn) {
				select {
				case reconnected <- struct{}{}:
				default:
				}
			}),
			nats.ConnectHandler(func(*nats.Conn) {
				select {
				case reconnected <- struct{}{}:
				default:
				}
			}))
	}
	var nc *nats.Conn
	if err == nil {
		nc, err = nats.Connect(f.cfg.URL, opts...)
	}
	if err != nil {
		f.log.Error("fleet approvals: connecting to NATS failed; holds are decided only locally", "error", err)
		f.fail("connect", err)
		<-ctx.Done()
		return
	}
	f.mu.Lock()
	f.nc = nc
	f.mu.Unlock()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		f.fail("jetstream", err)
		<-ctx.Done()
		return
	}

	var (
		kv      jetstream.KeyValue
		watch   jetstream.KeyWatcher
		updates <-chan jetstream.KeyValueEntry
	)
	stopWatch := func() {
		if watch != nil {
			watch.Stop()
			watch, updates = nil, nil
		}
	}
	defer stopWatch()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			if kv != nil {
				fctx, cancel := context.WithTimeout(context.Background(), flush)
				f.writePending(fctx, kv)
				cancel()
			}
			return
		case <-reconnected:
			// The watch's consumer may be gone with the server: start it again.
			stopWatch()
		case <-f.wake:
		case <-retry.C:
		case e, ok := <-updates:
			if !ok {
				stopWatch()
				break
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				f.handle(ctx, kv, e)
			}
			continue
		}
		if kv == nil {
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			kv, err = ensureBucket(octx, js, f.cfg.bucket())
			cancel()
			if err != nil {
				kv = nil
				f.fail("open bucket", err)
				retry.Reset(f.cfg.Retry)
				continue
			}
		}
		if !f.writePending(ctx, kv) {
			retry.Reset(f.cfg.Retry)
			continue
		}
		if watch == nil {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			watch, err = kv.Watch(wctx, "decision.>", jetstream.IgnoreDeletes())
			cancel()
			if err != nil {
				watch = nil
				f.fail("watch decisions", err)
				retry.Reset(f.cfg.Retry)
				continue
			}
			updates = watch.Updates()
		}
		f.ok()
	}
}

// writePending writes the queued hold entries; it reports whether all
// were written.
func (f *Fleet) writePending(ctx context.Context, kv jetstream.KeyValue) bool {
	for {
		f.mu.Lock()
		if len(f.order) == 0 {
			f.mu.Unlock()
			return true
		}
		id := f.order[0]
		r := f.pending[id]
		f.mu.Unlock()
		b, _ := json.Marshal(Hold{VM: f.cfg.VM, BoxKey: f.boxKey, Request: approve.ToWire(r)})
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := kv.Put(pctx, "hold."+id, b)
		cancel()
		if err != nil {
			f.fail("write hold", err)
			return false
		}
		f.mu.Lock()
		// Written unless it changed meanwhile.
		if cur, ok := f.pending[id]; ok && cur.State == r.State && len(cur.Decisions) == len(r.Decisions) {
			delete(f.pending, id)
			for i, o := range f.order {
				if o == id {
					f.order = append(f.order[:i], f.order[i+1:]...)
					break
				}
			}
		}
		f.mu.Unlock()
	}
}

// handle takes one decision entry.
func (f *Fleet) handle(ctx context.Context, kv jetstream.KeyValue, e jetstream.KeyValueEntry) {
	parts := strings.Split(e.Key(), ".")
	if len(parts) != 3 {
		return
	}
	id, nonce := parts[1], parts[2]
	f.mu.Lock()
	b := f.broker
	handled := f.seen[e.Key()]
	f.mu.Unlock()
	if b == nil || handled {
		return
	}
	if _, ok := b.Get(id); !ok {
		return // another VM's hold
	}
	res, who := f.decide(ctx, b, id, e.Value())
	f.mu.Lock()
	f.seen[e.Key()] = true
	f.seenList = append(f.seenList, e.Key())
	if len(f.seenList) > 1024 {
		delete(f.seen, f.seenList[0])
		f.seenList = f.seenList[1:]
	}
	if res.Accepted {
		f.accepted++
	} else {
		f.refused++
	}
	f.mu.Unlock()
	if res.Accepted {
		f.log.Info("fleet decision accepted", "id", id, "approver", who, "state", res.State)
	} else {
		f.log.Warn("fleet decision refused", "id", id, "approver", who, "error", res.Error)
	}
	out, _ := json.Marshal(res)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := kv.Put(wctx, "result."+id+"."+nonce, out); err != nil {
		f.fail("write result", err)
	}
	if err := kv.Delete(wctx, e.Key()); err != nil {
		f.fail("delete decision", err)
	}
}

// decide opens, checks and applies a sealed decision for hold id.
func (f *Fleet) decide(ctx context.Context, b *approve.Broker, id string, sealed []byte) (Result, string) {
	refuse := func(format string, args ...any) Result {
		return Result{Error: fmt.Sprintf(format, args...)}
	}
	if len(sealed) > maxSealed {
		return refuse("the decision is larger than %d bytes", maxSealed), ""
	}
	plain, ok := box.OpenAnonymous(nil, sealed, f.pub, f.sec)
	if !ok {
		return refuse("the decision cannot be opened with this VM's key: it was tampered with, or sealed for another VM or an earlier daemon run (list the holds again)"), ""
	}
	var d Decision
	if err := json.Unmarshal(plain, &d); err != nil {
		return refuse("the decision is not valid JSON: %v", err), ""
	}
	if d.Hold != id {
		return refuse("the sealed decision is for hold %q, not %q", d.Hold, id), ""
	}
	if d.VM != f.cfg.VM {
		return refuse("the sealed decision is for VM %q, not %q", d.VM, f.cfg.VM), ""
	}
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	who, exp, err := f.cfg.Verify(vctx, d.Token)
	cancel()
	if err != nil {
		return refuse("token refused: %v", err), who.Subject
	}
	sum := sha256.Sum256([]byte(d.Token))
	if prev, ok := f.replay.use(hex.EncodeToString(sum[:]), id, exp, time.Now()); !ok {
		return refuse("token refused: it was already used for hold %s; get a fresh token for each decision", prev), who.Subject
	}
	req, err := b.Decide(id, who, d.Approve, d.Comment)
	if err != nil {
		return refuse("%v", err), who.Subject
	}
	if req.State == approve.StatePending {
		f.queue(req) // an accepted approval short of min_approvals
	}
	return Result{Accepted: true, State: req.State}, who.Subject
}
