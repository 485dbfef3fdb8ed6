package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/decoder/internal/evloop"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/record"
)

// coreRules add to engineRules a rule that waits on a result's size.
const coreRules = engineRules + `
policy "rows" {
  targets = ["pg"]
  hold "big" {
    when      = sql.kind == "select" && contains(sql.tables, "big") && result.rows > 100
    approvers = ["group:security"]
    timeout   = "1m"
  }
}
`

// TestCoreSessions: where the io_uring core runs here, a plaintext
// session runs its statements on it (allowed, denied, masked lookups and
// the extended protocol all give the same answers as on goroutines; the
// other engine tests check those), and leaves it, with the statement it
// stopped at carried on, for what must wait: a hold before a statement,
// and a statement whose rules wait on its result.
func TestCoreSessions(t *testing.T) {
	if !useCore || evloop.Core() != evloop.CoreUring {
		t.Skip("the relay core is not io_uring's here")
	}
	server := engineServer(t)
	server.Admin(t, "create table big as select g as id from generate_series(1, 500) g")
	login := func(t *testing.T, o decodertest.Options) (*decodertest.Harness, *decodertest.PG) {
		t.Helper()
		o.Handler, o.Rules, o.Target, o.Upstream = registered(t, 0), coreRules, "pg", server.Addr()
		h := decodertest.Start(t, o)
		pg := h.PG()
		pg.Login("postgres", nil)
		return h, pg
	}

	t.Run("steady state on the core", func(t *testing.T) {
		h, pg := login(t, decodertest.Options{})
		for i := range 50 {
			msgs := pg.Query("SELECT count(*) FROM users")
			if len(decodertest.Errors(msgs)) != 0 || decodertest.Types(msgs) != "TDCZ" {
				t.Fatalf("query %d: %v", i, msgs)
			}
		}
		wantError(t, pg.Query("DROP TABLE users"), "ERROR", codeInsufficientPrivilege, `"ci/deny/no-drop"`)
		pg.Send(&pgproto3.Parse{Name: "s", Query: "SELECT email FROM users WHERE id = $1"},
			&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("1")}}, &pgproto3.Describe{ObjectType: 'P'},
			&pgproto3.Execute{}, &pgproto3.Sync{})
		if msgs := pg.UntilReady(); decodertest.Types(msgs) != "12TDCZ" {
			t.Fatalf("extended protocol: %v", msgs)
		}
		notSeen(t, h, "DROP TABLE")
		res := h.End()
		if res.Err != nil {
			t.Fatalf("session: %v", res.Err)
		}
		decodertest.WantRelayCore(t, res, "io_uring")
		if res.BytesFromClient == 0 || res.BytesToClient == 0 {
			t.Fatalf("byte counts not kept on the core: %+v", res)
		}
	})

	t.Run("hold leaves the core", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		h, pg := login(t, decodertest.Options{Holder: decodertest.BrokerHolder(broker, time.Minute)})
		if msgs := pg.Query("SELECT 'before-hold'"); len(decodertest.Errors(msgs)) != 0 {
			t.Fatal(msgs)
		}
		pg.Send(&pgproto3.Query{String: "COPY users TO STDOUT"})
		if m := pg.Receive(); m.Type != 'N' {
			t.Fatalf("got %v, want the hold's notice", m)
		}
		approveOnly(t, broker)
		msgs := pg.UntilReady()
		if len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("COPY users TO STDOUT") {
			t.Fatalf("approved COPY: %v", msgs)
		}
		// The session goes on, on goroutines.
		if msgs := pg.Query("SELECT 'after-hold'"); len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("after-hold") {
			t.Fatalf("after the hold: %v", msgs)
		}
		decodertest.WantRelayCore(t, h.End(), "io_uring, then goroutines: a statement held for approval")
	})

	t.Run("result rule without an approver, on the core", func(t *testing.T) {
		h, pg := login(t, decodertest.Options{})
		if msgs := pg.Query("SELECT id FROM big WHERE id <= 100"); len(decodertest.Errors(msgs)) != 0 {
			t.Fatalf("100 rows: %v", msgs)
		}
		// No approver: the hold on row 101 refuses the result after
		// exactly 100 rows, decided on the core.
		msgs := pg.Query("SELECT id FROM big")
		e := wantError(t, msgs, "ERROR", codeInsufficientPrivilege, `"rows/hold/big"`)
		if rows := strings.Count(decodertest.Types(msgs), "D"); rows != 100 {
			t.Fatalf("%d rows before the refusal (%s), want 100", rows, e.Message)
		}
		if msgs := pg.Query("SELECT 'after-refusal'"); len(decodertest.Errors(msgs)) != 0 {
			t.Fatalf("after the refusal: %v", msgs)
		}
		decodertest.WantRelayCore(t, h.End(), "io_uring")
	})

	t.Run("result hold leaves the core at its row", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		h, pg := login(t, decodertest.Options{Holder: decodertest.BrokerHolder(broker, time.Minute)})
		pg.Send(&pgproto3.Query{String: "SELECT id FROM big ORDER BY id"})
		var msgs []decodertest.Msg
		for {
			m := pg.Receive()
			msgs = append(msgs, m)
			if m.Type == 'N' {
				break
			}
		}
		if rows := strings.Count(decodertest.Types(msgs), "D"); rows != 100 {
			t.Fatalf("%d rows before the hold's notice, want 100", rows)
		}
		approveOnly(t, broker)
		msgs = append(msgs, pg.UntilReady()...)
		if len(decodertest.Errors(msgs)) != 0 || strings.Count(decodertest.Types(msgs), "D") != 500 {
			t.Fatalf("approved result: %d rows, %v", strings.Count(decodertest.Types(msgs), "D"), decodertest.Errors(msgs))
		}
		if msgs := pg.Query("SELECT 'after-hold'"); len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("after-hold") {
			t.Fatalf("after the hold: %v", msgs)
		}
		decodertest.WantRelayCore(t, h.End(), "io_uring, then goroutines: a result held for approval")
	})

	t.Run("pipelined batch with a held Parse", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		h, pg := login(t, decodertest.Options{Holder: decodertest.BrokerHolder(broker, time.Minute)})
		// One write: an allowed statement, then a batch whose Parse is
		// held, then another allowed statement. The core stops at the
		// held Parse; the goroutines carry on with what follows it.
		pg.Send(&pgproto3.Parse{Query: "SELECT 'first'"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Parse{Query: "COPY users TO STDOUT"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Query{String: "SELECT 'last'"})
		// The first batch's answers and the hold's notice, in either
		// order (the notice is written as the hold begins, as on the
		// goroutines).
		var first []decodertest.Msg
		for noticed := false; !noticed || strings.Count(decodertest.Types(first), "Z") < 1; {
			m := pg.Receive()
			if m.Type == 'N' {
				noticed = true
				continue
			}
			first = append(first, m)
		}
		if decodertest.Types(first) != "12DCZ" {
			t.Fatalf("first batch: %v", first)
		}
		approveOnly(t, broker)
		held := pg.UntilReady()
		if len(decodertest.Errors(held)) != 0 || strings.Count(decodertest.Types(held), "d") != 2 {
			t.Fatalf("approved COPY batch: %v", held)
		}
		last := pg.UntilReady()
		if decodertest.Types(last) != "TDCZ" || !h.Tap.Contains("SELECT 'last'") {
			t.Fatalf("the statement after the held batch: %v", last)
		}
		decodertest.WantRelayCore(t, h.End(), "io_uring, then goroutines: a statement held for approval")
	})

	t.Run("message too long for the core", func(t *testing.T) {
		h, pg := login(t, decodertest.Options{})
		if msgs := pg.Query("SELECT 'small'"); len(decodertest.Errors(msgs)) != 0 {
			t.Fatal(msgs)
		}
		long := strings.Repeat("x", coreMaxMessage+1000)
		msgs := pg.Query("SELECT length('" + long + "')")
		if len(decodertest.Errors(msgs)) != 0 || decodertest.Types(msgs) != "TDCZ" {
			t.Fatalf("long query: %v", msgs)
		}
		if msgs := pg.Query("SELECT 'after-long'"); len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("after-long") {
			t.Fatalf("after the long query: %v", msgs)
		}
		decodertest.WantRelayCore(t, h.End(), "io_uring, then goroutines: a message too long for the core")
	})

	t.Run("record full on the core as on goroutines", func(t *testing.T) {
		// The same script with the core and without: the recording's
		// wire bytes from the client are the same, and what the client
		// was sent holds the same results.
		wire := func(t *testing.T, onCore bool) (c2s, s2c string) {
			t.Helper()
			defer func(v bool) { useCore = v }(useCore)
			useCore = onCore
			h, pg := login(t, decodertest.Options{Record: record.Full})
			for i := range 20 {
				if msgs := pg.Query(fmt.Sprintf("SELECT 'wire-%02d', email FROM users ORDER BY id", i)); len(decodertest.Errors(msgs)) != 0 {
					t.Fatal(msgs)
				}
			}
			wantError(t, pg.Query("DROP TABLE users"), "ERROR", codeInsufficientPrivilege, `"ci/deny/no-drop"`)
			want := map[bool]string{true: "io_uring", false: "goroutines"}[onCore]
			decodertest.WantRelayCore(t, h.End(), want)
			var c, s strings.Builder
			for _, e := range h.Recorder.Events() {
				if e.Type != record.TypeWire {
					continue
				}
				if e.Dir == record.DirClientToServer {
					c.Write(e.Data)
				} else {
					s.Write(e.Data)
				}
			}
			return c.String(), s.String()
		}
		c1, s1 := wire(t, true)
		c2, s2 := wire(t, false)
		// The StartupMessage's parameters come in the test client's map
		// order: compare from the first message after it.
		afterStartup := func(c string) string {
			if len(c) < 4 {
				return ""
			}
			return c[binary.BigEndian.Uint32([]byte(c[:4])):]
		}
		c1, c2 = afterStartup(c1), afterStartup(c2)
		if c1 != c2 {
			for i := range min(len(c1), len(c2)) {
				if c1[i] != c2[i] {
					t.Logf("first difference at %d: %q vs %q", i, c1[max(0, i-40):min(len(c1), i+40)], c2[max(0, i-40):min(len(c2), i+40)])
					break
				}
			}
			t.Fatalf("client bytes recorded on the core (%d) differ from the goroutines' (%d)", len(c1), len(c2))
		}
		for i := range 20 {
			w := fmt.Sprintf("wire-%02d", i)
			if strings.Count(s1, w) != 2 || strings.Count(s2, w) != 2 { // one per row
				t.Fatalf("%s recorded as sent %d times on the core, %d on goroutines", w, strings.Count(s1, w), strings.Count(s2, w))
			}
		}
		if !strings.Contains(s1, "ci/deny/no-drop") || strings.Count(s1, "two@example.com") != 20 {
			t.Fatal("the denial or the rows are missing from what the core recorded as sent")
		}
	})
}

// approveOnly approves the one request the broker holds, as a member of
// the security group.
func approveOnly(t *testing.T, broker *approve.Broker) {
	t.Helper()
	reqs := broker.List()
	if len(reqs) != 1 {
		t.Fatalf("broker has %d requests", len(reqs))
	}
	if _, err := broker.Decide(reqs[0].ID, approve.Approver{Kind: approve.KindOIDC, Subject: "sec", Groups: []string{"security"}}, true, ""); err != nil {
		t.Fatal(err)
	}
}
