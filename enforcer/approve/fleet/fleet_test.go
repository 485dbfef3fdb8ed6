package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/internal/testenv"
)

// env is one VM's fleet approvals against a real nats-server and a real
// OIDC issuer.
type env struct {
	t      *testing.T
	nats   *testenv.NATS
	is     *testenv.Issuer
	broker *approve.Broker
	fleet  *Fleet
	client *Client
}

func newEnv(t *testing.T) *env {
	n := testenv.StartNATS(t)
	is := testenv.NewIssuer(t)
	pem, err := os.ReadFile(is.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	v := &Verifier{Issuer: is.URL, Audience: "sluice", AllowClaims: map[string]string{"org": "acme"}, Client: hc}
	f, err := New(Config{Conn: Conn{URL: n.URL}, VM: "vm-a", Verify: v.Verify, Retry: 100 * time.Millisecond,
		Log: hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug})})
	if err != nil {
		t.Fatal(err)
	}
	b := approve.NewBroker(approve.Options{Notify: f.Notify})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx, b, time.Second)
	}()
	t.Cleanup(func() {
		b.Close(context.Background())
		cancel()
		<-done
	})
	e := &env{t: t, nats: n, is: is, broker: b, fleet: f}
	var c *Client
	testenv.WaitFor(t, 10*time.Second, "the bucket to exist", func() bool {
		c, err = Dial(context.Background(), Conn{URL: n.URL})
		return err == nil
	})
	t.Cleanup(c.Close)
	e.client = c
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// hold starts a hold that group:security may approve, requested by the
// job whose token subject is "job".
func (e *env) hold() (approve.Request, <-chan approve.Outcome) {
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	return e.broker.Hold(ctx, approve.Request{Session: "s1", Target: "prod-db", Rule: "export", Reason: "exports need a human",
		Statement: "COPY users TO STDOUT", Stage: approve.StageBefore, Approvers: []string{"group:security"}, Timeout: time.Minute,
		Requester: approve.Requester{IdentityLevel: "oidc", Subject: "job", Repository: "acme/api", UID: 1001, Comm: "psql", PID: 42}})
}

// published waits for hold id's entry in the bucket in state.
func (e *env) published(id, state string) Hold {
	e.t.Helper()
	var got Hold
	testenv.WaitFor(e.t, 10*time.Second, "hold "+id+" "+state+" in the bucket", func() bool {
		list, err := e.client.List(context.Background())
		if err != nil {
			return false
		}
		for _, h := range list {
			if h.Request.ID == id && h.Request.State == state {
				got = h
				return true
			}
		}
		return false
	})
	return got
}

func (e *env) token(sub string, groups ...string) string {
	return e.is.Sign(e.t, map[string]any{"sub": sub, "aud": "sluice", "org": "acme", "email": sub + "@example.com", "email_verified": true, "groups": groups})
}

func (e *env) decide(id string, approveIt bool, token string) Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.client.Decide(ctx, id, approveIt, "from the test", token, nil)
	if err != nil {
		e.t.Fatalf("decide %s: %v", id, err)
	}
	return r
}

func pending(t *testing.T, ch <-chan approve.Outcome) {
	t.Helper()
	select {
	case out := <-ch:
		t.Fatalf("the hold ended: %+v", out)
	default:
	}
}

func refused(t *testing.T, r Result, want string) {
	t.Helper()
	if r.Accepted || !strings.Contains(r.Error, want) {
		t.Errorf("result %+v: want refused with %q", r, want)
	}
}

func TestHoldPublishedAndApproved(t *testing.T) {
	e := newEnv(t)
	req, ch := e.hold()
	h := e.published(req.ID, approve.StatePending)
	if h.VM != "vm-a" || h.BoxKey == "" || h.Request.Rule != "export" || h.Request.Statement != "COPY users TO STDOUT" ||
		h.Request.Requester.Repository != "acme/api" || h.Request.Approvers[0] != "group:security" {
		t.Errorf("hold entry: %+v", h)
	}

	start := time.Now()
	r := e.decide(req.ID, true, e.token("alice", "security"))
	if !r.Accepted || r.State != approve.StateApproved {
		t.Fatalf("alice's approval: %+v", r)
	}
	select {
	case out := <-ch:
		if !out.Approved || !strings.Contains(out.Reason, "alice") {
			t.Errorf("outcome: %+v", out)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the hold was not released")
	}
	t.Logf("decision put to result: %v", time.Since(start))
	h = e.published(req.ID, approve.StateApproved)
	if len(h.Request.Decisions) != 1 || h.Request.Decisions[0].By.Subject != "alice" {
		t.Errorf("decisions in the entry: %+v", h.Request.Decisions)
	}
	// The decision key is gone; the token never appears in the bucket.
	keys, _ := e.client.kv.Keys(context.Background())
	for _, k := range keys {
		if strings.HasPrefix(k, "decision.") {
			t.Errorf("decision key left: %s", k)
		}
	}
}

func TestRefusedDecisions(t *testing.T) {
	e := newEnv(t)
	req, ch := e.hold()
	h := e.published(req.ID, approve.StatePending)

	// Signed by another key, claiming the issuer.
	forger := testenv.NewIssuer(t)
	forged := forger.Sign(t, map[string]any{"iss": e.is.URL, "sub": "alice", "aud": "sluice", "org": "acme", "groups": []string{"security"}})
	refused(t, e.decide(req.ID, true, forged), "invalid token")

	// A valid token outside the rule's approvers.
	refused(t, e.decide(req.ID, true, e.token("bob", "dev")), "not an approver")
	// Missing a required claim.
	noOrg := e.is.Sign(t, map[string]any{"sub": "carol", "aud": "sluice", "groups": []string{"security"}})
	refused(t, e.decide(req.ID, true, noOrg), `claim "org"`)
	// The job's own identity.
	refused(t, e.decide(req.ID, true, e.token("job", "security")), "cannot approve its own")

	alice := e.token("alice", "security")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Sealed for another VM, and for another hold.
	r, err := e.client.Send(ctx, h, Decision{Hold: req.ID, VM: "vm-b", Approve: true, Token: alice}, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, r, `for VM "vm-b"`)
	r, err = e.client.Send(ctx, h, Decision{Hold: "h-other234", VM: "vm-a", Approve: true, Token: alice}, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, r, `for hold "h-other234"`)
	// Tampered: a sealed approval with one byte changed.
	r, err = e.client.SendRaw(ctx, req.ID, []byte(strings.Repeat("x", 120)), nil)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, r, "cannot be opened")
	pending(t, ch)

	// Alice approves hold 1; her token replayed on hold 2 is refused.
	if r := e.decide(req.ID, true, alice); !r.Accepted {
		t.Fatalf("alice: %+v", r)
	}
	req2, ch2 := e.hold()
	e.published(req2.ID, approve.StatePending)
	refused(t, e.decide(req2.ID, true, alice), "already used for hold "+req.ID)
	pending(t, ch2)
	if st := e.fleet.Stats(); st.Accepted != 1 || st.Refused != 8 {
		t.Errorf("stats: %+v", st)
	}
}

func TestTamperedBox(t *testing.T) {
	e := newEnv(t)
	req, ch := e.hold()
	h := e.published(req.ID, approve.StatePending)
	// Seal a genuine decision, then flip one byte of the ciphertext.
	var sealed []byte
	c := &capture{Client: e.client}
	sealed = c.seal(t, h, Decision{Hold: req.ID, VM: "vm-a", Approve: true, Token: e.token("alice", "security")})
	sealed[len(sealed)-5] ^= 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := e.client.SendRaw(ctx, req.ID, sealed, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused(t, r, "cannot be opened")
	pending(t, ch)
}

func TestNATSLoss(t *testing.T) {
	e := newEnv(t)
	req, ch := e.hold()
	e.published(req.ID, approve.StatePending)
	e.client.Close()

	e.nats.Kill(t)
	testenv.WaitFor(t, 10*time.Second, "the fleet to see NATS gone", func() bool { return !e.fleet.Stats().Connected })
	// A hold that starts while NATS is away is written when it returns.
	req2, ch2 := e.hold()
	pending(t, ch)
	e.nats.Start(t)
	c, err := Dial(context.Background(), Conn{URL: e.nats.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e.client = c
	e.published(req2.ID, approve.StatePending)
	for _, x := range []struct {
		id string
		ch <-chan approve.Outcome
	}{{req.ID, ch}, {req2.ID, ch2}} {
		var r Result
		// The watch resumes shortly after the reconnect.
		testenv.WaitFor(t, 15*time.Second, "a decision on "+x.id+" after NATS returned", func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			r, err = c.Decide(ctx, x.id, true, "", e.token("alice-"+x.id, "security"), nil)
			return err == nil
		})
		if !r.Accepted {
			t.Fatalf("decision after NATS returned: %+v", r)
		}
		select {
		case out := <-x.ch:
			if !out.Approved {
				t.Errorf("outcome %+v", out)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("hold not released")
		}
	}
}

// TestReplayCacheBound: a token decides one hold until it expires; a full
// cache of unexpired tokens refuses new ones, and expired ones make room.
func TestReplayCacheBound(t *testing.T) {
	now := time.Now()
	c := newReplayCache(2)
	if _, ok := c.use("a", "h-1", now.Add(time.Minute), now); !ok {
		t.Fatal("first use refused")
	}
	if _, ok := c.use("a", "h-1", now.Add(time.Minute), now); !ok {
		t.Error("the same token on the same hold refused")
	}
	if prev, ok := c.use("a", "h-2", now.Add(time.Minute), now); ok || prev != "h-1" {
		t.Errorf("replay on another hold: %q %v", prev, ok)
	}
	c.use("b", "h-3", now.Add(time.Second), now)
	if _, ok := c.use("c", "h-4", now.Add(time.Minute), now); ok {
		t.Error("a full cache took a new token")
	}
	if _, ok := c.use("c", "h-4", now.Add(time.Minute), now.Add(2*time.Second)); !ok {
		t.Error("an expired token did not make room")
	}
}
