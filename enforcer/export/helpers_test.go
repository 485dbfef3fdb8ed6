package export

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/enforcer/record"
)

// session is a hand-built recording of one psql-like PostgreSQL session
// together with the byte streams its wire events carry.
type session struct {
	hdr      record.Header
	events   []record.Event
	c2s, s2c []byte
}

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)

// bigRowBytes is the size of the one large DataRow value, so the server's
// reply needs several TCP segments and window ACKs.
const bigRowBytes = 150_000

// newSession builds the sample session: startup, SELECT 42, a SELECT with a
// large row, a denied DROP TABLE answered with an ErrorResponse, and the
// client's Terminate, with the events Sluice records alongside.
func newSession(t testing.TB) *session {
	t.Helper()
	s := &session{hdr: record.Header{Version: 1, Session: "s-0123abcd", Start: t0, KeyID: "00ff"}}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	add := func(e record.Event) {
		e.Seq = uint64(len(s.events) + 1)
		s.events = append(s.events, e)
	}
	wire := func(d time.Duration, dir string, msgs ...pgproto3.Message) {
		var b []byte
		for _, m := range msgs {
			var err error
			if b, err = m.Encode(b); err != nil {
				t.Fatalf("encode %T: %v", m, err)
			}
		}
		if dir == record.DirClientToServer {
			s.c2s = append(s.c2s, b...)
		} else {
			s.s2c = append(s.s2c, b...)
		}
		add(record.Event{Time: at(d), Type: record.TypeWire, Dir: dir, Data: b})
	}
	int4 := []pgproto3.FieldDescription{{Name: []byte("?column?"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}
	text := []pgproto3.FieldDescription{{Name: []byte("repeat"), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1}}
	big := strings.Repeat("x", bigRowBytes)

	add(record.Event{Time: at(0), Type: record.TypeSessionStart, Verdict: "allow", Rule: "default",
		Fields: map[string]string{"target": "app-db", "client": "10.1.2.3:51234", "orig_dst": "10.9.8.7:5432",
			"pid": "4242", "comm": "psql", "job": "build #7"}})
	wire(1*time.Millisecond, record.DirClientToServer,
		&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "ci", "database": "app"}})
	wire(3*time.Millisecond, record.DirServerToClient,
		&pgproto3.AuthenticationOk{}, &pgproto3.ParameterStatus{Name: "server_version", Value: "17.2"},
		&pgproto3.BackendKeyData{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}}, &pgproto3.ReadyForQuery{TxStatus: 'I'})

	add(record.Event{Time: at(10 * time.Millisecond), Type: record.TypeStatement, Kind: "select", Text: "SELECT 42",
		Verdict: "allow", Rule: "read-only"})
	wire(10*time.Millisecond, record.DirClientToServer, &pgproto3.Query{String: "SELECT 42"})
	wire(12*time.Millisecond, record.DirServerToClient, &pgproto3.RowDescription{Fields: int4},
		&pgproto3.DataRow{Values: [][]byte{[]byte("42")}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	add(record.Event{Time: at(12 * time.Millisecond), Type: record.TypeResult, Kind: "select", Rows: 1, Bytes: 2, DurationUS: 1850})

	q := "SELECT repeat('x', 150000)"
	add(record.Event{Time: at(700 * time.Millisecond), Type: record.TypeStatement, Kind: "select", Text: q,
		Verdict: "allow", Rule: "read-only"})
	wire(700*time.Millisecond, record.DirClientToServer, &pgproto3.Query{String: q})
	wire(950*time.Millisecond, record.DirServerToClient, &pgproto3.RowDescription{Fields: text},
		&pgproto3.DataRow{Values: [][]byte{[]byte(big)}}, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	add(record.Event{Time: at(950 * time.Millisecond), Type: record.TypeResult, Kind: "select", Rows: 1, Bytes: bigRowBytes,
		DurationUS: 250_000})

	add(record.Event{Time: at(4 * time.Second), Type: record.TypeStatement, Kind: "ddl", Text: "DROP TABLE users;\n",
		Verdict: "deny", Rule: "no-drop", Reason: "dropping tables is not allowed"})
	wire(4*time.Second, record.DirClientToServer, &pgproto3.Query{String: "DROP TABLE users;\n"})
	wire(4*time.Second+100*time.Microsecond, record.DirServerToClient,
		&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501",
			Message: "sluice: statement denied by rule no-drop: dropping tables is not allowed"},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})
	add(record.Event{Time: at(4*time.Second + 100*time.Microsecond), Type: record.TypeError, ErrCode: "42501",
		Text: "sluice: statement denied by rule no-drop: dropping tables is not allowed"})

	wire(9*time.Second, record.DirClientToServer, &pgproto3.Terminate{})
	add(record.Event{Time: at(9 * time.Second), Type: record.TypeSessionEnd, Reason: "client closed the connection",
		Rows: 2, Bytes: bigRowBytes + 2, DurationUS: 9_000_000, Fields: map[string]string{"statements": "3", "denied": "1"}})
	add(record.Event{Time: at(9 * time.Second), Type: record.TypeCheckpoint, Sig: []byte("checkpoint-signature")})
	add(record.Event{Time: at(9*time.Second + time.Millisecond), Type: record.TypeSeal, Sig: []byte("seal-signature")})
	return s
}
