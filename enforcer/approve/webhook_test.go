package approve

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fastRetry keeps the real policy's shape with short waits.
var fastRetry = retryPolicy{attempts: 5, first: time.Millisecond, max: 4 * time.Millisecond, maxResponse: 512}

// hookServer is a webhook receiver on 127.0.0.1 that answers the first
// len(fail) POSTs with those statuses and 200 after; it keeps the bodies.
type hookServer struct {
	*httptest.Server
	fail   []int
	hits   atomic.Int32
	mu     sync.Mutex
	bodies [][]byte
}

func newHookServer(t *testing.T, fail ...int) *hookServer {
	h := &hookServer{fail: fail}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(h.hits.Add(1))
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.bodies = append(h.bodies, body)
		h.mu.Unlock()
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if n <= len(h.fail) {
			w.WriteHeader(h.fail[n-1])
			io.WriteString(w, "try later")
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(h.Close)
	return h
}

// logBuffer captures log output for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testLogger(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Debug})
}

func sampleEvent() Event {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return Event{Kind: EventDecision, Request: Request{
		ID: "h-abcd2345", Session: "s-1", Target: "prod-db", Rule: "bulk", Reason: "bulk reads need a second pair of eyes",
		Statement: "COPY users TO STDOUT", Stage: StageResult, Rows: 1000,
		Approvers: []string{"group:security"}, MinApprovals: 1, Requester: job,
		Created: at, Deadline: at.Add(DefaultTimeout), State: StateApproved,
		Decisions: []Decision{{By: Approver{Kind: KindOIDC, Subject: "u-bob", Email: "bob@acme.example",
			Groups: []string{"security"}, Claims: map[string]string{"secret_claim": "do-not-send"}}, Approve: true, Comment: "ok", At: at.Add(time.Minute)}},
	}}
}

func TestWebhookRetries(t *testing.T) {
	checkLeaks(t)
	h := newHookServer(t, http.StatusServiceUnavailable, http.StatusTooManyRequests)
	var logs logBuffer
	notify := webhook(h.URL+"/hook/SECRET", FormatJSON, h.Client(), testLogger(&logs), fastRetry)
	notify(context.Background(), sampleEvent())
	if n := h.hits.Load(); n != 3 {
		t.Fatalf("%d attempts, want 3", n)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.bodies {
		if !bytes.Equal(b, h.bodies[0]) {
			t.Fatal("retries sent different bodies")
		}
	}
	var got jsonEvent
	if err := json.Unmarshal(h.bodies[2], &got); err != nil {
		t.Fatal(err)
	}
	if got.Kind != EventDecision || got.Request.ID != "h-abcd2345" || got.ApproveCommand != "sluice approve h-abcd2345" ||
		got.DenyCommand != "sluice deny h-abcd2345" || got.Request.Requester.Actor != "alice" || len(got.Request.Decisions) != 1 {
		t.Fatalf("body %+v", got)
	}
	if l := logs.String(); strings.Contains(l, "SECRET") || !strings.Contains(l, "webhook delivered") {
		t.Fatalf("log:\n%s", l)
	}
}

// TestWebhookGivesUp: a webhook that never succeeds is retried the set
// number of times, logged, and leaves the request pending.
func TestWebhookGivesUp(t *testing.T) {
	h := newHookServer(t, 500, 500, 500, 500, 500, 500, 500)
	var logs logBuffer
	hook := webhook(h.URL+"/hook/SECRET", FormatJSON, h.Client(), testLogger(&logs), fastRetry)
	returned := make(chan struct{}, 2)
	b := newBroker(t, Options{Notify: func(ctx context.Context, ev Event) {
		hook(ctx, ev)
		returned <- struct{}{}
	}})
	t.Cleanup(h.Close) // before newBroker's leak check
	r, ch := b.Hold(context.Background(), Request{Approvers: []string{"group:security"}, Requester: job})
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("webhook still retrying")
	}
	if n := h.hits.Load(); n != int32(fastRetry.attempts) {
		t.Fatalf("%d attempts, want %d", n, fastRetry.attempts)
	}
	noOutcome(t, ch)
	if got, _ := b.Get(r.ID); got.State != StatePending || len(got.Decisions) != 0 {
		t.Fatalf("a failed webhook changed the request: %+v", got)
	}
	l := logs.String()
	if !strings.Contains(l, "webhook gave up") || !strings.Contains(l, "500 Internal Server Error") || strings.Contains(l, "SECRET") {
		t.Fatalf("log:\n%s", l)
	}
}

func TestWebhookFailures(t *testing.T) {
	tests := []struct {
		name  string
		fail  []int
		hits  int32
		log   string
		close bool // the server is gone: connection refused
	}{
		{"4xx is not retried", []int{http.StatusNotFound}, 1, "404 Not Found", false},
		{"5xx is retried", []int{502}, 2, "webhook delivered", false},
		{"connection refused is retried and given up", nil, 0, "webhook gave up", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			h := newHookServer(t, tt.fail...)
			if tt.close {
				h.Close()
			}
			var logs logBuffer
			webhook(h.URL+"/hook/SECRET", FormatJSON, nil, testLogger(&logs), fastRetry)(context.Background(), sampleEvent())
			if n := h.hits.Load(); n != tt.hits {
				t.Fatalf("%d attempts, want %d", n, tt.hits)
			}
			if l := logs.String(); !strings.Contains(l, tt.log) || strings.Contains(l, "SECRET") {
				t.Fatalf("log:\n%s", l)
			}
			if tt.close && strings.Count(logs.String(), "retrying") != fastRetry.attempts-1 {
				t.Fatalf("log:\n%s", logs.String())
			}
		})
	}
}

func TestWebhookContextStopsRetries(t *testing.T) {
	h := newHookServer(t, 500, 500, 500, 500, 500)
	ctx, cancel := context.WithCancel(context.Background())
	var logs logBuffer
	slow := retryPolicy{attempts: 5, first: time.Hour, max: time.Hour}
	done := make(chan struct{})
	go func() {
		webhook(h.URL, FormatJSON, h.Client(), testLogger(&logs), slow)(ctx, sampleEvent())
		close(done)
	}()
	for h.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("webhook did not stop when its context was done")
	}
	if n := h.hits.Load(); n != 1 || !strings.Contains(logs.String(), "context canceled") {
		t.Fatalf("%d attempts; log:\n%s", n, logs.String())
	}
}

func TestWebhookBadConfig(t *testing.T) {
	for _, f := range []string{"", FormatJSON, FormatSlack} {
		if err := CheckFormat(f); err != nil {
			t.Errorf("CheckFormat(%q): %v", f, err)
		}
	}
	if err := CheckFormat("teams"); err == nil {
		t.Error("CheckFormat accepted teams")
	}
	h := newHookServer(t)
	for _, c := range []struct{ url, format string }{{h.URL, "teams"}, {"ftp://127.0.0.1/x", FormatJSON}, {"http://%zz/SECRET", FormatJSON}} {
		var logs logBuffer
		webhook(c.url, c.format, h.Client(), testLogger(&logs), fastRetry)(context.Background(), sampleEvent())
		if l := logs.String(); !strings.Contains(l, "webhook not sent") || strings.Contains(l, "SECRET") {
			t.Errorf("%s %s: log:\n%s", c.url, c.format, l)
		}
	}
	if n := h.hits.Load(); n != 0 {
		t.Fatalf("%d posts with a bad configuration", n)
	}
}

// TestWebhookSchema pins the JSON format's field names: the schema is
// documented as stable, so this list only ever grows.
func TestWebhookSchema(t *testing.T) {
	body, err := json.Marshal(jsonMessage(sampleEvent()))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(body, &m)
	keys := func(v any) []string {
		var k []string
		for name := range v.(map[string]any) {
			k = append(k, name)
		}
		slices.Sort(k)
		return k
	}
	req := m["request"].(map[string]any)
	dec := req["decisions"].([]any)[0].(map[string]any)
	for _, c := range []struct {
		v    any
		want string
	}{
		{m, "approve_command deny_command kind request"},
		{req, "approvers created deadline decisions id min_approvals reason requester rows rule session stage state statement statement_truncated target"},
		{req["requester"], "actor comm identity_level job pid repository subject uid"},
		{dec, "approve at by comment"},
		{dec["by"], "email groups kind subject uid"},
	} {
		if got := strings.Join(keys(c.v), " "); got != c.want {
			t.Errorf("keys %q, want %q", got, c.want)
		}
	}
	if req["created"] != "2025-01-02T03:04:05Z" || req["rows"] != 1000.0 || req["stage"] != "result" {
		t.Errorf("request %v", req)
	}
	if strings.Contains(string(body), "do-not-send") {
		t.Error("an approver's claims were sent")
	}

	// Nothing decided yet: empty arrays, not null; a long statement is cut.
	ev := sampleEvent()
	ev.Kind, ev.Request.Decisions, ev.Request.Approvers = EventRequest, nil, nil
	ev.Request.Statement = "SELECT '" + strings.Repeat("é", MaxWebhookStatement) + "'"
	body, _ = json.Marshal(jsonMessage(ev))
	var got jsonEvent
	json.Unmarshal(body, &got)
	if !bytes.Contains(body, []byte(`"decisions":[]`)) || !bytes.Contains(body, []byte(`"approvers":[]`)) {
		t.Errorf("body %s", body[:200])
	}
	if !got.Request.StatementTruncated || len(got.Request.Statement) > MaxWebhookStatement || strings.ContainsRune(got.Request.Statement, '\uFFFD') {
		t.Errorf("statement of %d bytes, truncated %v", len(got.Request.Statement), got.Request.StatementTruncated)
	}
}

func TestSlackBody(t *testing.T) {
	h := newHookServer(t)
	ev := sampleEvent()
	ev.Kind, ev.Request.State, ev.Request.Decisions = EventRequest, StatePending, nil
	ev.Request.Statement = "SELECT * FROM users WHERE note <> '<@channel> & ```' AND id IN (" + strings.Repeat("1, ", 400) + "1)"
	webhook(h.URL, FormatSlack, h.Client(), nil, fastRetry)(context.Background(), ev)
	if h.hits.Load() != 1 {
		t.Fatalf("%d posts", h.hits.Load())
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type     string `json:"type"`
			Text     *struct{ Type, Text string }
			Fields   []struct{ Type, Text string }
			Elements []struct{ Type, Text string }
		} `json:"blocks"`
	}
	h.mu.Lock()
	if err := json.Unmarshal(h.bodies[0], &msg); err != nil {
		t.Fatal(err)
	}
	h.mu.Unlock()
	if !strings.Contains(msg.Text, "h-abcd2345") || !strings.Contains(msg.Text, "sluice approve h-abcd2345") {
		t.Errorf("text %q", msg.Text)
	}
	var types []string
	var all strings.Builder
	for _, b := range msg.Blocks {
		types = append(types, b.Type)
		if b.Text != nil {
			all.WriteString(b.Text.Text + "\n")
			if len(b.Text.Text) > 3000 {
				t.Errorf("a %s block's text has %d characters, over Slack's 3000", b.Type, len(b.Text.Text))
			}
		}
		for _, f := range append(b.Fields, b.Elements...) {
			all.WriteString(f.Text + "\n")
		}
	}
	if got := strings.Join(types, " "); got != "header section section section context" {
		t.Errorf("blocks %s", got)
	}
	if msg.Blocks[0].Text.Type != "plain_text" || !strings.Contains(msg.Blocks[0].Text.Text, "h-abcd2345") {
		t.Errorf("header %+v", msg.Blocks[0].Text)
	}
	s := all.String()
	for _, want := range []string{"prod-db", "bulk", "acme/app by alice (job deploy)", "group:security (1 needed)",
		"mid-result, after 1000 rows", "&lt;@channel&gt; &amp;", "`sluice approve h-abcd2345`", "`sluice deny h-abcd2345`", " …```"} {
		if !strings.Contains(s, want) {
			t.Errorf("message lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "<@channel>") || strings.Count(s, "```") != 2 {
		t.Errorf("statement not escaped:\n%s", s)
	}
	if len(msg.Blocks[3].Text.Text) > slackStatement+60 {
		t.Errorf("statement block of %d bytes", len(msg.Blocks[3].Text.Text))
	}

	// The decision message names who decided.
	m := slackMessage(sampleEvent())
	last := m.Blocks[len(m.Blocks)-1]
	if !strings.Contains(m.Text, "approved") || last.Type != "context" || last.Elements[0].Text != "bob@acme.example approved: ok" {
		t.Errorf("decision message %+v", m)
	}
}
