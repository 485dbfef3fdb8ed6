package events

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/internal/testenv"
)

// readStream returns every event in the stream, by id, failing on a
// duplicate.
func readStream(t *testing.T, url, stream string) map[string]Event {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Event{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		var e Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatal(err)
		}
		if want := "sluice.events." + e.VM + "." + e.Type; m.Subject != want {
			t.Errorf("subject %s, want %s", m.Subject, want)
		}
		if _, dup := got[e.ID]; dup {
			t.Errorf("event %s stored twice", e.ID)
		}
		got[e.ID] = e
	}
	return got
}

// TestPublishSurvivesServerKill publishes events while nats-server is
// killed with SIGKILL and restarted on the same port and store: every
// event arrives, once.
func TestPublishSurvivesServerKill(t *testing.T) {
	n := testenv.StartNATS(t)
	buf, err := OpenBuffer(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	p := New(Config{URL: n.URL, Stream: "SLUICE_EVENTS", Prefix: "sluice.events", VM: "vm-a"}, buf, hclog.NewNullLogger())
	p.retry = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	const total = 3000
	start := time.Now()
	for i := 0; i < total; i++ {
		p.Publish(Event{Type: "statement", Verdict: "deny", Text: fmt.Sprintf("DROP TABLE t%d", i)})
		if i == total/3 {
			testenv.WaitFor(t, 10*time.Second, "some events sent", func() bool { return p.Stats().Sent > 0 })
			n.Kill(t)
		}
		if i == 2*total/3 {
			if st := p.Stats(); st.Pending == 0 {
				t.Errorf("nothing pending with the server down: %+v", st)
			}
			n.Start(t)
		}
		if i%100 == 0 {
			// Each hundred reaches the buffer (or the stream) before
			// the next is published, so publishing spans the kill and
			// the restart instead of landing in the queue at once.
			want := int64(i + 1)
			testenv.WaitFor(t, 10*time.Second, "the events so far buffered or sent", func() bool {
				st := p.Stats()
				return st.Pending+st.Sent >= want
			})
		}
	}
	testenv.WaitFor(t, 30*time.Second, "every event sent", func() bool { st := p.Stats(); return st.Pending == 0 && st.Sent >= total })
	t.Logf("%d events with a kill -9 and restart of nats-server: all acknowledged %v after the first; %+v", total, time.Since(start).Round(time.Millisecond), p.Stats())
	got := readStream(t, n.URL, "SLUICE_EVENTS")
	if len(got) != total {
		t.Fatalf("stream holds %d distinct events, want %d", len(got), total)
	}
	for i := 1; i <= total; i++ {
		id := fmt.Sprintf("vm-a-%s-%d", p.run, i)
		if _, ok := got[id]; !ok {
			t.Fatalf("event %s missing", id)
		}
	}
}

// TestPublishAfterRestart: events buffered while NATS is down, by a
// publisher that then stops, are sent by the next one over the same
// buffer directory (a sluiced restart with the disk kept).
func TestPublishAfterRestart(t *testing.T) {
	n := testenv.StartNATS(t)
	n.Stop(t)
	dir := t.TempDir()
	cfg := Config{URL: n.URL, Stream: "SLUICE_EVENTS", Prefix: "sluice.events", VM: "vm-b"}
	buf, err := OpenBuffer(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	p := New(cfg, buf, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	for i := 0; i < 100; i++ {
		p.Publish(Event{Type: "session_start", Session: fmt.Sprint(i)})
	}
	testenv.WaitFor(t, 10*time.Second, "events buffered", func() bool { return p.Stats().Pending == 100 })
	cancel()
	<-done
	buf.Close()

	n.Start(t)
	buf, err = OpenBuffer(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	p2 := New(cfg, buf, hclog.NewNullLogger())
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { defer close(done); p2.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 20*time.Second, "buffered events sent after the restart", func() bool { return p2.Stats().Pending == 0 && p2.Stats().Sent == 100 })
	if got := readStream(t, n.URL, "SLUICE_EVENTS"); len(got) != 100 {
		t.Fatalf("stream holds %d events, want 100", len(got))
	}
}
