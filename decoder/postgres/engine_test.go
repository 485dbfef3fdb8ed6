package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// The engine's unit tests: the registered postgres handler (or Serve with
// parameters the registration fixes) runs in process under
// decoder/decodertest, between a scripted client and a real PostgreSQL
// on loopback. Every test asserts both sides: what the client was told,
// and that what was refused never reached the server (the harness's Tap
// holds every byte sent towards it).

// engineRules is the ruleset of the engine tests: target pg, one policy
// with a deny for each way a statement is refused, and a hold.
const engineRules = `
target "pg" {
  protocol     = "postgres"
  address      = ["127.0.0.1:5432"]
  upstream_tls = "disable"
}

policy "ci" {
  targets = ["pg"]

  deny "no-drop" {
    when   = sql.kind == "drop"
    reason = "schema changes go through migrations"
  }
  deny "search-path" {
    when = contains(sql.flags, "search_path")
  }
  deny "fastpath" {
    when = sql.kind == "function_call"
  }
  deny "pattern" {
    when = identity.pattern != "" && regex(identity.pattern, sql.text)
  }
  hold "export" {
    when      = sql.kind == "copy_out"
    approvers = ["group:security"]
    timeout   = "1m"
  }
}
`

// maskRules masks users.email on every SELECT.
const maskRules = `
target "pg" {
  protocol     = "postgres"
  address      = ["127.0.0.1:5432"]
  upstream_tls = "disable"
}

policy "ci" {
  targets = ["pg"]
  mask "pii" {
    columns = ["users.email"]
    using   = "hash"
  }
}
`

const engineSchema = `create table users(id int primary key, email text);
insert into users values (1, 'one@example.com'), (2, 'two@example.com');`

// registered returns the postgres handler as the daemon builds it from
// the registry, with messages bounded by maxMessage (0: the default).
func registered(t *testing.T, maxMessage int) decoder.Handler {
	t.Helper()
	p, ok := decoder.Lookup(ruleset.ProtoPostgres)
	if !ok || p.New == nil {
		t.Fatal("postgres is not registered with a handler")
	}
	return p.New(decoder.Env{MaskKey: bytes.Repeat([]byte{7}, 32), MaxMessage: maxMessage, Log: hclog.NewNullLogger()})
}

// serveWith is a handler that runs Serve with p's fields over the flow's
// own client, dial and session: for parameters the registered handler
// fixes (Masks, Cancels).
func serveWith(p Params) decoder.Handler {
	return func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc) decoder.Result {
		p.Client, p.Dial, p.Session = client, dial, f.Session
		if p.Classify == nil {
			p.Classify = Classify
		}
		st, err := Serve(ctx, p)
		return decoder.Result{BytesFromClient: st.BytesFromClient, BytesToClient: st.BytesToClient, Err: err}
	}
}

// deadUpstream returns a loopback address nothing listens on.
func deadUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// wantError checks that msgs hold exactly one ErrorResponse, with code,
// severity, and a message containing each of words.
func wantError(t *testing.T, msgs []decodertest.Msg, severity, code string, words ...string) *pgproto3.ErrorResponse {
	t.Helper()
	errs := decodertest.Errors(msgs)
	if len(errs) != 1 {
		t.Fatalf("got %d errors in %v, want one %s %s", len(errs), msgs, severity, code)
	}
	e := errs[0]
	if e.Code != code || e.Severity != severity {
		t.Fatalf("got %s %s %q (%s), want %s %s", e.Severity, e.Code, e.Message, e.Detail, severity, code)
	}
	for _, w := range words {
		if !strings.Contains(e.Message+"\n"+e.Detail, w) {
			t.Errorf("error %q (detail %q) does not say %q", e.Message, e.Detail, w)
		}
	}
	return e
}

// notSeen fails the test if any of texts went towards the server.
func notSeen(t *testing.T, h *decodertest.Harness, texts ...string) {
	t.Helper()
	for _, s := range texts {
		if h.Tap.Contains(s) {
			t.Errorf("the server received %q", s)
		}
	}
}

// startupPacket frames a startup-phase packet: its length, then body.
func startupPacket(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

// TestEngineStartupRefusals: what the engine refuses before it ever
// dials the server: malformed and unsupported startup packets, endless
// negotiation, and a startup parameter a rule denies (decided like SET
// search_path). The client gets a FATAL with the code, the session ends,
// and the server is never dialed. No server is needed: the upstream is an
// address nothing listens on.
func TestEngineStartupRefusals(t *testing.T) {
	gss := startupPacket(binary.BigEndian.AppendUint32(nil, codeGSSENCRequest))
	tests := []struct {
		name   string
		send   []byte
		answer string // the bytes before the error: one 'N' per declined request
		code   string
		words  []string
	}{
		{"length too short", []byte{0, 0, 0, 4, 0, 0, 0, 0}, "", codeProtocolViolation, []string{"invalid length 4"}},
		{"length too long", binary.BigEndian.AppendUint32(nil, 20000), "", codeProtocolViolation, []string{"invalid length 20000"}},
		{"protocol 2.0", startupPacket(binary.BigEndian.AppendUint32(nil, 2<<16)), "", codeProtocolViolation, []string{"unsupported protocol version 2.0"}},
		{"undecodable startup", startupPacket(append(binary.BigEndian.AppendUint32(nil, pgproto3.ProtocolVersion30), "user"...)), "", codeProtocolViolation, []string{"invalid startup message"}},
		{"endless negotiation", bytes.Repeat(gss, 5), "NNNN", codeProtocolViolation, []string{"too many startup negotiation packets"}},
		{"options search_path", decodertest.Encode(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
			Parameters: map[string]string{"user": "postgres", "options": "-c search_path=evil,public"}}), "", codeInsufficientPrivilege,
			[]string{`"ci/deny/search-path"`}},
		{"search_path parameter", decodertest.Encode(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
			Parameters: map[string]string{"user": "postgres", "search_path": "evil"}}), "", codeInsufficientPrivilege,
			[]string{`"ci/deny/search-path"`}},
		{"options search_path in capitals after GSS", append(gss, decodertest.Encode(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
			Parameters: map[string]string{"user": "postgres", "options": "--SEARCH_PATH=evil"}})...), "N", codeInsufficientPrivilege,
			[]string{`"ci/deny/search-path"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := decodertest.Start(t, decodertest.Options{Handler: registered(t, 0), Rules: engineRules, Target: "pg",
				Upstream: deadUpstream(t), Timeout: 5 * time.Second})
			pg := h.PG()
			h.Send(tt.send)
			for i := range tt.answer {
				if b := pg.Answer(); b != tt.answer[i] {
					t.Fatalf("negotiation answer %d: got %q, want %q", i, b, tt.answer[i])
				}
			}
			wantError(t, pg.UntilEnd(), "FATAL", tt.code, tt.words...)
			res := h.Wait()
			if res.Err == nil {
				t.Error("the handler reports no error for a refused session")
			}
			if n := len(h.Tap.Conns()); n != 0 {
				t.Errorf("the server was dialed %d times; a session refused at startup must never reach it", n)
			}
		})
	}
}

// TestEngineCancelUnknown: a CancelRequest for a backend no session of
// this daemon owns is dropped: not forwarded, nothing dialed, the
// connection closed without an answer (as PostgreSQL does).
func TestEngineCancelUnknown(t *testing.T) {
	h := decodertest.Start(t, decodertest.Options{Handler: registered(t, 0), Rules: engineRules, Target: "pg",
		Upstream: deadUpstream(t), Timeout: 5 * time.Second})
	h.Send(decodertest.Encode(&pgproto3.CancelRequest{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}}))
	if b := h.ReadToEOF(); len(b) != 0 {
		t.Errorf("the client got %q in answer to a cancel request", b)
	}
	if res := h.Wait(); res.Err != nil {
		t.Errorf("handler: %v", res.Err)
	}
	if n := len(h.Tap.Conns()); n != 0 {
		t.Errorf("an unknown cancel request dialed the server %d times", n)
	}
}

// TestEngineServerUnreachable: a server that drops the proxy's
// connection at once ends the session with a FATAL 08006, not a bare
// close.
func TestEngineServerUnreachable(t *testing.T) {
	h := decodertest.Start(t, decodertest.Options{Handler: registered(t, 0), Rules: engineRules, Target: "pg",
		Upstream: deadUpstream(t), Timeout: 5 * time.Second})
	pg := h.PG()
	pg.Startup(map[string]string{"user": "postgres", "database": "postgres"})
	wantError(t, pg.UntilEnd(), "FATAL", codeConnectionFailure, "sluice:")
	if res := h.Wait(); res.Err == nil {
		t.Error("the handler reports no error for a session whose server went away")
	}
}

// engineServer starts the private PostgreSQL the relay tests share.
func engineServer(t *testing.T) *testenv.Postgres {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.Admin(t, engineSchema)
	return pg
}

// TestEngineRelay drives the registered handler against a real server:
// each refusal the relay makes, with what the client got and what the
// server never saw. Each subtest first proves the session works (an
// allowed statement reaches the server and the Tap sees it), so a
// refusal is not mistaken for a broken harness.
func TestEngineRelay(t *testing.T) {
	server := engineServer(t)
	// login starts a harness with o (the registered handler and
	// engineRules unless set) and logs in.
	login := func(t *testing.T, o decodertest.Options) (*decodertest.Harness, *decodertest.PG) {
		t.Helper()
		if o.Handler == nil {
			o.Handler = registered(t, 0)
		}
		if o.Rules == "" {
			o.Rules = engineRules
		}
		o.Target, o.Upstream = "pg", server.Addr()
		h := decodertest.Start(t, o)
		pg := h.PG()
		pg.Login("postgres", nil)
		return h, pg
	}
	// start is login, then an allowed statement that must reach the
	// server.
	start := func(t *testing.T, o decodertest.Options) (*decodertest.Harness, *decodertest.PG) {
		t.Helper()
		h, pg := login(t, o)
		msgs := pg.Query("SELECT 'harness-alive'")
		if len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("harness-alive") {
			t.Fatalf("an allowed statement did not reach the server: %v", msgs)
		}
		return h, pg
	}

	t.Run("denied by a rule", func(t *testing.T) {
		h, pg := start(t, decodertest.Options{})
		wantError(t, pg.Query("DROP TABLE users"), "ERROR", codeInsufficientPrivilege,
			`"ci/deny/no-drop"`, "schema changes go through migrations")
		notSeen(t, h, "DROP TABLE")
		// The session goes on, and the table is still there.
		if msgs := pg.Query("SELECT count(*) FROM users"); len(decodertest.Errors(msgs)) != 0 {
			t.Errorf("after a denial: %v", msgs)
		}
		h.End()
		if got := server.Admin(t, "SELECT count(*) FROM users"); got != "2" {
			t.Errorf("users has %s rows after a denied DROP", got)
		}
	})

	t.Run("unparsable statement", func(t *testing.T) {
		h, pg := start(t, decodertest.Options{})
		wantError(t, pg.Query("SELEC email FRM users"), "ERROR", codeInsufficientPrivilege,
			`"sluice/unparsable"`, "could not be parsed")
		notSeen(t, h, "SELEC email")
	})

	t.Run("rule evaluation error", func(t *testing.T) {
		// A rule whose condition cannot be evaluated (an invalid
		// pattern from a claim) denies every statement.
		h, pg := login(t, decodertest.Options{Identity: ruleset.Identity{Level: ruleset.LevelOIDC,
			Claims: map[string]string{"pattern": "(["}}})
		wantError(t, pg.Query("SELECT 'eval-error'"), "ERROR", codeInsufficientPrivilege,
			`"ci/deny/pattern"`, "rule evaluation failed")
		notSeen(t, h, "eval-error")
	})

	t.Run("denied parse, extended protocol", func(t *testing.T) {
		h, pg := start(t, decodertest.Options{})
		pg.Send(&pgproto3.Parse{Name: "s1", Query: "DROP TABLE users"}, &pgproto3.Bind{PreparedStatement: "s1"},
			&pgproto3.Execute{}, &pgproto3.Sync{})
		msgs := pg.UntilReady()
		wantError(t, msgs, "ERROR", codeInsufficientPrivilege, `"ci/deny/no-drop"`)
		notSeen(t, h, "DROP TABLE")
		if got := decodertest.Types(msgs); got != "EZ" {
			t.Errorf("answers %q, want the denial then ReadyForQuery (EZ)", got)
		}
	})

	t.Run("fastpath function call", func(t *testing.T) {
		h, pg := start(t, decodertest.Options{})
		pg.Send(&pgproto3.FunctionCall{Function: 1598}) // random()
		wantError(t, pg.UntilReady(), "ERROR", codeInsufficientPrivilege, `"ci/deny/fastpath"`)
		if !h.Tap.Contains("sluice_denied_") {
			t.Error("the call was not replaced with the substitute")
		}
	})

	t.Run("hold without an approver", func(t *testing.T) {
		h, pg := start(t, decodertest.Options{})
		e := wantError(t, pg.Query("COPY users TO STDOUT"), "ERROR", codeInsufficientPrivilege, `"ci/hold/export"`)
		if !strings.Contains(e.Message, "needs approval") {
			t.Errorf("message %q does not say the statement needs approval", e.Message)
		}
		notSeen(t, h, "COPY users")
	})

	t.Run("hold that expires", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		h, pg := start(t, decodertest.Options{Holder: decodertest.BrokerHolder(broker, 300*time.Millisecond)})
		msgs := pg.Query("COPY users TO STDOUT")
		if len(msgs) == 0 || msgs[0].Type != 'N' {
			t.Fatalf("no notice of the hold first: %v", msgs)
		}
		wantError(t, msgs, "ERROR", codeInsufficientPrivilege, `"ci/hold/export"`)
		notSeen(t, h, "COPY users")
		if n := len(broker.List()); n != 1 {
			t.Errorf("broker knows %d requests, want the expired one", n)
		}
	})

	t.Run("hold approved", func(t *testing.T) {
		// The positive control of the two above: an approved hold runs.
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		h, pg := start(t, decodertest.Options{Holder: decodertest.BrokerHolder(broker, time.Minute)})
		pg.Send(&pgproto3.Query{String: "COPY users TO STDOUT"})
		if m := pg.Receive(); m.Type != 'N' {
			t.Fatalf("got %v, want the hold's notice", m)
		}
		approveOnly(t, broker)
		msgs := pg.UntilReady()
		if len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("COPY users TO STDOUT") {
			t.Errorf("approved COPY: %v", msgs)
		}
	})

	t.Run("mask without maskers", func(t *testing.T) {
		// Every SELECT masks here, so the live check is a BEGIN.
		h, pg := login(t, decodertest.Options{Rules: maskRules, Handler: serveWith(Params{Masks: nil})})
		if msgs := pg.Query("BEGIN"); len(decodertest.Errors(msgs)) != 0 || !h.Tap.Contains("BEGIN") {
			t.Fatalf("BEGIN: %v", msgs)
		}
		wantError(t, pg.Query("SELECT email FROM users"), "ERROR", codeInsufficientPrivilege,
			`"ci/mask/pii"`, "cannot be applied")
		notSeen(t, h, "SELECT email")
	})

	t.Run("recorded", func(t *testing.T) {
		// The positive control of the recording tests: statements are
		// recorded with their verdicts.
		h, pg := start(t, decodertest.Options{Record: record.Commands})
		pg.Query("DROP TABLE users")
		h.End()
		var got []string
		for _, e := range h.Recorder.EventsOf(record.TypeStatement) {
			got = append(got, e.Verdict+" "+e.Rule+" "+e.Text)
		}
		want := []string{"allow ci/default SELECT 'harness-alive'", "deny ci/deny/no-drop DROP TABLE users"}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("recorded statements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("recording fails mid-session", func(t *testing.T) {
		h, pg := start(t, decodertest.Options{Record: record.Commands})
		h.Recorder.Fail()
		for _, q := range []string{"SELECT 'first-after-failure'", "SELECT 'second-after-failure'"} {
			wantError(t, pg.Query(q), "ERROR", codeInsufficientPrivilege, `"sluice/recording-failed"`)
		}
		notSeen(t, h, "first-after-failure", "second-after-failure")
		if !errors.Is(h.Session.RecordingFailed(), enforcer.ErrRecording) {
			t.Errorf("session's recording error %v is not ErrRecording", h.Session.RecordingFailed())
		}
	})

	t.Run("wire recording fails mid-session", func(t *testing.T) {
		// At record level full every byte the client sends is
		// recorded as it is read: once that fails the session ends,
		// and what the client sent never reaches the server.
		h, pg := start(t, decodertest.Options{Record: record.Full})
		h.Recorder.Fail()
		h.TrySend(decodertest.Encode(&pgproto3.Query{String: "SELECT 'wire-after-failure'"}))
		msgs := pg.UntilEnd()
		for _, e := range decodertest.Errors(msgs) {
			if e.Code != codeInsufficientPrivilege && e.Code != codeConnectionFailure {
				t.Errorf("unexpected error %s %s", e.Code, e.Message)
			}
		}
		h.Wait()
		notSeen(t, h, "wire-after-failure")
	})

	violations := []struct {
		name  string
		max   int
		send  []byte
		words string
	}{
		{"oversized message", 1024, append([]byte{'Q', 0, 0, 0x10, 4}, append(bytes.Repeat([]byte{'x'}, 4096), "oversized-marker\x00"...)...),
			"exceeds the 1024-byte limit"},
		{"length below 4", 0, []byte{'Q', 0, 0, 0, 2, 'l', 'e', 'n', '-', 'm', 'a', 'r', 'k'}, "invalid length 2"},
		{"negative length", 0, []byte{'Q', 0xff, 0xff, 0xff, 0xf0, 'n', 'e', 'g'}, "invalid length"},
		{"unknown message type", 0, []byte{'y', 0, 0, 0, 4}, "unknown message type"},
		{"unterminated query", 0, append([]byte{'Q', 0, 0, 0, 4 + 18}, "unterminated-marker"[:18]...), "string without terminator"},
		{"malformed describe", 0, []byte{'D', 0, 0, 0, 6, 'X', 0}, "malformed Describe"},
		{"short function call", 0, []byte{'F', 0, 0, 0, 6, 0, 1}, "short function call"},
	}
	for _, tt := range violations {
		t.Run("protocol violation: "+tt.name, func(t *testing.T) {
			h, pg := start(t, decodertest.Options{Handler: registered(t, tt.max)})
			before := len(h.Tap.Received())
			h.TrySend(tt.send)
			wantError(t, pg.UntilEnd(), "FATAL", codeProtocolViolation, tt.words)
			h.Wait()
			// Nothing of the offending message was forwarded: the
			// server got at most the session's Terminate.
			if rest := h.Tap.Received()[before:]; len(rest) > 0 && !bytes.Equal(rest, []byte{'X', 0, 0, 0, 4}) {
				t.Errorf("after the violation the server received %q", rest)
			}
		})
	}
}
