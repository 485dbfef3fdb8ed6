package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestEngineCancelMidSession: the daemon cancelling a session's context
// (a shutdown past its drain time) while the session is in the middle of
// a statement and the client is going away at the same moment ends the
// session promptly and cleanly. Run under -race it checks that close,
// which runs on the context's goroutine, does not race with the session
// goroutine setting the connections and the cancel key. Needs root (a
// private PostgreSQL).
func TestEngineCancelMidSession(t *testing.T) {
	testenv.RequireRoot(t)
	server := engineServer(t)
	for range 5 {
		h := decodertest.Start(t, decodertest.Options{Handler: registered(t, 0), Rules: engineRules, Target: "pg", Upstream: server.Addr()})
		pg := h.PG()
		pg.Login("postgres", nil)
		// A statement the server is busy with when the cancel comes.
		pg.Send(&pgproto3.Query{String: "SELECT pg_sleep(1)"})
		go h.Client.Close()
		h.Cancel()
		h.Wait()
	}
}
