package postgres

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestEngineReturningPlans: a RETURNING value has no origin of its own and
// is masked as a column of the table its statement writes. Two statements
// whose results have the same description but write different tables
// each get their own plan: the users insert's email comes back masked even
// after an insert into another table returned a column of the same shape
// unmasked (a reused plan used to let it through). Needs root (a private
// PostgreSQL).
func TestEngineReturningPlans(t *testing.T) {
	testenv.RequireRoot(t)
	server := engineServer(t)
	server.Admin(t, "create table logs(id int, email text)")
	h := decodertest.Start(t, decodertest.Options{Handler: registered(t, 0), Rules: maskRules, Target: "pg", Upstream: server.Addr()})
	pg := h.PG()
	pg.Login("postgres", nil)
	for _, c := range []struct {
		query, value string
		masked       bool
	}{
		{"INSERT INTO logs VALUES (3, 'Log3@Example.com') RETURNING lower(email) AS email", "log3@example.com", false},
		{"INSERT INTO users VALUES (3, 'Three@Example.com') RETURNING lower(email) AS email", "three@example.com", true},
		{"INSERT INTO logs VALUES (4, 'Log4@Example.com') RETURNING lower(email) AS email", "log4@example.com", false},
		{"INSERT INTO users VALUES (4, 'Four@Example.com') RETURNING lower(email) AS email", "four@example.com", true},
	} {
		var got strings.Builder
		for _, m := range pg.Query(c.query) {
			if e := m.Error(); e != nil {
				t.Fatalf("%s: %s", c.query, e.Message)
			}
			if m.Type == 'D' {
				got.Write(m.Body)
			}
		}
		if raw := strings.Contains(got.String(), c.value); raw == c.masked {
			t.Errorf("%s: value %q came back raw=%t, want masked=%t (row %q)", c.query, c.value, raw, c.masked, got.String())
		}
	}
	h.End()
}
