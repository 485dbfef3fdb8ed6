package mysql

import (
	"bytes"
	"context"
	sqldriver "database/sql/driver"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/decoder/internal/evloop"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
)

// endDriver ends a driver session with COM_QUIT and waits for it.
func endDriver(h *decodertest.Harness, c interface {
	Raw(func(any) error) error
	Close() error
}) decoder.Result {
	c.Raw(func(any) error { return sqldriver.ErrBadConn })
	c.Close()
	return h.Wait()
}

// plainRules is engineRules(extra) with the server's hop in plaintext:
// the core runs sessions without TLS on either hop.
func plainRules(extra string) string {
	return strings.Replace(engineRules(extra), `upstream_tls = "prefer"`, `upstream_tls = "disable"`, 1)
}

// TestCoreSessions: where the io_uring core runs here, a plaintext
// session runs its commands on it (text and binary protocol, denials,
// refusals part way through a result: the other engine tests check the
// answers, which now run there), and leaves it, with the command or the
// packet it stopped at carried on, for what must wait: a hold before a
// statement, a hold on a result at its row, a LOCAL INFILE request, and
// a packet too long to buffer.
func TestCoreSessions(t *testing.T) {
	if !useCore || evloop.Core() != evloop.CoreUring {
		t.Skip("the relay core is not io_uring's here")
	}
	e := newMyEnv(t)
	holdRules := plainRules(`
  hold "deletes" {
    when      = sql.kind == "delete"
    approvers = ["group:security"]
    timeout   = "1m"
  }
  hold "big" {
    when      = sql.kind == "select" && contains(sql.tables, "people") && result.rows > 1
    approvers = ["group:security"]
    timeout   = "1m"
  }
`)
	approveAll := func(ctx context.Context, r enforcer.HoldRequest) enforcer.HoldOutcome {
		return enforcer.HoldOutcome{Approved: true, Reason: "approved by the test"}
	}

	t.Run("steady state on the core", func(t *testing.T) {
		h := e.harness(t, plainRules(maskRulesExtra), decodertest.Options{Record: record.Commands})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
		for i := range 30 {
			if got := names(t, c, "SELECT name FROM people ORDER BY id"); len(got) != len(testenv.MariaDBPeople) {
				t.Fatalf("text query %d: %q", i, got)
			}
			if got := names(t, c, "SELECT name FROM people WHERE id = ?", 1+i%3); len(got) != 1 {
				t.Fatalf("prepared query %d: %q", i, got)
			}
		}
		if got := names(t, c, "SELECT email FROM people ORDER BY id"); strings.Contains(strings.Join(got, "|"), "@example") {
			t.Fatalf("masked on the core: %q", got)
		}
		_, err := c.ExecContext(ctx10(t), "DROP TABLE people")
		denied(t, "DROP", err, "ci/deny/no-drop")
		res := endDriver(h, c)
		if res.Err != nil {
			t.Fatalf("session: %v", res.Err)
		}
		if h.Tap.Contains("DROP TABLE") {
			t.Fatal("a denied statement reached the server")
		}
		decodertest.WantRelayCore(t, res, "io_uring")
		if res.BytesFromClient == 0 || res.BytesToClient == 0 {
			t.Fatalf("byte counts not kept on the core: %+v", res)
		}
	})

	t.Run("result refused on the core", func(t *testing.T) {
		// No approver: the hold at the second row refuses the result
		// after one row, decided on the core.
		h := e.harness(t, holdRules, decodertest.Options{})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
		for _, args := range [][]any{nil, {0}} {
			q := "SELECT name FROM people"
			if args != nil {
				q += " WHERE id > ?"
			}
			n, err := countRows(t, c, q, args...)
			if n != 1 {
				t.Fatalf("%d rows before the refusal, want 1", n)
			}
			denied(t, "the held result", err, "ci/hold/big")
		}
		if got := names(t, c, "SELECT name FROM people WHERE id = 1"); len(got) != 1 {
			t.Fatalf("after the refusal: %q", got)
		}
		decodertest.WantRelayCore(t, endDriver(h, c), "io_uring")
	})

	t.Run("hold before a statement leaves the core", func(t *testing.T) {
		h := e.harness(t, holdRules, decodertest.Options{Holder: approveAll})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
		names(t, c, "SELECT name FROM people WHERE id = 1")
		if _, err := c.ExecContext(ctx10(t), "DELETE FROM people WHERE id = 3"); err != nil {
			t.Fatalf("approved delete: %v", err)
		}
		if got := names(t, c, "SELECT name FROM people WHERE id = 1"); len(got) != 1 || !h.Tap.Contains("DELETE FROM people WHERE id = 3") {
			t.Fatalf("after the hold: %q", got)
		}
		decodertest.WantRelayCore(t, endDriver(h, c), "io_uring, then goroutines: a statement held for approval")
	})

	t.Run("result hold leaves the core at its row", func(t *testing.T) {
		h := e.harness(t, holdRules, decodertest.Options{Holder: approveAll})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
		if got := names(t, c, "SELECT name FROM people WHERE id <= 2 ORDER BY id"); len(got) != 2 {
			t.Fatalf("approved result: %q", got)
		}
		if got := names(t, c, "SELECT name FROM people WHERE id = ?", 2); len(got) != 1 {
			t.Fatalf("after the hold: %q", got)
		}
		decodertest.WantRelayCore(t, endDriver(h, c), "io_uring, then goroutines: a result held for approval")
	})

	t.Run("LOCAL INFILE leaves the core", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "people.tsv")
		if err := os.WriteFile(file, []byte("60\tCore Person\tcore@example.com\t000-00-0000\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		h := e.harness(t, plainRules(""), decodertest.Options{})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, func(cfg *gomysql.Config) { cfg.AllowAllFiles = true })
		names(t, c, "SELECT name FROM people WHERE id = 1")
		if _, err := c.ExecContext(ctx10(t), fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE people", file)); err != nil {
			t.Fatalf("LOAD DATA LOCAL: %v", err)
		}
		if got := names(t, c, "SELECT name FROM people WHERE id = 60"); len(got) != 1 || got[0] != "Core Person" {
			t.Fatalf("the loaded row: %q", got)
		}
		decodertest.WantRelayCore(t, endDriver(h, c), "io_uring, then goroutines: a LOAD DATA LOCAL INFILE request")
	})

	t.Run("packet too long for the core", func(t *testing.T) {
		h := e.harness(t, plainRules(""), decodertest.Options{})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
		names(t, c, "SELECT name FROM people WHERE id = 1")
		long := strings.Repeat("x", coreMaxPacket+1000)
		if got := names(t, c, "SELECT length('"+long+"')"); len(got) != 1 || got[0] != fmt.Sprint(len(long)) {
			t.Fatalf("long query: %q", got)
		}
		if got := names(t, c, "SELECT 'after-long'"); len(got) != 1 {
			t.Fatalf("after the long query: %q", got)
		}
		decodertest.WantRelayCore(t, endDriver(h, c), "io_uring, then goroutines: a packet too long for the core")
	})
}

// TestCoreSameAsGoroutines: one raw script of commands, sent in a single
// write (pipelined), gets the same bytes back on the core as on the
// goroutines: text and binary results, masked ones, a multi-statement
// query, a server error, a denial, a refusal part way through a result,
// prepared statements and a ping.
func TestCoreSameAsGoroutines(t *testing.T) {
	if !useCore || evloop.Core() != evloop.CoreUring {
		t.Skip("the relay core is not io_uring's here")
	}
	e := newMyEnv(t)
	rules := plainRules(maskRulesExtra + `
  deny "two-rows" {
    when = contains(sql.tables, "people") && sql.kind == "select" && result.rows > 2
  }
`)
	run := func(onCore bool) ([]byte, decoder.Result) {
		defer func(v bool) { useCore = v }(useCore)
		useCore = onCore
		h := e.harness(t, rules, decodertest.Options{Record: record.Full})
		r, w := rawLogin(t, h, capMultiStatements|capMultiResults|capPSMultiResults)
		// The statement first, on its own: its id is the server's.
		ok := rawCommand(t, r, w, append([]byte{comStmtPrepare}, "SELECT id, email FROM people WHERE id >= ? ORDER BY id"...))
		if ok[0] != 0x00 {
			t.Fatalf("prepare: %q", ok)
		}
		for range 2 + 3 { // a parameter, two columns, each list's EOF
			if _, _, err := r.next(); err != nil {
				t.Fatal(err)
			}
		}
		id := ok[1:5]
		var script bytes.Buffer
		w.w.Reset(&script)
		cmd := func(b ...byte) {
			w.seq = 0
			w.write(b)
		}
		query := func(q string) { cmd(append([]byte{comQuery}, q...)...) }
		query("SELECT id, name FROM people WHERE id <= 2 ORDER BY id")
		query("SELECT email, ssn FROM people WHERE id = 1")
		query("SELECT 1; SELECT name FROM people WHERE id = 2; DO 1")
		query("SELECT * FROM no_such_table")
		query("DROP TABLE people")
		query("SELECT name FROM people ORDER BY id") // refused at the third row
		query("SELECT 'after the refusal'")
		// COM_STMT_EXECUTE: no cursor, one iteration, one LONG
		// parameter, 1.
		cmd(append(append([]byte{comStmtExecute}, id...), 0, 1, 0, 0, 0, 0, 1, typeLong, 0, 1, 0, 0, 0)...)
		cmd(append([]byte{comStmtClose}, id...)...)
		cmd(comPing)
		cmd(comQuit)
		w.flush()
		h.Client.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := h.Client.Write(script.Bytes()); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r.r)
		if err != nil {
			t.Fatalf("reading the answers: %v", err)
		}
		return got, h.Wait()
	}
	onCore, coreRes := run(true)
	onGo, goRes := run(false)
	decodertest.WantRelayCore(t, coreRes, "io_uring")
	decodertest.WantRelayCore(t, goRes, "goroutines")
	if !bytes.Equal(onCore, onGo) {
		t.Fatalf("the client got %d bytes on the core and %d on goroutines:\ncore: %q\ngoroutines: %q", len(onCore), len(onGo), onCore, onGo)
	}
	for _, want := range []string{"Bob Okafor", "after the refusal", "no_such_table", "ci/deny/no-drop", "ci/deny/two-rows"} {
		if !bytes.Contains(onCore, []byte(want)) {
			t.Errorf("the answers lack %q", want)
		}
	}
	if bytes.Contains(onCore, []byte("alice@example.com")) || bytes.Contains(onCore, []byte("123-45-6789")) {
		t.Error("a masked value reached the client")
	}
}
