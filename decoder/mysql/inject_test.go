package mysql

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	sqldriver "database/sql/driver"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/hashicorp/go-hclog"
	vtmysql "vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/replication"
	"vitess.io/vitess/go/mysql/sqlerror"
	"vitess.io/vitess/go/sqltypes"
	querypb "vitess.io/vitess/go/vt/proto/query"
	"vitess.io/vitess/go/vt/vtenv"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/internal/tlsutil"
	"github.com/sluicehq/sluice/ruleset"
)

// Credential injection's tests: the registered mysql handler under
// decoder/decodertest, with the session's credential store reading the
// secret from a test's variable, between go-sql-driver (or a scripted
// client) that knows no password, and a real MariaDB 10.11 whose
// accounts (testenv.MariaDBAppUser and the others) the credentials name.

// injectEnv is the daemon variable the test credentials read.
const injectEnv = "SLUICE_TEST_MYSQL_SECRET"

// The client's own login, which must never matter.
const (
	intruderUser     = "intruder"
	intruderPassword = "not-the-password"
)

// injectRules has target my inject credential ci (user, read from
// injectEnv) into the flows of acme/api's jobs; other jobs match policy
// others, which grants nothing.
func injectRules(user, upstreamTLS string) string {
	return fmt.Sprintf(`
target "my" {
  protocol     = "mysql"
  address      = ["127.0.0.1:3306"]
  upstream_tls = %q

  credential "ci" {
    user         = %q
    password_env = %q
    policies     = ["acme-api"]
  }
}

policy "acme-api" {
  targets = ["my"]
  when    = identity.repository == "acme/api"
  credential "ci" {}
}

policy "others" {
  targets = ["my"]
}
`, upstreamTLS, user, injectEnv)
}

// acmeAPI is a verified identity the rules grant the credential to.
var acmeAPI = ruleset.Identity{Level: ruleset.LevelOIDC, Claims: map[string]string{"repository": "acme/api"}}

// injectHarness serves one flow to upstream (host:port) with rules; the
// session reads the credential's secret from a store where injectEnv is
// secret ("" for unset). Every log line goes to the returned buffer.
func injectHarness(t *testing.T, upstream string, ca *tlsutil.CA, rules, secret string, o decodertest.Options) (*decodertest.Harness, *testenv.Buffer) {
	t.Helper()
	logs := &testenv.Buffer{}
	o.Log = hclog.New(&hclog.LoggerOptions{Name: "inject", Level: hclog.Debug, Output: logs})
	p, ok := decoder.Lookup(ruleset.ProtoMySQL)
	if !ok || p.New == nil {
		t.Fatal("mysql is not registered with a decoder")
	}
	var clientTLS *tls.Config
	if ca != nil {
		clientTLS = ca.ServerConfig()
	}
	inner := p.New(decoder.Env{ClientTLS: clientTLS, Log: o.Log})
	store := credential.NewStore()
	store.LookupEnv = func(k string) (string, bool) {
		if k == injectEnv && secret != "" {
			return secret, true
		}
		return "", false
	}
	o.Handler = func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc) decoder.Result {
		f.Session.Secrets = store // as the daemon sets it, before the session is used
		return inner(ctx, f, client, dial)
	}
	o.Rules, o.Target, o.Upstream = rules, "my", upstream
	return decodertest.Start(t, o), logs
}

// loginError returns the error of a go-sql-driver login through h.
func loginError(t *testing.T, h *decodertest.Harness, user, password string) error {
	t.Helper()
	name := fmt.Sprintf("harness%d", dialers.Add(1))
	gomysql.RegisterDialContext(name, func(ctx context.Context, addr string) (net.Conn, error) { return h.Client, nil })
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = user, password, name, "harness", testenv.MariaDBDatabase
	cfg.Timeout = 10 * time.Second
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	return db.PingContext(ctx10(t))
}

// accessDenied asserts err is an ERR 1045 (28000) whose message holds
// every one of want.
func accessDenied(t *testing.T, err error, want ...string) *gomysql.MySQLError {
	t.Helper()
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != codeAccessDenied || string(me.SQLState[:]) != stateAccessDenied {
		t.Fatalf("login: %v, want error %d (%s)", err, codeAccessDenied, stateAccessDenied)
	}
	for _, w := range want {
		if !strings.Contains(me.Message, w) {
			t.Errorf("the error %q does not say %q", me.Message, w)
		}
	}
	return me
}

// endSession closes c (COM_QUIT) and waits for the handler.
func endSession(t *testing.T, h *decodertest.Harness, c *sql.Conn) decoder.Result {
	t.Helper()
	c.Raw(func(any) error { return sqldriver.ErrBadConn })
	c.Close()
	return h.Wait()
}

// fieldsOf returns a flow-log field list as a map.
func fieldsOf(kv []any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return m
}

// noSecret asserts that secret is in none of the log lines, the
// recording's events, or the recording's file.
func noSecret(t *testing.T, h *decodertest.Harness, logs *testenv.Buffer, secret string) {
	t.Helper()
	if strings.Contains(logs.String(), secret) {
		t.Error("the secret is in the log")
	}
	if h.Recorder == nil {
		return
	}
	for _, ev := range h.Recorder.Events() {
		j, _ := json.Marshal(ev)
		if bytes.Contains(ev.Data, []byte(secret)) || bytes.Contains(j, []byte(secret)) {
			t.Errorf("the secret is in a recorded %s event", ev.Type)
		}
	}
	raw, err := os.ReadFile(h.Recorder.Writer().Path())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Error("the secret is in the recording's file")
	}
}

func TestInjectMariaDB(t *testing.T) {
	e := newMyEnv(t)
	for _, tc := range []struct {
		name, user, secret, upstreamTLS string
		clientTLS                       bool
	}{
		{"native password without TLS", testenv.MariaDBAppUser, testenv.MariaDBAppPassword, "disable", false},
		{"native password with TLS on the server hop", testenv.MariaDBTLSUser, testenv.MariaDBTLSPassword, "require", false},
		{"native password with TLS on both hops", testenv.MariaDBTLSUser, testenv.MariaDBTLSPassword, "require", true},
		{"ed25519", testenv.MariaDBEdUser, testenv.MariaDBEdPassword, "disable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := injectHarness(t, e.my.HostPort(), e.ca, injectRules(tc.user, tc.upstreamTLS), tc.secret,
				decodertest.Options{Identity: acmeAPI, Record: record.Full})
			c := driver(t, h, intruderUser, intruderPassword, func(cfg *gomysql.Config) {
				if tc.clientTLS {
					cfg.TLS = &tls.Config{RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"}
				}
			})
			if got := names(t, c, "SELECT CURRENT_USER()"); len(got) != 1 || got[0] != tc.user+"@%" {
				t.Fatalf("CURRENT_USER() = %q, want %s@%%", got, tc.user)
			}
			if got := names(t, c, "SELECT name FROM people ORDER BY id"); len(got) != len(testenv.MariaDBPeople) {
				t.Fatalf("people: %q", got)
			}
			var variable, cipher string
			if err := c.QueryRowContext(ctx10(t), "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&variable, &cipher); err != nil {
				t.Fatal(err)
			}
			if (cipher != "") != (tc.upstreamTLS == "require") {
				t.Fatalf("Ssl_cipher %q with upstream_tls %s", cipher, tc.upstreamTLS)
			}
			res := endSession(t, h, c)
			f := fieldsOf(res.Fields)
			if f["credential"] != "ci" || f["client_user"] != intruderUser || f["db_user"] != tc.user {
				t.Errorf("flow-log fields %v, want credential ci, client_user %s, db_user %s", res.Fields, intruderUser, tc.user)
			}
			// What the client sent is never forwarded: the server got the
			// credential's user, never the client's.
			if h.Tap.Contains(intruderUser) {
				t.Error("the client's user name reached the server")
			}
			if tc.upstreamTLS == "disable" && !h.Tap.Contains(tc.user+"\x00") {
				t.Error("the server hop does not carry the credential's user")
			}
			noSecret(t, h, logs, tc.secret)
			if !strings.Contains(logs.String(), "authenticated with an injected credential") {
				t.Error("no log line of the injected login")
			}
			var noted bool
			for _, ev := range h.Recorder.EventsOf(record.TypeNote) {
				if ev.Fields["client_user"] == intruderUser && ev.Fields["credential"] == "ci" && ev.Fields["db_user"] == tc.user {
					noted = true
				}
			}
			if !noted {
				t.Error("the recording does not name the credential and the client's user")
			}
		})
	}
}

func TestInjectRefused(t *testing.T) {
	e := newMyEnv(t)
	other := ruleset.Identity{Level: ruleset.LevelOIDC, Claims: map[string]string{"repository": "acme/web"}}
	for _, tc := range []struct {
		name     string
		identity ruleset.Identity
		secret   string
		want     []string
		silent   bool // nothing but the greeting crossed the server hop
	}{
		{"no grant", other, testenv.MariaDBAppPassword, []string{`no database credential for this job on target "my"`, "no matched policy (others)"}, true},
		{"no verified identity", ruleset.Identity{}, testenv.MariaDBAppPassword, []string{"verified CI identity"}, true},
		{"unreadable secret", acmeAPI, "", []string{`the credential "ci" for this database cannot be read`}, true},
		{"a secret the server refuses", acmeAPI, "stale-secret-7d1c", []string{`the injected credential "ci" (user app)`, "the server refused it", "Access denied"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := injectHarness(t, e.my.HostPort(), e.ca, injectRules(testenv.MariaDBAppUser, "disable"), tc.secret,
				decodertest.Options{Identity: tc.identity, Record: record.Full})
			me := accessDenied(t, loginError(t, h, intruderUser, intruderPassword), tc.want...)
			res := h.Wait()
			if res.Err == nil {
				t.Error("the handler reports no error for a refused login")
			}
			if tc.silent && len(h.Tap.Received()) != 0 {
				t.Errorf("%d bytes reached the server of a refused flow", len(h.Tap.Received()))
			}
			if tc.secret != "" {
				if strings.Contains(me.Message, tc.secret) {
					t.Error("the error holds the secret")
				}
				noSecret(t, h, logs, tc.secret)
			}
		})
	}
}

// TestInjectPassThrough: what is not the proxy's to refuse reaches the
// client as the server or the client's own login would have it. In
// monitor mode a flow granted nothing logs in with its own credentials;
// an injected login to a database its account may not use gets the
// server's own error (1044), not a refusal of the credential.
func TestInjectPassThrough(t *testing.T) {
	e := newMyEnv(t)
	t.Run("monitor mode", func(t *testing.T) {
		rules := "mode = \"monitor\"\n" + injectRules(testenv.MariaDBTLSUser, "require")
		h, _ := injectHarness(t, e.my.HostPort(), e.ca, rules, testenv.MariaDBTLSPassword, decodertest.Options{})
		c := driver(t, h, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil)
		if got := names(t, c, "SELECT CURRENT_USER()"); len(got) != 1 || got[0] != testenv.MariaDBAppUser+"@%" {
			t.Fatalf("CURRENT_USER() = %q, want the client's own %s@%%", got, testenv.MariaDBAppUser)
		}
		if f := fieldsOf(endSession(t, h, c).Fields); f["credential"] != nil {
			t.Errorf("a relayed login logged credential %v", f["credential"])
		}
	})
	t.Run("a database the account may not use", func(t *testing.T) {
		h, _ := injectHarness(t, e.my.HostPort(), e.ca, injectRules(testenv.MariaDBAppUser, "disable"), testenv.MariaDBAppPassword,
			decodertest.Options{Identity: acmeAPI})
		name := fmt.Sprintf("harness%d", dialers.Add(1))
		gomysql.RegisterDialContext(name, func(ctx context.Context, addr string) (net.Conn, error) { return h.Client, nil })
		db, _ := sql.Open("mysql", fmt.Sprintf("%s:%s@%s(x)/no_such_db", intruderUser, intruderPassword, name))
		defer db.Close()
		err := db.PingContext(ctx10(t))
		var me *gomysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1044 || strings.Contains(me.Message, "sluice") {
			t.Fatalf("an injected login to another database: %v, want the server's own 1044", err)
		}
	})
}

// TestInjectClientSpeaksOtherPlugin: a client whose handshake response
// answers with another plugin than the greeting's (a MySQL 8 client's
// caching_sha2_password to MariaDB's mysql_native_password), which a
// relayed login would answer with an auth switch, is told only the
// outcome: the server's OK to its handshake response, and the session
// goes on.
func TestInjectClientSpeaksOtherPlugin(t *testing.T) {
	e := newMyEnv(t)
	h, _ := injectHarness(t, e.my.HostPort(), e.ca, injectRules(testenv.MariaDBAppUser, "disable"), testenv.MariaDBAppPassword,
		decodertest.Options{Identity: acmeAPI})
	h.Client.SetDeadline(time.Now().Add(10 * time.Second))
	r := newPacketReader(h.Client, 1<<20)
	w := newPacketWriter(h.Client)
	if _, _, err := r.next(); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 32)
	put32(resp, capProtocol41|capSecureConnection|capPluginAuth|capConnectWithDB|capPluginAuthLenenc)
	put32(resp[4:], 1<<24)
	resp[8] = 45
	resp = append(append(resp, intruderUser...), 0)
	resp = appendLenencString(resp, bytes.Repeat([]byte{0x5a}, 32))
	resp = append(append(resp, "app"...), 0)
	resp = append(append(resp, pluginCachingSha2...), 0)
	w.seq = 1
	w.write(resp)
	w.flush()
	ok, seq, err := r.next()
	if err != nil || len(ok) == 0 || ok[0] != 0x00 || seq != 2 {
		t.Fatalf("after the handshake response: %q (sequence %d) %v, want the server's OK with sequence 2", ok, seq, err)
	}
	p := rawCommand(t, r, w, append([]byte{comQuery}, "SELECT CURRENT_USER()"...))
	if p[0] == 0xff {
		t.Fatalf("a query after the injected login: %s", parseErr(p).msg)
	}
}

// TestInjectScrambles checks the native answer against the engine
// tests' own; the others are checked by servers (ed25519 by MariaDB,
// caching_sha2 by vitess, the RSA answer by the scripted server).
func TestInjectScrambles(t *testing.T) {
	scramble := []byte("0123456789abcdefghij")
	if got, want := nativeAnswer([]byte("app-secret"), scramble), nativeScramble(scramble, "app-secret"); !bytes.Equal(got, want) {
		t.Errorf("nativeAnswer %x, want %x", got, want)
	}
	if got := nativeAnswer(nil, scramble); len(got) != 0 {
		t.Errorf("an empty password answers %x", got)
	}
}

// A stand-in for MySQL 8's caching_sha2_password: neither MariaDB 10.11
// nor Debian has a server with it, so vitess's go/mysql server plays it
// (test-only dependency). Its caching_sha2_password is the real
// protocol: the greeting names the plugin with a 20-byte scramble, the
// fast path answers AuthMoreData 0x03 before its OK, and full
// authentication asks with AuthMoreData 0x04 for the password, which it
// takes only over TLS (vitess implements no RSA exchange, and refuses
// caching_sha2_password on a connection without TLS).

// sha2Server is the vitess server's accounts: users and their passwords,
// with a cache that is warm (fast path) or cold (every login goes
// through full authentication), and a count of full authentications.
type sha2Server struct {
	users map[string]string
	cold  bool
	full  atomic.Int64
}

func (a *sha2Server) AuthMethods() []vtmysql.AuthMethod {
	return []vtmysql.AuthMethod{vtmysql.NewSha2CachingAuthMethod(a, a, a)}
}

func (a *sha2Server) DefaultAuthMethodDescription() vtmysql.AuthMethodDescription {
	return vtmysql.CachingSha2Password
}

func (a *sha2Server) HandleUser(string) bool { return true }

func denyUser(user string) error {
	return sqlerror.NewSQLErrorf(sqlerror.ERAccessDeniedError, sqlerror.SSAccessDeniedError, "Access denied for user '%v'", user)
}

func (a *sha2Server) UserEntryWithCacheHash(_ *vtmysql.Conn, salt []byte, user string, resp []byte, _ net.Addr) (vtmysql.Getter, vtmysql.CacheState, error) {
	pw, ok := a.users[user]
	if !ok {
		return nil, vtmysql.AuthRejected, denyUser(user)
	}
	if a.cold {
		return nil, vtmysql.AuthNeedMoreData, nil
	}
	if !bytes.Equal(resp, vtmysql.ScrambleCachingSha2Password(salt, []byte(pw))) {
		return nil, vtmysql.AuthRejected, denyUser(user)
	}
	return &vtmysql.StaticUserData{}, vtmysql.AuthAccepted, nil
}

func (a *sha2Server) UserEntryWithPassword(_ *vtmysql.Conn, user, password string, _ net.Addr) (vtmysql.Getter, error) {
	a.full.Add(1)
	if pw, ok := a.users[user]; !ok || pw != password {
		return nil, denyUser(user)
	}
	return &vtmysql.StaticUserData{}, nil
}

// sha2Handler answers the few statements the tests send.
type sha2Handler struct{ vtmysql.UnimplementedHandler }

func oneValue(v string) *sqltypes.Result {
	return &sqltypes.Result{Fields: []*querypb.Field{{Name: "v", Type: querypb.Type_VARCHAR, Charset: 45}},
		Rows: [][]sqltypes.Value{{sqltypes.NewVarChar(v)}}}
}

func (sha2Handler) ComQuery(c *vtmysql.Conn, query string, callback func(*sqltypes.Result) error) error {
	switch query {
	case "SELECT CURRENT_USER()":
		return callback(oneValue(c.User))
	case "SELECT 'tls'":
		v := "off"
		if c.TLSEnabled() {
			v = "on"
		}
		return callback(oneValue(v))
	}
	return sqlerror.NewSQLErrorf(sqlerror.ERUnknownError, sqlerror.SSUnknownSQLState, "the test server does not know %q", query)
}

func (h sha2Handler) ComQueryMulti(c *vtmysql.Conn, q string, callback func(sqltypes.QueryResponse, bool, bool) error) error {
	return h.ComQuery(c, q, func(r *sqltypes.Result) error { return callback(sqltypes.QueryResponse{QueryResult: r}, false, true) })
}

func (sha2Handler) ComPrepare(*vtmysql.Conn, string) ([]*querypb.Field, uint16, error) {
	return nil, 0, errors.New("no prepared statements")
}

func (sha2Handler) ComStmtExecute(*vtmysql.Conn, *vtmysql.PrepareData, func(*sqltypes.Result) error) error {
	return errors.New("no prepared statements")
}

func (sha2Handler) ComRegisterReplica(*vtmysql.Conn, string, uint16, string, string) error {
	return errors.New("no replication")
}

func (sha2Handler) ComBinlogDump(*vtmysql.Conn, string, uint32) error {
	return errors.New("no replication")
}

func (sha2Handler) ComBinlogDumpGTID(*vtmysql.Conn, string, uint64, replication.GTIDSet, uint16) error {
	return errors.New("no replication")
}

func (sha2Handler) WarningCount(*vtmysql.Conn) uint16 { return 0 }

var vtEnv = sync.OnceValue(vtenv.NewTestEnv)

func (sha2Handler) Env() *vtenv.Environment { return vtEnv() }

// startSha2Server starts the stand-in on loopback with TLS (a
// certificate of ca) and accounts, closed at cleanup. It returns its
// host:port.
func startSha2Server(t *testing.T, ca *tlsutil.CA, auth *sha2Server) string {
	t.Helper()
	l, err := vtmysql.NewListenerWithConfig(vtmysql.ListenerConfig{Protocol: "tcp", Address: "127.0.0.1:0",
		AuthServer: auth, Handler: sha2Handler{}, ConnReadBufferSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	l.TLSConfig.Store(ca.ServerConfig())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Accept()
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}

// sha2User and sha2Secret are the stand-in's account.
const (
	sha2User   = "deployer"
	sha2Secret = "Sha2-4b9e07-secret"
)

func TestSha2Relayed(t *testing.T) {
	ca, err := tlsutil.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cold bool
	}{
		{"fast path", false},
		{"full authentication over TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth := &sha2Server{users: map[string]string{sha2User: sha2Secret}, cold: tc.cold}
			addr := startSha2Server(t, ca, auth)
			h, _ := injectHarness(t, addr, ca, engineRules(""), "", decodertest.Options{})
			// go-sql-driver sends the password in clear on full
			// authentication only over TLS; the fast path needs none.
			c := driver(t, h, sha2User, sha2Secret, func(cfg *gomysql.Config) {
				cfg.DBName = ""
				if tc.cold {
					cfg.TLS = &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
				}
			})
			if got := names(t, c, "SELECT CURRENT_USER()"); len(got) != 1 || got[0] != sha2User {
				t.Fatalf("CURRENT_USER() = %q", got)
			}
			if got := names(t, c, "SELECT 'tls'"); len(got) != 1 || got[0] != "on" {
				t.Fatalf("the server hop's TLS: %q", got)
			}
			if n := auth.full.Load(); (n > 0) != tc.cold {
				t.Fatalf("%d full authentications, cold cache %t", n, tc.cold)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		addr := startSha2Server(t, ca, &sha2Server{users: map[string]string{sha2User: sha2Secret}})
		h, _ := injectHarness(t, addr, ca, engineRules(""), "", decodertest.Options{})
		err := loginError(t, h, sha2User, "wrong")
		var me *gomysql.MySQLError
		if !errors.As(err, &me) || me.Number != codeAccessDenied {
			t.Fatalf("a wrong password: %v, want the server's 1045", err)
		}
	})
}

func TestSha2Injected(t *testing.T) {
	ca, err := tlsutil.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cold bool
	}{
		{"fast path", false},
		{"full authentication over TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			auth := &sha2Server{users: map[string]string{sha2User: sha2Secret}, cold: tc.cold}
			addr := startSha2Server(t, ca, auth)
			h, logs := injectHarness(t, addr, ca, injectRules(sha2User, "require"), sha2Secret,
				decodertest.Options{Identity: acmeAPI, Record: record.Full})
			c := driver(t, h, intruderUser, intruderPassword, func(cfg *gomysql.Config) { cfg.DBName = "" })
			if got := names(t, c, "SELECT CURRENT_USER()"); len(got) != 1 || got[0] != sha2User {
				t.Fatalf("CURRENT_USER() = %q", got)
			}
			if n := auth.full.Load(); (n > 0) != tc.cold {
				t.Fatalf("%d full authentications, cold cache %t", n, tc.cold)
			}
			res := endSession(t, h, c)
			if f := fieldsOf(res.Fields); f["credential"] != "ci" || f["client_user"] != intruderUser {
				t.Errorf("flow-log fields %v", res.Fields)
			}
			noSecret(t, h, logs, sha2Secret)
			want := `method=caching_sha2_password`
			if tc.cold {
				want = `method="caching_sha2_password (full)"`
			}
			if !strings.Contains(logs.String(), want) {
				t.Errorf("the log does not say %s:\n%s", want, logs.String())
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		addr := startSha2Server(t, ca, &sha2Server{users: map[string]string{sha2User: sha2Secret}})
		h, _ := injectHarness(t, addr, ca, injectRules(sha2User, "require"), "stale-secret-7d1c", decodertest.Options{Identity: acmeAPI})
		accessDenied(t, loginError(t, h, intruderUser, intruderPassword), "the server refused it")
	})
}

// TestSha2Scramble checks the fast path's answer against vitess's own.
func TestSha2Scramble(t *testing.T) {
	scramble := []byte("0123456789abcdefghij")
	if got, want := sha2Scramble([]byte(sha2Secret), scramble), vtmysql.ScrambleCachingSha2Password(scramble, []byte(sha2Secret)); !bytes.Equal(got, want) {
		t.Errorf("sha2Scramble %x, want %x", got, want)
	}
}

// startRSAServer is a scripted stand-in for MySQL 8's caching_sha2_password
// full authentication without TLS, which vitess does not implement: a
// greeting without CLIENT_SSL naming caching_sha2_password, then, whatever
// the first answer, AuthMoreData 0x04 (full authentication); the client
// asks for the public key (0x02), gets it (0x01 and a PKIX PEM block), and
// sends the password XOR the scramble under RSA-OAEP with SHA-1, which the
// server decrypts and checks as MySQL does. It serves one connection, and
// reports the user and password it got (or why it failed) on the channel.
func startRSAServer(t *testing.T, password string) (string, <-chan string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got <- func() string {
			r, w := newPacketReader(c, 1<<20), newPacketWriter(c)
			scramble := []byte("abcdefghij0123456789")
			caps := uint32(capLongPassword | capLongFlag | capConnectWithDB | capProtocol41 | capTransactions |
				capSecureConnection | capPluginAuth | capPluginAuthLenenc)
			g := append([]byte{10}, "8.0.40-scripted\x00"...)
			g = append(g, 7, 0, 0, 0)
			g = append(append(g, scramble[:8]...), 0)
			g = append(g, byte(caps), byte(caps>>8), 255, 2, 0, byte(caps>>16), byte(caps>>24), 21)
			g = append(g, make([]byte, 10)...)
			g = append(append(g, scramble[8:]...), 0)
			g = append(append(g, pluginCachingSha2...), 0)
			w.write(g)
			w.flush()
			resp, _, err := r.next()
			if err != nil {
				return "read response: " + err.Error()
			}
			hr, err := parseResponse(append([]byte(nil), resp...))
			if err != nil || hr.plugin != pluginCachingSha2 {
				return fmt.Sprintf("response: plugin %q %v", hr.plugin, err)
			}
			w.seq = 2
			w.write([]byte{0x01, 0x04})
			w.flush()
			if p, _, err := r.next(); err != nil || len(p) != 1 || p[0] != 0x02 {
				return fmt.Sprintf("want a public key request, got %q %v", p, err)
			}
			w.seq = 4
			w.write(append([]byte{0x01}, keyPEM...))
			w.flush()
			enc, _, err := r.next()
			if err != nil {
				return "read encrypted password: " + err.Error()
			}
			plain, err := rsa.DecryptOAEP(sha1.New(), nil, key, enc, nil)
			if err != nil {
				return "decrypt: " + err.Error()
			}
			for i := range plain {
				plain[i] ^= scramble[i%len(scramble)]
			}
			if len(plain) == 0 || plain[len(plain)-1] != 0 {
				return "the password has no NUL terminator"
			}
			pw := string(plain[:len(plain)-1])
			w.seq = 6
			if pw != password {
				w.write(appendErr(nil, codeAccessDenied, stateAccessDenied, "Access denied for user '"+hr.user+"'", true))
			} else {
				w.write([]byte{0x00, 0, 0, 2, 0, 0, 0})
			}
			w.flush()
			io.Copy(io.Discard, c) // until the client quits
			return hr.user + ":" + pw
		}()
	}()
	return ln.Addr().String(), got
}

// TestSha2RSA: full authentication without TLS, relayed (go-sql-driver
// asks for the key and encrypts) and injected (the proxy does), against
// the scripted server.
func TestSha2RSA(t *testing.T) {
	t.Run("relayed", func(t *testing.T) {
		addr, got := startRSAServer(t, sha2Secret)
		h, _ := injectHarness(t, addr, nil, engineRules(""), "", decodertest.Options{})
		c := driver(t, h, sha2User, sha2Secret, func(cfg *gomysql.Config) { cfg.DBName = "" })
		endSession(t, h, c)
		if g := <-got; g != sha2User+":"+sha2Secret {
			t.Fatalf("the server got %q", g)
		}
	})
	t.Run("injected", func(t *testing.T) {
		addr, got := startRSAServer(t, sha2Secret)
		h, logs := injectHarness(t, addr, nil, injectRules(sha2User, "disable"), sha2Secret,
			decodertest.Options{Identity: acmeAPI, Record: record.Full})
		c := driver(t, h, intruderUser, intruderPassword, func(cfg *gomysql.Config) { cfg.DBName = "" })
		endSession(t, h, c)
		if g := <-got; g != sha2User+":"+sha2Secret {
			t.Fatalf("the server got %q", g)
		}
		if !strings.Contains(logs.String(), "RSA key the server sent on a hop without TLS") {
			t.Error("no warning that the RSA key is unauthenticated")
		}
		noSecret(t, h, logs, sha2Secret)
	})
	t.Run("injected and refused", func(t *testing.T) {
		addr, got := startRSAServer(t, "another-password")
		h, _ := injectHarness(t, addr, nil, injectRules(sha2User, "disable"), sha2Secret, decodertest.Options{Identity: acmeAPI})
		accessDenied(t, loginError(t, h, intruderUser, intruderPassword), "the server refused it")
		h.Wait()
		if g := <-got; g != sha2User+":"+sha2Secret {
			t.Fatalf("the server got %q", g)
		}
	})
}

// FuzzGreetingAuth: whatever a server sends as its greeting, reading
// its scramble and plugin fails cleanly or yields a 20-byte scramble.
func FuzzGreetingAuth(f *testing.F) {
	g := append([]byte{10}, "8.0.40\x00"...)
	g = append(g, 1, 0, 0, 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 0, 0xff, 0xf7, 255, 2, 0, 0xff, 0x81, 21)
	g = append(g, make([]byte, 10)...)
	g = append(append(g, "ijklmnopqrst\x00"...), "caching_sha2_password\x00"...)
	f.Add(g)
	f.Add(g[:len(g)-5])
	f.Add(append(g[:len(g)-22:len(g)-22], "mysql_native_password"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		gr, err := parseGreeting(b)
		if err != nil {
			return
		}
		scramble, _, err := greetingAuth(gr)
		if err == nil && len(scramble) != scrambleLen {
			t.Fatalf("a scramble of %d bytes", len(scramble))
		}
	})
}
