package approve

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkLeaks fails the test if goroutines started during it are still
// running shortly after it ends (after other cleanups, such as Close).
func checkLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for range 200 {
			if runtime.NumGoroutine() <= before {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
	})
}

// newBroker returns a broker closed when the test ends.
func newBroker(t *testing.T, opts Options) *Broker {
	checkLeaks(t)
	b := NewBroker(opts)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Close(ctx)
	})
	return b
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// outcome waits for the one Outcome and checks the channel closes after it.
func outcome(t *testing.T, ch <-chan Outcome) Outcome {
	t.Helper()
	var o Outcome
	select {
	case o = <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome")
	}
	select {
	case extra, ok := <-ch:
		if ok {
			t.Fatalf("second outcome %+v", extra)
		}
	case <-time.After(time.Second):
		t.Fatal("outcome channel not closed after the outcome")
	}
	return o
}

// noOutcome checks that nothing has been decided yet.
func noOutcome(t *testing.T, ch <-chan Outcome) {
	t.Helper()
	select {
	case o := <-ch:
		t.Fatalf("unexpected outcome %+v", o)
	default:
	}
}

var (
	job = Requester{IdentityLevel: "oidc", Subject: "repo:acme/app:ref:refs/heads/main", Repository: "acme/app",
		Actor: "alice", Job: "deploy", UID: 1001, Comm: "psql", PID: 4242}
	rootJob = Requester{IdentityLevel: "process", UID: 0, Comm: "psql", PID: 7}

	root   = Approver{Kind: KindLocal, Subject: "root", UID: 0}
	ops    = Approver{Kind: KindLocal, Subject: "ops", UID: 1500, Groups: []string{"wheel"}}
	runner = Approver{Kind: KindLocal, Subject: "runner", UID: 1001}
	bob    = Approver{Kind: KindOIDC, Subject: "u-bob", Email: "bob@acme.example", Groups: []string{"security", "eng"}}
	carol  = Approver{Kind: KindOIDC, Subject: "u-carol", Email: "Carol@Acme.example", Groups: []string{"security"}}
	dave   = Approver{Kind: KindOIDC, Subject: "u-dave", Email: "dave@acme.example", Groups: []string{"eng"}}
	alice  = Approver{Kind: KindOIDC, Subject: "u-alice", Email: "alice@acme.example", Groups: []string{"security"}}
)

type step struct {
	by      Approver
	approve bool
	err     error // nil: accepted
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name      string
		approvers []string
		min       int
		requester Requester
		steps     []step
		want      string // final state
	}{
		{"group matches", []string{"group:security"}, 1, job, []step{{bob, true, nil}}, StateApproved},
		{"group does not match", []string{"group:security"}, 1, job, []step{{dave, true, ErrNotApprover}}, StatePending},
		{"group is not a prefix match", []string{"group:sec"}, 1, job, []step{{bob, true, ErrNotApprover}}, StatePending},
		{"email matches regardless of case", []string{"email:carol@acme.example"}, 1, job, []step{{carol, true, nil}}, StateApproved},
		{"email does not match", []string{"email:carol@acme.example"}, 1, job, []step{{bob, true, ErrNotApprover}}, StatePending},
		{"user matches a token subject", []string{"user:u-dave"}, 1, job, []step{{dave, true, nil}}, StateApproved},
		{"user matches a local user", []string{"user:ops"}, 1, job, []step{{ops, true, nil}}, StateApproved},
		{"user is case-sensitive", []string{"user:U-DAVE"}, 1, job, []step{{dave, true, ErrNotApprover}}, StatePending},
		{"local-admin matches a local user", []string{"group:security", LocalAdmin}, 1, job, []step{{ops, true, nil}}, StateApproved},
		{"local-admin does not match a token", []string{LocalAdmin}, 1, job, []step{{bob, true, ErrNotApprover}}, StatePending},
		{"no approvers means local-admin only", nil, 1, job, []step{{bob, true, ErrNotApprover}, {ops, true, nil}}, StateApproved},
		{"unknown principal kind matches nothing", []string{"team:security", "security"}, 1, job, []step{{bob, true, ErrNotApprover}}, StatePending},
		{"approver without a kind", []string{"user:u-bob"}, 1, job, []step{{Approver{Subject: "u-bob"}, true, ErrInvalidApprover}}, StatePending},
		{"token without a subject", []string{"email:bob@acme.example"}, 1, job, []step{{Approver{Kind: KindOIDC, Email: "bob@acme.example"}, true, ErrInvalidApprover}}, StatePending},

		// The job's own identity never approves its own request.
		{"self: token subject", []string{"user:" + job.Subject}, 1, job,
			[]step{{Approver{Kind: KindOIDC, Subject: job.Subject}, true, ErrSelfApproval}}, StatePending},
		{"self: local user named as the token subject", []string{LocalAdmin}, 1, job,
			[]step{{Approver{Kind: KindLocal, Subject: job.Subject, UID: 1600}, true, ErrSelfApproval}}, StatePending},
		{"self: oidc email is the actor", []string{"group:security"}, 1, job,
			[]step{{Approver{Kind: KindOIDC, Subject: "u-x", Email: "ALICE", Groups: []string{"security"}}, true, ErrSelfApproval}}, StatePending},
		{"self: oidc subject is the actor", []string{"group:security"}, 1, job,
			[]step{{Approver{Kind: KindOIDC, Subject: "Alice", Groups: []string{"security"}}, true, ErrSelfApproval}}, StatePending},
		{"not self: actor's email is not the actor name", []string{"group:security"}, 1, job, []step{{alice, true, nil}}, StateApproved},
		{"self: local uid is the job's", []string{LocalAdmin}, 1, job, []step{{runner, true, ErrSelfApproval}}, StatePending},
		{"self: root cannot approve a root job locally", []string{LocalAdmin}, 1, rootJob, []step{{root, true, ErrSelfApproval}}, StatePending},
		{"root job needs a remote approver", []string{LocalAdmin, "group:security"}, 1, rootJob,
			[]step{{root, true, ErrSelfApproval}, {bob, true, nil}}, StateApproved},
		{"root approves a non-root job", []string{LocalAdmin}, 1, job, []step{{root, true, nil}}, StateApproved},
		{"self may still deny", []string{LocalAdmin}, 1, job, []step{{runner, false, nil}}, StateDenied},
		{"a non-approver cannot deny", []string{"group:security"}, 1, job, []step{{dave, false, ErrNotApprover}}, StatePending},

		// Counting.
		{"two needed, one given", []string{"group:security"}, 2, job, []step{{bob, true, nil}}, StatePending},
		{"same approver twice counts once", []string{"group:security"}, 2, job,
			[]step{{bob, true, nil}, {bob, true, nil}}, StatePending},
		{"same approver with other groups counts once", []string{"group:security", "group:eng"}, 2, job,
			[]step{{bob, true, nil}, {Approver{Kind: KindOIDC, Subject: "u-bob", Groups: []string{"eng"}}, true, nil}}, StatePending},
		{"two distinct approvers", []string{"group:security"}, 2, job, []step{{bob, true, nil}, {carol, true, nil}}, StateApproved},
		{"local and remote approvers are distinct", []string{LocalAdmin, "group:security"}, 2, job,
			[]step{{ops, true, nil}, {bob, true, nil}}, StateApproved},
		{"refused approvals do not count", []string{"group:security"}, 2, job,
			[]step{{bob, true, nil}, {dave, true, ErrNotApprover}, {alice, true, nil}}, StateApproved},
		{"deny wins at once", []string{"group:security"}, 3, job, []step{{bob, true, nil}, {carol, false, nil}}, StateDenied},
		{"deny after one's own approval", []string{"group:security"}, 2, job, []step{{bob, true, nil}, {bob, false, nil}}, StateDenied},
		{"nothing after the end", []string{"group:security"}, 1, job,
			[]step{{carol, false, nil}, {bob, true, ErrNotPending}}, StateDenied},
		{"min below one means one", []string{"group:security"}, 0, job, []step{{bob, true, nil}}, StateApproved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBroker(t, Options{})
			r, ch := b.Hold(context.Background(), Request{Session: "s1", Rule: "bulk", Statement: "DELETE FROM t",
				Stage: StageBefore, Approvers: tt.approvers, MinApprovals: tt.min, Requester: tt.requester})
			for i, s := range tt.steps {
				got, err := b.Decide(r.ID, s.by, s.approve, "")
				if !errors.Is(err, s.err) || (err != nil) != (s.err != nil) {
					t.Fatalf("step %d (%s approve=%v): err %v, want %v", i, s.by.Subject, s.approve, err, s.err)
				}
				var re *RefusedError
				if err != nil && (!errors.As(err, &re) || re.ID != r.ID || !strings.Contains(err.Error(), r.ID)) {
					t.Fatalf("step %d: error %v is not a RefusedError naming %s", i, err, r.ID)
				}
				if got.ID != r.ID {
					t.Fatalf("step %d: Decide returned request %q", i, got.ID)
				}
			}
			got, ok := b.Get(r.ID)
			if !ok || got.State != tt.want {
				t.Fatalf("state %q (found %v), want %q", got.State, ok, tt.want)
			}
			if tt.want == StatePending {
				noOutcome(t, ch)
				return
			}
			o := outcome(t, ch)
			if o.Approved != (tt.want == StateApproved) || o.Request.State != tt.want || o.Reason == "" {
				t.Fatalf("outcome %+v, want state %s", o, tt.want)
			}
		})
	}
}

func TestDecideRecords(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := newBroker(t, Options{Now: clk.Now})
	r, ch := b.Hold(context.Background(), Request{Approvers: []string{"group:security"}, MinApprovals: 2, Requester: job})
	if r.Created != clk.Now() || r.Deadline != clk.Now().Add(DefaultTimeout) || r.State != StatePending || r.MinApprovals != 2 {
		t.Fatalf("registered %+v", r)
	}
	clk.Advance(time.Minute)
	b.Decide(r.ID, bob, true, "looks fine")
	b.Decide(r.ID, bob, true, "again")
	clk.Advance(time.Minute)
	got, err := b.Decide(r.ID, carol, true, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Decisions) != 2 || got.Decisions[0].Comment != "looks fine" || got.Decisions[0].At != r.Created.Add(time.Minute) ||
		got.Decisions[1].By.Subject != "u-carol" || got.Decisions[1].At != r.Created.Add(2*time.Minute) {
		t.Fatalf("decisions %+v", got.Decisions)
	}
	o := outcome(t, ch)
	if !o.Approved || o.Reason != "approved by bob@acme.example, Carol@Acme.example" {
		t.Fatalf("outcome %+v", o)
	}

	r, ch = b.Hold(context.Background(), Request{Approvers: []string{"group:security"}, Requester: job})
	b.Decide(r.ID, bob, false, "not on a Friday")
	if o := outcome(t, ch); o.Approved || o.Reason != "denied by bob@acme.example: not on a Friday" {
		t.Fatalf("outcome %+v", o)
	}
}

func TestDecideUnknown(t *testing.T) {
	b := newBroker(t, Options{})
	_, err := b.Decide("h-aaaaaaaa", ops, true, "")
	var re *RefusedError
	if !errors.Is(err, ErrUnknownRequest) || !errors.As(err, &re) || re.ID != "h-aaaaaaaa" {
		t.Fatalf("err %v", err)
	}
	if got := err.Error(); got != "decide h-aaaaaaaa: unknown hold request" {
		t.Fatalf("message %q", got)
	}
}

func TestIDs(t *testing.T) {
	b := newBroker(t, Options{})
	valid := regexp.MustCompile(`^h-[a-z2-7]{8}$`)
	seen := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 500 {
		r, _ := b.Hold(ctx, Request{})
		if !valid.MatchString(r.ID) || seen[r.ID] {
			t.Fatalf("ID %q: invalid or repeated", r.ID)
		}
		seen[r.ID] = true
	}

	r, ch := b.Hold(context.Background(), Request{})
	typed := " " + strings.ToUpper(strings.TrimPrefix(r.ID, "h-")) + "\n"
	if got, ok := b.Get(typed); !ok || got.ID != r.ID {
		t.Fatalf("Get(%q) = %v, %v", typed, got.ID, ok)
	}
	if _, err := b.Decide(typed, ops, true, ""); err != nil {
		t.Fatal(err)
	}
	if !outcome(t, ch).Approved {
		t.Fatal("not approved")
	}
}

func TestExpiryByClock(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := newBroker(t, Options{Now: clk.Now})
	r, ch := b.Hold(context.Background(), Request{Timeout: time.Hour, Approvers: []string{LocalAdmin}, Requester: job})
	if r.Deadline != clk.Now().Add(time.Hour) {
		t.Fatalf("deadline %v", r.Deadline)
	}
	clk.Advance(59 * time.Minute)
	if got, _ := b.Get(r.ID); got.State != StatePending {
		t.Fatalf("state %s before the deadline", got.State)
	}
	noOutcome(t, ch)
	clk.Advance(time.Minute)
	_, err := b.Decide(r.ID, ops, true, "")
	if !errors.Is(err, ErrNotPending) || !strings.Contains(err.Error(), "it is expired") {
		t.Fatalf("decide at the deadline: %v", err)
	}
	o := outcome(t, ch)
	if o.Approved || o.Request.State != StateExpired || o.Reason != "no decision within 1h0m0s" {
		t.Fatalf("outcome %+v", o)
	}
}

func TestExpiryByTimer(t *testing.T) {
	b := newBroker(t, Options{})
	start := time.Now()
	r, ch := b.Hold(context.Background(), Request{Timeout: 30 * time.Millisecond})
	o := outcome(t, ch)
	if o.Approved || o.Request.State != StateExpired || o.Request.ID != r.ID {
		t.Fatalf("outcome %+v", o)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("expired after %v", d)
	}
	if _, err := b.Decide(r.ID, ops, true, ""); !errors.Is(err, ErrNotPending) {
		t.Fatalf("decide after expiry: %v", err)
	}
}

func TestCancel(t *testing.T) {
	b := newBroker(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	r, ch := b.Hold(ctx, Request{})
	noOutcome(t, ch)
	cancel()
	o := outcome(t, ch)
	if o.Approved || o.Reason != "cancelled" || o.Request.State != StateCancelled {
		t.Fatalf("outcome %+v", o)
	}
	if _, err := b.Decide(r.ID, ops, true, ""); !errors.Is(err, ErrNotPending) {
		t.Fatalf("decide after cancel: %v", err)
	}

	// A context already done cancels at once.
	_, ch = b.Hold(ctx, Request{})
	if o := outcome(t, ch); o.Reason != "cancelled" {
		t.Fatalf("outcome %+v", o)
	}
}

func TestClose(t *testing.T) {
	checkLeaks(t)
	b := NewBroker(Options{Notify: func(ctx context.Context, ev Event) { <-ctx.Done() }})
	_, ch := b.Hold(context.Background(), Request{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	b.Close(ctx) // returns although the notifier waits for its ctx
	if o := outcome(t, ch); o.Approved || o.Request.State != StateCancelled || o.Reason != "approval broker stopped" {
		t.Fatalf("outcome %+v", o)
	}
	_, ch = b.Hold(context.Background(), Request{})
	if o := outcome(t, ch); o.Approved || o.Request.State != StateCancelled {
		t.Fatalf("hold after close: %+v", o)
	}
	b.Close(ctx)
}

func TestNotify(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	done := make(chan struct{}, 10)
	release := make(chan struct{})
	var b *Broker
	b = newBroker(t, Options{Notify: func(ctx context.Context, ev Event) {
		b.List() // the broker's lock is not held
		if ev.Kind == EventRequest {
			<-release // a slow notifier blocks nobody
		}
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
		done <- struct{}{}
	}})
	r, ch := b.Hold(context.Background(), Request{Statement: "DROP TABLE t"})
	if _, err := b.Decide(r.ID, ops, true, "ok"); err != nil {
		t.Fatal(err)
	}
	outcome(t, ch)
	close(release)
	<-done
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || events[0].Kind != EventRequest || events[1].Kind != EventDecision {
		t.Fatalf("events %+v", events)
	}
	if events[0].Request.State != StatePending || events[1].Request.State != StateApproved ||
		len(events[1].Request.Decisions) != 1 || events[1].Request.ID != r.ID {
		t.Fatalf("events %+v", events)
	}
}

func TestList(t *testing.T) {
	clk := &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := newBroker(t, Options{Now: clk.Now})
	var first string
	for i := range keepFinished + 5 {
		r, _ := b.Hold(context.Background(), Request{Rule: fmt.Sprint("done", i)})
		if i == 0 {
			first = r.ID
		}
		b.Decide(r.ID, ops, false, "")
		clk.Advance(time.Second)
	}
	p1, _ := b.Hold(context.Background(), Request{Rule: "p1"})
	clk.Advance(time.Second)
	p2, _ := b.Hold(context.Background(), Request{Rule: "p2"})

	l := b.List()
	if len(l) != keepFinished+2 {
		t.Fatalf("%d listed", len(l))
	}
	if l[0].ID != p1.ID || l[1].ID != p2.ID {
		t.Fatalf("pending not first, oldest first: %s %s", l[0].Rule, l[1].Rule)
	}
	if l[2].Rule != fmt.Sprint("done", keepFinished+4) || l[len(l)-1].Rule != "done5" {
		t.Fatalf("finished not newest first: %s ... %s", l[2].Rule, l[len(l)-1].Rule)
	}
	if _, ok := b.Get(first); ok {
		t.Fatal("the oldest finished request was kept")
	}
	if _, err := b.Decide(first, ops, true, ""); !errors.Is(err, ErrUnknownRequest) {
		t.Fatalf("decide on a pruned request: %v", err)
	}
}

func TestCopies(t *testing.T) {
	b := newBroker(t, Options{})
	approvers := []string{"group:security"}
	r, _ := b.Hold(context.Background(), Request{Approvers: approvers, MinApprovals: 2})
	approvers[0] = "group:eng"
	r.Approvers[0] = "group:eng"
	by := bob
	by.Groups = []string{"security"}
	got, err := b.Decide(r.ID, by, true, "")
	if err != nil {
		t.Fatalf("the caller's slices changed the broker's request: %v", err)
	}
	got.Decisions[0].By.Groups[0] = "x"
	by.Groups[0] = "y"
	if l := b.List(); l[0].Decisions[0].By.Groups[0] != "security" {
		t.Fatalf("decision changed through a copy: %v", l[0].Decisions[0].By.Groups)
	}
}

// TestConcurrent holds, decides, cancels and lists from many goroutines;
// run with -race. Every hold ends with exactly one outcome.
func TestConcurrent(t *testing.T) {
	b := newBroker(t, Options{Notify: func(ctx context.Context, ev Event) {}})
	approvers := []Approver{bob, carol, alice, ops, root}
	const holds = 60
	var wg sync.WaitGroup
	results := make(chan Outcome, holds)
	for i := range holds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, ch := b.Hold(ctx, Request{Approvers: []string{"group:security", LocalAdmin}, MinApprovals: 3, Requester: job})
			var dw sync.WaitGroup
			for j, a := range approvers {
				dw.Add(1)
				go func() {
					defer dw.Done()
					switch {
					case i%7 == 0 && j == 4:
						cancel()
					case i%5 == 0 && j == 3:
						b.Decide(r.ID, a, false, "")
					default:
						b.Decide(r.ID, a, true, "")
					}
					b.List()
					b.Get(r.ID)
				}()
			}
			dw.Wait()
			results <- outcome(t, ch)
		}()
	}
	wg.Wait()
	close(results)
	n := 0
	for o := range results {
		n++
		switch o.Request.State {
		case StateApproved:
			approvals := 0
			for _, d := range o.Request.Decisions {
				if d.Approve {
					approvals++
				}
			}
			if approvals != 3 {
				t.Errorf("approved with %d approvals: %+v", approvals, o.Request.Decisions)
			}
		case StateDenied, StateCancelled:
		default:
			t.Errorf("final state %s", o.Request.State)
		}
	}
	if n != holds {
		t.Fatalf("%d outcomes", n)
	}
}
