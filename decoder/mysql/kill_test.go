package mysql

import (
	"errors"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestInjectKillQuery: a result the rules refuse part way is stopped on
// the server when the session logged in with an injected credential: the
// proxy sends KILL QUERY on a side connection, so the client's error comes
// as soon as the refusal, not once the server has produced the whole
// result. The query makes 200 rows of 20 kB, one every 200 ms (40 s in
// all; each row fills the server's network buffer, so it leaves at once):
// refused at its third row, the client must hear of it within 10 s, and
// the log and the recording say the query was killed.
func TestInjectKillQuery(t *testing.T) {
	e := newMyEnv(t)
	rules := strings.Replace(injectRules(testenv.MariaDBAppUser, "disable"), `credential "ci" {}`, `credential "ci" {}
  deny "big" {
    when   = result.rows > 2
    reason = "at most two rows"
  }`, 1)
	h, logs := injectHarness(t, e.my.HostPort(), e.ca, rules, testenv.MariaDBAppPassword,
		decodertest.Options{Identity: acmeAPI, Record: record.Commands, Timeout: 30 * time.Second})
	c := driver(t, h, intruderUser, intruderPassword, nil)
	start := time.Now()
	n, err := countRows(t, c, "SELECT seq, REPEAT('x', 20000), SLEEP(0.2) FROM seq_1_to_200")
	took := time.Since(start)
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != codeDenied || !strings.Contains(me.Message, "acme-api/deny/big") || n != 2 {
		t.Fatalf("after %d rows: %v, want error %d naming acme-api/deny/big after 2 rows", n, err, codeDenied)
	}
	if took > 10*time.Second {
		t.Fatalf("the refusal took %v: the query ran on instead of being killed", took)
	}
	// The side connection reads the server's answer to KILL QUERY after
	// the session may have seen its query end.
	testenv.WaitFor(t, 10*time.Second, "the KILL QUERY log line", func() bool {
		return strings.Contains(logs.String(), "refused result stopped on the server with KILL QUERY")
	})
	// The session goes on.
	if got := names(t, c, "SELECT name FROM people WHERE id = 1"); len(got) != 1 {
		t.Fatalf("after the refusal: %q", got)
	}
	if list := e.my.Admin(t, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%seq_1_to_200%' AND ID <> CONNECTION_ID()"); list != "0" {
		t.Fatalf("the refused query still runs on the server (%s)", list)
	}
}
