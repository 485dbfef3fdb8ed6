package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder/decodertest"
)

// TestEngineBindNeverParsed: a Bind of a statement the proxy never saw
// parsed (here one made with SQL-level PREPARE) is refused with 42501,
// the server is asked to bind a name that cannot exist, and the Execute
// behind it, which the server skips, ends the batch quietly. That
// skipped Execute has no command of its own: reporting it used to
// dereference nil and take the whole daemon down with one client's
// message sequence.
func TestEngineBindNeverParsed(t *testing.T) {
	server := engineServer(t)
	h := decodertest.Start(t, decodertest.Options{Handler: registered(t, 0), Rules: engineRules, Target: "pg", Upstream: server.Addr()})
	pg := h.PG()
	pg.Login("postgres", nil)
	if msgs := pg.Query("PREPARE sqlprep AS SELECT email FROM users"); len(decodertest.Errors(msgs)) != 0 {
		t.Fatalf("PREPARE: %v", msgs)
	}
	pg.Send(&pgproto3.Bind{PreparedStatement: "sqlprep"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	msgs := pg.UntilReady()
	wantError(t, msgs, "ERROR", codeInsufficientPrivilege, `"sqlprep" was not prepared through the protocol`)
	if got := decodertest.Types(msgs); got != "EZ" {
		t.Errorf("answers %q, want the denial then ReadyForQuery (EZ)", got)
	}
	if !h.Tap.Contains("sluice_denied_") {
		t.Error("the Bind was not replaced")
	}
	// The session goes on.
	if msgs := pg.Query("SELECT 1"); len(decodertest.Errors(msgs)) != 0 {
		t.Errorf("after the refused Bind: %v", msgs)
	}
	if res := h.End(); res.Err != nil {
		t.Errorf("handler: %v", res.Err)
	}
}
