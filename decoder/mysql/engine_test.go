package mysql

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/internal/tlsutil"
	"github.com/sluicehq/sluice/ruleset"
)

// The engine's tests: the registered mysql handler runs in process under
// decoder/decodertest, between a real client (go-sql-driver/mysql, or a
// scripted one for what no driver sends) and a real MariaDB on loopback.
// Each asserts what the client got and, for what was refused, that it
// never reached the server (the harness's Tap holds every byte sent
// towards it).

// engineRules is the rules of most engine tests: target my, denials for
// DROP, LOAD_FILE and replication, and whatever extra the test adds.
func engineRules(extra string) string {
	return `
target "my" {
  protocol     = "mysql"
  address      = ["127.0.0.1:3306"]
  upstream_tls = "prefer"
}

policy "ci" {
  targets = ["my"]

  deny "no-drop" {
    when   = sql.kind == "drop"
    reason = "schema changes go through migrations"
  }
  deny "no-files" {
    when   = contains(sql.flags, "load_file") || contains(sql.flags, "into_outfile")
    reason = "server files stay on the server"
  }
  deny "no-replication" {
    when   = sql.kind == "replication"
    reason = "no binlog from CI"
  }
` + extra + `
}
`
}

var dialers atomic.Int64

// startMy starts a MariaDB (once per test) and a harness serving one flow
// to it with rules.
type myEnv struct {
	my *testenv.MariaDB
	ca *tlsutil.CA
}

func newMyEnv(t *testing.T) *myEnv {
	t.Helper()
	testenv.RequireRoot(t)
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	ca, err := tlsutil.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &myEnv{my: my, ca: ca}
}

// harness serves one flow with rules at record level lvl.
func (e *myEnv) harness(t *testing.T, rules string, o decodertest.Options) *decodertest.Harness {
	t.Helper()
	p, ok := decoder.Lookup(ruleset.ProtoMySQL)
	if !ok || p.New == nil {
		t.Fatal("mysql is not registered with a decoder")
	}
	o.Handler = p.New(decoder.Env{ClientTLS: e.ca.ServerConfig(), MaskKey: []byte("0123456789abcdef0123456789abcdef"), Log: o.Log})
	o.Rules, o.Target, o.Upstream = rules, "my", e.my.HostPort()
	return decodertest.Start(t, o)
}

// driver opens a go-sql-driver connection over the harness's client hop.
// tlsCfg, when set, makes the client ask for TLS.
func driver(t *testing.T, h *decodertest.Harness, user, password string, tweak func(*gomysql.Config)) *sql.Conn {
	t.Helper()
	c, err := openDriver(t, h, user, password, tweak)
	if err != nil {
		t.Fatalf("connect through the proxy as %s: %v", user, err)
	}
	return c
}

// openDriver is driver, returning the login's error.
func openDriver(t *testing.T, h *decodertest.Harness, user, password string, tweak func(*gomysql.Config)) (*sql.Conn, error) {
	t.Helper()
	name := fmt.Sprintf("harness%d", dialers.Add(1))
	used := atomic.Bool{}
	gomysql.RegisterDialContext(name, func(ctx context.Context, addr string) (net.Conn, error) {
		if used.Swap(true) {
			return nil, errors.New("the harness has one client connection")
		}
		return h.Client, nil
	})
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, password, name, "harness", testenv.MariaDBDatabase
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 10*time.Second, 10*time.Second, 10*time.Second
	if tweak != nil {
		tweak(cfg)
	}
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// driverEd25519Flake reports the login failure go-sql-driver/mysql makes
// of one MariaDB client_ed25519 nonce in 256: it drops a last 0x00 byte
// from every auth switch's data (meant for the NUL that ends a
// mysql_native_password scramble), and refuses the 31 bytes left with
// ErrMalformPkt. Sluice's own ed25519 answer (inject.go) takes the first
// 32 bytes and is not affected; a test that logs in as ed with the
// driver tries again on this error alone.
func driverEd25519Flake(err error) bool { return errors.Is(err, gomysql.ErrMalformPkt) }

// countRows runs a query and reads its rows: how many came, and the
// error that ended them.
func countRows(t *testing.T, c *sql.Conn, q string, args ...any) (int, error) {
	t.Helper()
	rows, err := c.QueryContext(ctx10(t), q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// names returns the first column of a query's rows.
func names(t *testing.T, c *sql.Conn, q string, args ...any) []string {
	t.Helper()
	rows, err := c.QueryContext(ctx10(t), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s.String)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

// denied asserts err is Sluice's denial naming rule.
func denied(t *testing.T, what string, err error, rule string) {
	t.Helper()
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != codeDenied || string(me.SQLState[:]) != stateDenied || !strings.Contains(me.Message, rule) {
		t.Fatalf("%s: %v, want error %d (%s) naming %s", what, err, codeDenied, stateDenied, rule)
	}
}

func TestEngineLogin(t *testing.T) {
	e := newMyEnv(t)
	for _, tc := range []struct {
		name, user, password string
		tls                  bool
	}{
		{"native password", testenv.MariaDBAppUser, testenv.MariaDBAppPassword, false},
		{"ed25519", testenv.MariaDBEdUser, testenv.MariaDBEdPassword, false},
		{"native password over TLS on both hops", testenv.MariaDBTLSUser, testenv.MariaDBTLSPassword, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *sql.Conn
			for try := 1; ; try++ {
				h := e.harness(t, engineRules(""), decodertest.Options{})
				var err error
				c, err = openDriver(t, h, tc.user, tc.password, func(cfg *gomysql.Config) {
					if tc.tls {
						cfg.TLS = &tls.Config{RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"}
					}
				})
				if err == nil {
					break
				}
				if tc.user != testenv.MariaDBEdUser || !driverEd25519Flake(err) || try == 4 {
					t.Fatalf("connect through the proxy as %s: %v", tc.user, err)
				}
			}
			got := names(t, c, "SELECT name FROM people ORDER BY id")
			if len(got) != len(testenv.MariaDBPeople) || got[0] != testenv.MariaDBPeople[0].Name {
				t.Fatalf("people: %q", got)
			}
			if tc.tls {
				var cipher, version string
				if err := c.QueryRowContext(ctx10(t), "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&version, &cipher); err != nil || cipher == "" {
					t.Fatalf("the server hop is not TLS: %q %v", cipher, err)
				}
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		h := e.harness(t, engineRules(""), decodertest.Options{})
		name := fmt.Sprintf("harness%d", dialers.Add(1))
		gomysql.RegisterDialContext(name, func(ctx context.Context, addr string) (net.Conn, error) { return h.Client, nil })
		db, _ := sql.Open("mysql", fmt.Sprintf("%s:%s@%s(x)/app", testenv.MariaDBAppUser, "wrong", name))
		defer db.Close()
		err := db.PingContext(ctx10(t))
		var me *gomysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1045 {
			t.Fatalf("a wrong password: %v, want the server's 1045", err)
		}
	})
}

func TestEngineDeny(t *testing.T) {
	e := newMyEnv(t)
	h := e.harness(t, engineRules(""), decodertest.Options{Record: record.Commands})
	c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, func(cfg *gomysql.Config) { cfg.MultiStatements = true })
	ctx := ctx10(t)

	if _, err := c.ExecContext(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "INSERT INTO people VALUES (10, 'Tx', 'tx@example.com', '000-00-0000')"); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ what, sql, rule string }{
		{"DROP", "DROP TABLE people", "ci/deny/no-drop"},
		{"a MariaDB executable comment", "SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */", "ci/deny/no-files"},
		{"a versioned executable comment", "SELECT 1 /*!50000 , LOAD_FILE('/etc/passwd') */", "ci/deny/no-files"},
		{"a multi-statement text", "SELECT 1; DROP TABLE people", "ci/deny/no-drop"},
		{"INTO OUTFILE", "SELECT * FROM people INTO OUTFILE '/tmp/sluice-leak'", "ci/deny/no-files"},
		{"unparsable", "SELEKT nonsense FROM", "sluice/unparsable"},
	}
	for _, tc := range cases {
		_, err := c.ExecContext(ctx, tc.sql)
		denied(t, tc.what, err, tc.rule)
	}
	// Prepared: refused at prepare (go-sql-driver prepares when given
	// arguments).
	_, err := c.ExecContext(ctx, "DROP TABLE people /* ? */", 1)
	denied(t, "a prepared DROP", err, "ci/deny/no-drop")
	if _, err := c.PrepareContext(ctx, "DROP TABLE people"); err == nil {
		t.Fatal("PREPARE of DROP succeeded")
	}

	// The transaction survived every denial.
	var n int
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM people WHERE id = 10").Scan(&n); err != nil || n != 1 {
		t.Fatalf("inside the transaction after the denials: %d %v", n, err)
	}
	if _, err := c.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM people").Scan(&n); err != nil || n != len(testenv.MariaDBPeople) {
		t.Fatalf("after ROLLBACK: %d %v", n, err)
	}
	for _, s := range []string{"DROP TABLE", "LOAD_FILE", "OUTFILE", "SELEKT"} {
		if h.Tap.Contains(s) {
			t.Errorf("%q reached the server", s)
		}
	}
	deniedEvents := 0
	for _, ev := range h.Recorder.EventsOf(record.TypeStatement) {
		if ev.Verdict == "deny" {
			deniedEvents++
		}
	}
	if deniedEvents < len(cases)+1 {
		t.Errorf("%d denied statements recorded, want at least %d", deniedEvents, len(cases)+1)
	}
}

const maskRulesExtra = `
  mask "pii" {
    columns = ["people.email"]
    using   = "hash"
  }
  mask "ids" {
    detect = ["ssn", "email"]
    using  = "redact"
  }
`

func TestEngineMask(t *testing.T) {
	e := newMyEnv(t)
	e.my.Admin(t, "ALTER TABLE app.people ADD UNIQUE KEY email_u (email)")
	h := e.harness(t, engineRules(maskRulesExtra), decodertest.Options{})
	c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
	alice := testenv.MariaDBPeople[0]
	check := func(what string, rows []string) {
		t.Helper()
		joined := strings.Join(rows, "|")
		for _, p := range testenv.MariaDBPeople {
			// The ssn detector finds valid SSNs only: none has area 9xx.
			ssn := p.SSN != "" && p.SSN[0] != '9' && strings.Contains(joined, p.SSN)
			if strings.Contains(joined, p.Email) || ssn {
				t.Fatalf("%s: raw personal data reached the client: %q", what, joined)
			}
		}
		if len(rows) == 0 {
			t.Fatalf("%s: no rows", what)
		}
	}
	// Text protocol, binary protocol (a prepared statement with an
	// argument), an expression without origin, and a string column.
	check("text email", names(t, c, "SELECT email FROM people ORDER BY id"))
	check("binary email", names(t, c, "SELECT email FROM people WHERE id > ? ORDER BY id", 0))
	check("text ssn", names(t, c, "SELECT ssn FROM people ORDER BY id"))
	check("binary ssn", names(t, c, "SELECT ssn FROM people WHERE id >= ?", 1))
	check("expression", names(t, c, "SELECT CONCAT(name, ' <', email, '>') FROM people"))
	// Unmasked columns come through as they are.
	if got := names(t, c, "SELECT name FROM people WHERE id = ?", 1); len(got) != 1 || got[0] != alice.Name {
		t.Fatalf("name: %q", got)
	}
	// The error of a duplicate key names the value: its message goes
	// through the detectors.
	_, err := c.ExecContext(ctx10(t), "INSERT INTO people VALUES (99, 'Dup', ?, '')", alice.Email)
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != 1062 {
		t.Fatalf("duplicate insert: %v, want 1062", err)
	}
	if strings.Contains(me.Message, alice.Email) {
		t.Fatalf("the duplicate key error leaked the email: %q", me.Message)
	}
}

func TestEngineResultRefused(t *testing.T) {
	e := newMyEnv(t)
	h := e.harness(t, engineRules(`
  hold "big" {
    when      = result.rows > 1
    approvers = ["group:security"]
    timeout   = "1m"
  }
`), decodertest.Options{})
	c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
	for _, args := range [][]any{nil, {0}} {
		q := "SELECT name FROM people"
		if args != nil {
			q += " WHERE id > ?"
		}
		n, err := countRows(t, c, q, args...)
		if n > 1 {
			t.Fatalf("%d rows passed a hold at the second row with no approver", n)
		}
		denied(t, "the held result", err, "ci/hold/big")
	}
	// The session goes on.
	if got := names(t, c, "SELECT name FROM people WHERE id = 1"); len(got) != 1 {
		t.Fatalf("after the refusal: %q", got)
	}
}

func TestEngineHoldApproved(t *testing.T) {
	e := newMyEnv(t)
	var asked atomic.Int64
	h := e.harness(t, engineRules(`
  hold "deletes" {
    when      = sql.kind == "delete"
    approvers = ["group:security"]
    timeout   = "1m"
  }
`), decodertest.Options{Holder: func(ctx context.Context, r enforcer.HoldRequest) enforcer.HoldOutcome {
		asked.Add(1)
		return enforcer.HoldOutcome{Approved: strings.Contains(r.Command.Text, "id = 3"), Reason: "decided by the test"}
	}})
	c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
	if _, err := c.ExecContext(ctx10(t), "DELETE FROM people WHERE id = 3"); err != nil {
		t.Fatalf("approved delete: %v", err)
	}
	_, err := c.ExecContext(ctx10(t), "DELETE FROM people WHERE id = 2")
	denied(t, "refused delete", err, "ci/hold/deletes")
	if asked.Load() != 2 {
		t.Fatalf("%d holds asked, want 2", asked.Load())
	}
	if got := names(t, c, "SELECT name FROM people ORDER BY id"); len(got) != 2 {
		t.Fatalf("after one approved and one refused delete: %q", got)
	}
}

func TestEngineRecording(t *testing.T) {
	e := newMyEnv(t)
	h := e.harness(t, engineRules(""), decodertest.Options{Record: record.Full})
	c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
	names(t, c, "SELECT name FROM people")
	// Closing the connection (not returning it to database/sql's pool)
	// sends COM_QUIT: the session ends and its recording is complete.
	c.Raw(func(any) error { return sqldriver.ErrBadConn })
	c.Close()
	h.Wait()
	var stmts, results, wire int
	var wireBytes []byte
	for _, ev := range h.Recorder.Events() {
		switch ev.Type {
		case record.TypeStatement:
			stmts++
		case record.TypeResult:
			results++
			if ev.Rows != int64(len(testenv.MariaDBPeople)) {
				t.Errorf("result event with %d rows, want %d", ev.Rows, len(testenv.MariaDBPeople))
			}
		case record.TypeWire:
			wire++
			wireBytes = append(wireBytes, ev.Data...)
		}
	}
	if stmts == 0 || results == 0 || wire == 0 {
		t.Fatalf("recorded %d statements, %d results, %d wire chunks", stmts, results, wire)
	}
	if !strings.Contains(string(wireBytes), "SELECT name FROM people") || !strings.Contains(string(wireBytes), "Alice Martin") {
		t.Fatal("the wire recording lacks the query or its rows")
	}
}

// TestEngineLocalInfile: LOAD DATA LOCAL INFILE works when a rule allows
// it (the client's file reaches the server, its name and size are
// recorded), is refused by a rule that denies it, and a server that asks
// for a file the statement does not name ends the session with nothing
// sent (TestEngineHostileInfileRequest).
func TestEngineLocalInfile(t *testing.T) {
	e := newMyEnv(t)
	file := filepath.Join(t.TempDir(), "people.tsv")
	if err := os.WriteFile(file, []byte("50\tFile Person\tfile@example.com\t000-00-0000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	load := fmt.Sprintf("LOAD DATA LOCAL INFILE '%s' INTO TABLE people", file)
	t.Run("allowed", func(t *testing.T) {
		h := e.harness(t, engineRules(""), decodertest.Options{Record: record.Commands})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, func(cfg *gomysql.Config) { cfg.AllowAllFiles = true })
		if _, err := c.ExecContext(ctx10(t), load); err != nil {
			t.Fatalf("an allowed LOAD DATA LOCAL: %v", err)
		}
		if got := names(t, c, "SELECT name FROM people WHERE id = 50"); len(got) != 1 || got[0] != "File Person" {
			t.Fatalf("the loaded row: %q", got)
		}
		c.Raw(func(any) error { return sqldriver.ErrBadConn })
		c.Close()
		h.Wait()
		noted := false
		for _, ev := range h.Recorder.EventsOf(record.TypeNote) {
			noted = noted || ev.Text == file && strings.Contains(ev.Reason, "44 bytes")
		}
		if !noted {
			t.Fatalf("no note of the file and its size in %v", h.Recorder.EventsOf(record.TypeNote))
		}
	})
	t.Run("denied", func(t *testing.T) {
		h := e.harness(t, engineRules(`
  deny "no-local-files" {
    when = contains(sql.flags, "load_data_local")
  }
`), decodertest.Options{})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, func(cfg *gomysql.Config) { cfg.AllowAllFiles = true })
		_, err := c.ExecContext(ctx10(t), strings.Replace(load, "LOCAL", "/*!*/ LOCAL", 1))
		denied(t, "LOAD DATA /*!*/ LOCAL", err, "ci/deny/no-local-files")
		if h.Tap.Contains("File Person") || h.Tap.Contains("LOAD DATA") {
			t.Fatal("the denied LOAD DATA LOCAL or its file reached the server")
		}
	})
}

// TestEngineHostileInfileRequest: a server that answers a SELECT by asking
// the client for /etc/passwd (what a hostile or impersonated server can
// do) gets nothing: the client is told and the session ends. A scripted
// server stands in for the hostile one, since no real server misbehaves so.
func TestEngineHostileInfileRequest(t *testing.T) {
	testenv.RequireRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		w := newPacketWriter(c)
		r := newPacketReader(c, 1<<20)
		// A greeting: protocol 10, version, id, scramble, caps.
		g := append([]byte{10}, "10.11.19-MariaDB\x00"...)
		g = append(g, 1, 0, 0, 0)
		g = append(g, "abcdefgh\x00"...)
		caps := uint32(capProtocol41 | capSecureConnection | capPluginAuth | capLocalFiles | capTransactions)
		g = append(g, byte(caps), byte(caps>>8), 45, 2, 0, byte(caps>>16), byte(caps>>24), 21)
		g = append(g, make([]byte, 10)...)
		g = append(g, "ijklmnopqrst\x00mysql_native_password\x00"...)
		w.write(g)
		w.flush()
		r.next() // the handshake response: accepted whatever it says
		w.seq = 2
		w.write([]byte{0, 0, 0, 2, 0, 0, 0})
		w.flush()
		r.next() // the query
		w.seq = 1
		w.write(append([]byte{0xfb}, "/etc/passwd"...))
		w.flush()
		rest, _, _ := r.next()
		got <- append([]byte(nil), rest...)
	}()
	p, _ := decoder.Lookup(ruleset.ProtoMySQL)
	h := decodertest.Start(t, decodertest.Options{Handler: p.New(decoder.Env{}), Rules: strings.Replace(engineRules(""), `"prefer"`, `"disable"`, 1),
		Target: "my", Upstream: ln.Addr().String()})
	r, w := rawLogin(t, h, capLocalFiles)
	ans := rawCommand(t, r, w, append([]byte{comQuery}, "SELECT 1"...))
	if len(ans) == 0 || ans[0] != 0xff || !strings.Contains(string(parseErr(ans).msg), "/etc/passwd") {
		t.Fatalf("the client got %q, want an ERR naming the refused request", ans)
	}
	if b, _, err := r.next(); err == nil {
		t.Fatalf("the session goes on after a hostile file request: %q", b)
	}
	select {
	case b := <-got:
		if len(b) != 0 {
			t.Fatalf("the server got %q after its request, want nothing", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the scripted server never saw the session end")
	}
}

// rawLogin logs in as the app user with mysql_native_password, speaking
// the protocol by hand, and returns the connection after the server's OK.
func rawLogin(t *testing.T, h *decodertest.Harness, caps uint32) (*packetReader, *packetWriter) {
	r, w, _ := rawLoginScramble(t, h, caps)
	return r, w
}

// rawLoginScramble is rawLogin, also returning the greeting's scramble.
func rawLoginScramble(t *testing.T, h *decodertest.Harness, caps uint32) (*packetReader, *packetWriter, []byte) {
	t.Helper()
	h.Client.SetDeadline(time.Now().Add(10 * time.Second))
	r := newPacketReader(h.Client, 1<<20)
	w := newPacketWriter(h.Client)
	greet, _, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	g, err := parseGreeting(append([]byte(nil), greet...))
	if err != nil {
		t.Fatal(err)
	}
	// The scramble: 8 bytes after the connection id, 12 more after the
	// reserved bytes.
	v := 1 + len(g.version) + 1 + 4
	scramble := append(append([]byte(nil), g.raw[v:v+8]...), g.raw[g.capLow+2+1+2+2+1+10:][:12]...)
	resp := make([]byte, 32)
	put32(resp, caps|capProtocol41|capSecureConnection|capPluginAuth|capConnectWithDB)
	put32(resp[4:], 1<<24)
	resp[8] = 45
	resp = append(append(resp, testenv.MariaDBAppUser...), 0)
	auth := nativeScramble(scramble, testenv.MariaDBAppPassword)
	resp = append(append(resp, byte(len(auth))), auth...)
	resp = append(append(resp, "app"...), 0)
	resp = append(append(resp, "mysql_native_password"...), 0)
	w.seq = 1
	w.write(resp)
	w.flush()
	ok, _, err := r.next()
	if err != nil || len(ok) == 0 || ok[0] != 0x00 {
		t.Fatalf("raw login: %q %v", ok, err)
	}
	return r, w, scramble
}

// nativeScramble is mysql_native_password's answer:
// SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))).
func nativeScramble(scramble []byte, password string) []byte {
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	h3 := sha1.Sum(append(append([]byte(nil), scramble...), h2[:]...))
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	return h3[:]
}

// rawCommand sends one command and returns the first answer packet.
func rawCommand(t *testing.T, r *packetReader, w *packetWriter, b []byte) []byte {
	t.Helper()
	w.seq = 0
	w.write(b)
	w.flush()
	p, _, err := r.next()
	if err != nil {
		t.Fatalf("command 0x%02x: %v", b[0], err)
	}
	return append([]byte(nil), p...)
}

func TestEngineRawCommands(t *testing.T) {
	e := newMyEnv(t)
	h := e.harness(t, engineRules(""), decodertest.Options{})
	r, w := rawLogin(t, h, 0)
	errOf := func(p []byte) errPacket {
		t.Helper()
		if len(p) == 0 || p[0] != 0xff {
			t.Fatalf("answer %q, want an ERR packet", p)
		}
		return parseErr(p)
	}
	// Replication is denied by the rule; the stream is never relayed.
	dump := append([]byte{comBinlogDump}, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0)
	if e := errOf(rawCommand(t, r, w, dump)); e.code != codeDenied || !strings.Contains(string(e.msg), "ci/deny/no-replication") {
		t.Fatalf("COM_BINLOG_DUMP: %d %s", e.code, e.msg)
	}
	// A command the proxy does not know is refused, the session goes on.
	if e := errOf(rawCommand(t, r, w, []byte{0x99})); e.code != codeUnknownCom {
		t.Fatalf("unknown command: %d %s", e.code, e.msg)
	}
	// COM_INIT_DB is decided as USE.
	if p := rawCommand(t, r, w, append([]byte{comInitDB}, "app"...)); p[0] != 0x00 {
		t.Fatalf("COM_INIT_DB: %q", p)
	}
	// An execute of a statement never prepared through the proxy.
	if e := errOf(rawCommand(t, r, w, []byte{comStmtExecute, 7, 0, 0, 0, 0, 1, 0, 0, 0})); e.code != 1243 {
		t.Fatalf("unknown statement: %d %s", e.code, e.msg)
	}
	// Pipelined: two queries sent at once are decided one by one.
	w.seq = 0
	w.write(append([]byte{comQuery}, "DROP TABLE people"...))
	w.seq = 0
	w.write(append([]byte{comQuery}, "DO 1"...))
	w.flush()
	p, _, _ := r.next()
	if e := errOf(append([]byte(nil), p...)); e.code != codeDenied {
		t.Fatalf("pipelined DROP: %d %s", e.code, e.msg)
	}
	if p, _, err := r.next(); err != nil || p[0] != 0x00 {
		t.Fatalf("pipelined DO 1: %q %v", p, err)
	}
	if h.Tap.Contains("DROP TABLE") {
		t.Fatal("a refused command reached the server")
	}
}

// changeUserPacket is a COM_CHANGE_USER to the app user with
// mysql_native_password over the connection's scramble.
func changeUserPacket(scramble []byte) []byte {
	b := append([]byte{comChangeUser}, testenv.MariaDBAppUser...)
	auth := nativeScramble(scramble, testenv.MariaDBAppPassword)
	b = append(append(b, 0, byte(len(auth))), auth...)
	b = append(append(b, "app"...), 0, 45, 0)
	return append(append(b, "mysql_native_password"...), 0)
}

// TestEngineChangeUser: COM_CHANGE_USER is relayed as a new login, the
// prepared statements are forgotten, and the session goes on; recorded at
// full, the recording holds the commands around it but no proof of the
// password.
func TestEngineChangeUser(t *testing.T) {
	e := newMyEnv(t)
	t.Run("relayed", func(t *testing.T) {
		h := e.harness(t, engineRules(""), decodertest.Options{Record: record.Commands})
		r, w, scramble := rawLoginScramble(t, h, capPluginAuth)
		if p := rawCommand(t, r, w, append([]byte{comStmtPrepare}, "SELECT 1"...)); p[0] != 0x00 {
			t.Fatalf("prepare: %q", p)
		}
		for i := 0; i < 3; i++ { // the column definition and its EOF, then nothing more
			if _, _, err := r.next(); err != nil && i < 2 {
				t.Fatal(err)
			}
			if i == 1 {
				break
			}
		}
		p := rawCommand(t, r, w, changeUserPacket(scramble))
		if p[0] == 0xfe {
			// MariaDB switches to a fresh scramble: the answer is over it.
			_, data, _ := cstring(p[1:])
			w.seq = 2
			w.write(nativeScramble(bytes.TrimSuffix(data, []byte{0}), testenv.MariaDBAppPassword))
			w.flush()
			p, _, _ = r.next()
		}
		if len(p) == 0 || p[0] != 0x00 {
			t.Fatalf("COM_CHANGE_USER: %q, want OK", p)
		}
		if e := rawCommand(t, r, w, []byte{comStmtExecute, 1, 0, 0, 0, 0, 1, 0, 0, 0}); e[0] != 0xff || parseErr(e).code != 1243 {
			t.Fatalf("execute of a statement prepared before the change: %q, want 1243", e)
		}
		if p := rawCommand(t, r, w, append([]byte{comQuery}, "DO 1"...)); p[0] != 0x00 {
			t.Fatalf("DO 1 after the change: %q", p)
		}
		noted := false
		for _, ev := range h.Recorder.EventsOf(record.TypeNote) {
			noted = noted || strings.Contains(ev.Reason, "COM_CHANGE_USER")
		}
		if !noted {
			t.Fatal("the change of user is not noted in the recording")
		}
	})
	t.Run("recorded at full without the proof", func(t *testing.T) {
		h := e.harness(t, engineRules(""), decodertest.Options{Record: record.Full})
		r, w, scramble := rawLoginScramble(t, h, capPluginAuth)
		p := rawCommand(t, r, w, changeUserPacket(scramble))
		var proof []byte
		if p[0] == 0xfe {
			_, data, _ := cstring(p[1:])
			proof = nativeScramble(bytes.TrimSuffix(data, []byte{0}), testenv.MariaDBAppPassword)
			w.seq = 2
			w.write(proof)
			w.flush()
			p, _, _ = r.next()
		}
		if len(p) == 0 || p[0] != 0x00 {
			t.Fatalf("COM_CHANGE_USER under record = full: %q, want OK", p)
		}
		if p := rawCommand(t, r, w, append([]byte{comQuery}, "DO 1"...)); p[0] != 0x00 {
			t.Fatalf("DO 1 after the change: %q", p)
		}
		h.Client.Close()
		h.Wait()
		var wire []byte
		for _, ev := range h.Recorder.EventsOf(record.TypeWire) {
			wire = append(wire, ev.Data...)
		}
		first := nativeScramble(scramble, testenv.MariaDBAppPassword)
		if bytes.Contains(wire, first) || proof != nil && bytes.Contains(wire, proof) {
			t.Fatal("a change-user proof is in the recording")
		}
		if !bytes.Contains(wire, []byte("DO 1")) {
			t.Fatal("the recording lacks the commands after the change")
		}
	})
}

// TestEngineRefusesWithdrawnCapabilities: a client that asks for
// compression the proxy withdrew from the greeting is refused before
// anything of it reaches the server.
func TestEngineRefusesWithdrawnCapabilities(t *testing.T) {
	e := newMyEnv(t)
	h := e.harness(t, engineRules(""), decodertest.Options{})
	h.Client.SetDeadline(time.Now().Add(10 * time.Second))
	r := newPacketReader(h.Client, 1<<20)
	greet, _, err := r.next()
	if err != nil {
		t.Fatal(err)
	}
	g, err := parseGreeting(append([]byte(nil), greet...))
	if err != nil {
		t.Fatal(err)
	}
	if g.caps&(capCompress|capDeprecateEOF) != 0 {
		t.Fatalf("the greeting offers capabilities the proxy cannot read: %s", capList(g.caps&(capCompress|capDeprecateEOF)))
	}
	w := newPacketWriter(h.Client)
	resp := make([]byte, 32)
	put32(resp, capProtocol41|capSecureConnection|capPluginAuth|capCompress)
	resp = append(append(resp, "app"...), 0, 0)
	w.seq = 1
	w.write(resp)
	w.flush()
	p, _, err := r.next()
	if err != nil || len(p) == 0 || p[0] != 0xff || !strings.Contains(string(parseErr(p).msg), "CLIENT_COMPRESS") {
		t.Fatalf("a client asking for compression: %q %v", p, err)
	}
}

// TestEngineCharset: after SET NAMES gbk the server reads 0xbf 0x5c as one
// character, so a backslash after a high byte no longer escapes what it
// seems to: such a text is refused once the session's character set says
// so, and read as usual before.
func TestEngineCharset(t *testing.T) {
	e := newMyEnv(t)
	h := e.harness(t, engineRules(""), decodertest.Options{})
	c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
	text := "SELECT '\xbf\\\\' AS v"
	var me *gomysql.MySQLError
	if _, err := c.ExecContext(ctx10(t), text); errors.As(err, &me) && me.Number == codeDenied {
		t.Fatalf("in utf8mb4 the text is unambiguous, but: %v", err)
	}
	if _, err := c.ExecContext(ctx10(t), "SET NAMES gbk"); err != nil {
		t.Fatal(err)
	}
	_, err := c.ExecContext(ctx10(t), text)
	denied(t, "a high byte before a backslash under gbk", err, "sluice/unparsable")
	if _, err := c.ExecContext(ctx10(t), "SET NAMES utf8mb4"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx10(t), text); errors.As(err, &me) && me.Number == codeDenied {
		t.Fatalf("back in utf8mb4: %v", err)
	}
}
