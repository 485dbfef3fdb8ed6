package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// The differential harness: generated sequences of protocol messages are
// sent to a real PostgreSQL twice, directly and through the decoder (in
// process, with a ruleset that masks users.email and users.ssn), and what
// the client receives through Sluice must be exactly the server's answer
// with the masks applied. The generator covers named and unnamed
// statements and portals, Describe of the statement, the portal or
// neither, one or several Syncs, Flush, pipelined BEGIN and SAVEPOINT,
// Execute with a row limit resumed later, text and binary parameters and
// results, errors in the middle of a batch, and statements described in
// one batch and executed in a later one.

// diffRules masks two columns of users by name; nothing else changes.
func diffRules(addr string) string {
	return fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "ci" {
  targets = ["pg"]
  record  = "none"

  mask "pii" {
    columns = ["users.email", "users.ssn", "*.secret"]
    using   = "hash"
  }
}
`, addr)
}

const diffSchema = `create table users(id int primary key, name text, email text, ssn text, note text);
insert into users select i, 'Person '||i, 'person'||i||'@example.com', lpad((100+i)::text,3,'0')||'-45-'||lpad((1000+i)::text,4,'0'), 'n'||i from generate_series(1, 12) i;
create table orders(id int primary key, user_id int, total numeric, email text);
insert into orders select i, 1 + i % 12, i * 2.5, 'order'||i||'@example.org' from generate_series(1, 8) i;
create schema other;
create table other.users(id int, email text);
insert into other.users values (1, 'other@example.net');`

// diffStmt is a statement the generator may Parse.
type diffStmt struct {
	text   string
	params []string // parameter types: int4 or text
	cols   int      // result columns (for per-column formats); 0 for none
}

var diffStmts = []diffStmt{
	{"SELECT email FROM users WHERE id = $1", []string{"int4"}, 1},
	{"SELECT id, name, email, ssn FROM users WHERE id <= $1 ORDER BY id", []string{"int4"}, 4},
	{"SELECT u.email, o.total, o.email FROM users u JOIN orders o ON o.user_id = u.id ORDER BY o.id", nil, 3},
	{"SELECT * FROM users ORDER BY id LIMIT 5", nil, 5},
	{"SELECT ssn, note FROM public.users WHERE id = 2", nil, 2},
	{"WITH x AS (SELECT id, email FROM users) SELECT email, id FROM x ORDER BY id LIMIT 4", nil, 2},
	{"SELECT email FROM other.users", nil, 1},
	{"SELECT id, email FROM orders ORDER BY id", nil, 2},
	{"SELECT $1::text AS echo", []string{"text"}, 1},
	{"SELECT 1/0", nil, 1},
	{"SELECT email FROM no_such_table", nil, 1},
	{"BEGIN", nil, 0},
	{"COMMIT", nil, 0},
	{"ROLLBACK", nil, 0},
	{"SAVEPOINT s1", nil, 0},
	{"ROLLBACK TO SAVEPOINT s1", nil, 0},
	{"SET application_name = 'diff'", nil, 0},
	{"", nil, 0},
}

// diffQueries are simple-protocol texts, some with several statements.
var diffQueries = []string{
	"SELECT email, name FROM users WHERE id = 3",
	"BEGIN; SELECT ssn FROM users ORDER BY id LIMIT 2",
	"SELECT 1; SELECT email FROM users WHERE id = 1; SELECT 2",
	"SELECT email FROM users WHERE id = 1; SELECT 1/0; SELECT ssn FROM users",
	"COMMIT",
	"ROLLBACK",
	"SELECT u.email FROM users u ORDER BY id DESC LIMIT 3",
	"SELECT email FROM orders WHERE id = 1",
}

// entropy is the generator's source of choices: a seeded PRNG in CI, the
// fuzzer's bytes under go test -fuzz (zeros once they run out).
type entropy struct {
	rng *rand.Rand
	b   []byte
}

func (e *entropy) n(k int) int {
	if k <= 1 {
		return 0
	}
	if e.rng != nil {
		return e.rng.IntN(k)
	}
	if len(e.b) == 0 {
		return 0
	}
	v := int(e.b[0])
	e.b = e.b[1:]
	return v % k
}

// genState is what the generator knows of the session, to keep most
// sequences meaningful: statements that exist, whether a block is open.
type genState struct {
	named map[string]int // statement name -> index into diffStmts
	inTx  bool
}

// genSequence builds one sequence: batches of extended-protocol messages
// each ended by Sync, and simple Queries between them.
func genSequence(e *entropy) []pgproto3.FrontendMessage {
	st := &genState{named: map[string]int{}}
	var out []pgproto3.FrontendMessage
	batches := 1 + e.n(4)
	for b := 0; b < batches; b++ {
		if e.n(4) == 0 {
			q := diffQueries[e.n(len(diffQueries))]
			out = append(out, &pgproto3.Query{String: q})
			if strings.HasPrefix(q, "BEGIN") {
				st.inTx = true
			}
			if q == "COMMIT" || q == "ROLLBACK" {
				st.inTx = false
			}
			continue
		}
		ops := 1 + e.n(4)
		for o := 0; o < ops; o++ {
			out = append(out, genOp(e, st)...)
			if e.n(6) == 0 {
				out = append(out, &pgproto3.Flush{})
			}
		}
		out = append(out, &pgproto3.Sync{})
		if !st.inTx {
			// Outside a block, Sync ends the implicit transaction and
			// with it every named portal.
			delete(st.named, "portal:p1")
		}
	}
	return out
}

// genOp generates one statement's messages: maybe a Parse, a Bind, maybe
// a Describe, Executes.
func genOp(e *entropy, st *genState) []pgproto3.FrontendMessage {
	var out []pgproto3.FrontendMessage
	name := []string{"", "s1", "s2"}[e.n(3)]
	idx, exists := st.named[name]
	if !exists || name == "" && e.n(2) == 0 || e.n(3) == 0 {
		if exists && name != "" {
			out = append(out, &pgproto3.Close{ObjectType: 'S', Name: name})
		}
		// Weight transaction control down, SELECTs up.
		idx = e.n(len(diffStmts))
		if e.n(2) == 0 {
			idx = e.n(8)
		}
		s := diffStmts[idx]
		var oids []uint32
		if e.n(2) == 0 {
			for _, p := range s.params {
				oids = append(oids, map[string]uint32{"int4": 23, "text": 25}[p])
			}
		}
		out = append(out, &pgproto3.Parse{Name: name, Query: s.text, ParameterOIDs: oids})
		st.named[name] = idx
		switch s.text {
		case "BEGIN":
			st.inTx = true
		case "COMMIT", "ROLLBACK":
			st.inTx = false
		}
		if e.n(3) == 0 {
			out = append(out, &pgproto3.Describe{ObjectType: 'S', Name: name})
		}
	}
	s := diffStmts[idx]
	portal := ""
	if e.n(3) == 0 {
		portal = "p1"
	}
	bind := &pgproto3.Bind{DestinationPortal: portal, PreparedStatement: name}
	binParams := e.n(2) == 0
	for _, p := range s.params {
		v := 1 + e.n(12)
		if binParams && p == "int4" {
			bind.Parameters = append(bind.Parameters, binary.BigEndian.AppendUint32(nil, uint32(v)))
		} else {
			bind.Parameters = append(bind.Parameters, []byte(strconv.Itoa(v)))
		}
	}
	if binParams && len(s.params) > 0 {
		bind.ParameterFormatCodes = []int16{1}
	}
	switch e.n(4) {
	case 1:
		bind.ResultFormatCodes = []int16{1}
	case 2:
		for i := 0; i < s.cols; i++ {
			bind.ResultFormatCodes = append(bind.ResultFormatCodes, int16(e.n(2)))
		}
	}
	out = append(out, bind)
	if e.n(2) == 0 {
		out = append(out, &pgproto3.Describe{ObjectType: 'P', Name: portal})
	}
	if e.n(3) == 0 {
		// A row limit, resumed by a second Execute.
		out = append(out, &pgproto3.Execute{Portal: portal, MaxRows: uint32(1 + e.n(2))})
		if e.n(2) == 0 {
			out = append(out, &pgproto3.Flush{})
		}
		out = append(out, &pgproto3.Execute{Portal: portal, MaxRows: uint32(e.n(3))})
	} else {
		out = append(out, &pgproto3.Execute{Portal: portal})
	}
	if e.n(5) == 0 {
		out = append(out, &pgproto3.Close{ObjectType: 'P', Name: portal})
	}
	return out
}

// rawMsg is one server message as it crossed the wire.
type rawMsg struct {
	typ  byte
	body []byte
}

func (m rawMsg) String() string {
	return fmt.Sprintf("%c %q", m.typ, m.body)
}

// pgClient is a minimal frontend that keeps the server's messages raw.
type pgClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialClient(addr string) (*pgClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	cl := &pgClient{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	sm := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": "postgres", "database": "postgres"}}
	b, _ := sm.Encode(nil)
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	for {
		m, err := cl.read()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("startup: %w", err)
		}
		if m.typ == 'E' {
			c.Close()
			return nil, fmt.Errorf("startup refused: %q", m.body)
		}
		if m.typ == 'Z' {
			return cl, nil
		}
	}
}

func (cl *pgClient) read() (rawMsg, error) {
	var hdr [5]byte
	if _, err := ioReadFull(cl.r, hdr[:]); err != nil {
		return rawMsg{}, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	b := make([]byte, n)
	if _, err := ioReadFull(cl.r, b); err != nil {
		return rawMsg{}, err
	}
	return rawMsg{typ: hdr[0], body: b}, nil
}

// run sends the whole sequence at once (a pipeline) and reads until one
// ReadyForQuery per Sync and Query has arrived.
func (cl *pgClient) run(seq []pgproto3.FrontendMessage) ([]rawMsg, error) {
	var buf []byte
	want := 0
	for _, m := range seq {
		var err error
		buf, err = m.Encode(buf)
		if err != nil {
			return nil, err
		}
		switch m.(type) {
		case *pgproto3.Sync, *pgproto3.Query:
			want++
		}
	}
	cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	errc := make(chan error, 1)
	go func() { _, err := cl.c.Write(buf); errc <- err }()
	var out []rawMsg
	for want > 0 {
		m, err := cl.read()
		if err != nil {
			return out, fmt.Errorf("after %d messages: %w", len(out), err)
		}
		if m.typ == 'Z' {
			want--
		}
		out = append(out, m)
	}
	return out, <-errc
}

func (cl *pgClient) close() { cl.c.Close() }

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// oracle applies the ruleset's masks to the direct answer: it follows the
// sequence the way the server answers it, knows each result's columns
// (from the stream's RowDescription for simple queries, from its own
// Describe of the statement text with the Bind's formats otherwise), and
// masks the values whose origin is a masked column.
type oracle struct {
	admin  *pgClient
	masker *mask.Masker
	mu     sync.Mutex
	descs  map[string][]colDesc // statement text -> columns (formats 0)
	names  map[[2]uint32]mask.Column
}

func (o *oracle) describe(text string) ([]colDesc, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if d, ok := o.descs[text]; ok {
		return d, nil
	}
	msgs, err := o.admin.run([]pgproto3.FrontendMessage{&pgproto3.Parse{Query: text}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{}})
	if err != nil {
		return nil, err
	}
	var cols []colDesc
	for _, m := range msgs {
		if m.typ == 'T' {
			if cols, err = parseRowDescription(m.body); err != nil {
				return nil, err
			}
		}
	}
	o.descs[text] = cols
	return cols, nil
}

// column names an origin through the admin connection (text protocol,
// values chosen by the oracle).
func (o *oracle) column(c colDesc) (mask.Column, error) {
	if c.table == 0 {
		return mask.Column{Table: "-", Name: c.name, Type: c.typ}, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	k := [2]uint32{c.table, uint32(c.attnum)}
	if mc, ok := o.names[k]; ok {
		return mc, nil
	}
	q := fmt.Sprintf("SELECT n.nspname, c.relname, a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid WHERE c.oid = %d AND a.attnum = %d", c.table, c.attnum)
	msgs, err := o.admin.run([]pgproto3.FrontendMessage{&pgproto3.Query{String: q}})
	if err != nil {
		return mask.Column{}, err
	}
	for _, m := range msgs {
		if m.typ == 'D' {
			v := textValues(m.body)
			mc := mask.Column{Schema: v[0], Table: v[1], Name: v[2], Type: c.typ}
			o.names[k] = mc
			return mc, nil
		}
	}
	return mask.Column{}, fmt.Errorf("origin %d/%d has no name", c.table, c.attnum)
}

// expect returns the direct answer with the masks applied.
func (o *oracle) expect(seq []pgproto3.FrontendMessage, direct []rawMsg) ([]rawMsg, error) {
	// What each response belongs to, in order.
	stmts := map[string]string{}
	stmtDescs := map[string][]colDesc{} // from the stream's own answers to Describe
	type portalInfo struct {
		text    string
		formats []int16
		cols    []colDesc
	}
	portals := map[string]portalInfo{}
	i := 0 // index into seq of the message being answered
	skip := false
	var cols []colDesc
	var plan *mask.Plan
	out := make([]rawMsg, 0, len(direct))
	// advance moves to the next message that gets an answer.
	advance := func() {
		for i < len(seq) {
			switch m := seq[i].(type) {
			case *pgproto3.Flush:
				i++
				continue
			case *pgproto3.Sync:
				if skip {
					return
				}
			default:
				if skip {
					i++
					continue
				}
				_ = m
			}
			return
		}
	}
	setPlan := func(c []colDesc) error {
		cols, plan = c, nil
		if c == nil {
			return nil
		}
		mc := make([]mask.Column, len(c))
		for k, cd := range c {
			var err error
			if mc[k], err = o.column(cd); err != nil {
				return err
			}
		}
		plan = o.masker.Plan(mc)
		return nil
	}
	advance()
	for _, m := range direct {
		switch m.typ {
		case 'N', 'S', 'A':
			out = append(out, m)
			continue
		}
		if i >= len(seq) {
			return nil, fmt.Errorf("server message %v after the sequence ended", m)
		}
		cur := seq[i]
		done := true
		switch c := cur.(type) {
		case *pgproto3.Parse:
			if m.typ == '1' {
				stmts[c.Name] = c.Query
				delete(stmtDescs, c.Name)
			}
		case *pgproto3.Bind:
			if m.typ == '2' {
				p := portalInfo{text: stmts[c.PreparedStatement], formats: c.ResultFormatCodes}
				if d, ok := stmtDescs[c.PreparedStatement]; ok {
					p.cols = append([]colDesc(nil), d...)
					for k := range p.cols {
						p.cols[k].format = formatOf(p.formats, k)
					}
				}
				portals[c.DestinationPortal] = p
			}
		case *pgproto3.Describe:
			if c.ObjectType == 'S' && m.typ == 't' {
				done = false
			}
			if m.typ == 'T' {
				d, err := parseRowDescription(m.body)
				if err != nil {
					return nil, err
				}
				if c.ObjectType == 'S' {
					stmtDescs[c.Name] = d
				} else if p, ok := portals[c.Name]; ok {
					p.cols = d
					portals[c.Name] = p
				}
			}
		case *pgproto3.Execute:
			switch m.typ {
			case 'D':
				done = false
				if plan == nil && cols == nil {
					p := portals[c.Portal]
					d := p.cols
					if d == nil {
						// Nobody asked: the oracle asks on its own connection.
						var err error
						if d, err = o.describe(p.text); err != nil {
							return nil, err
						}
						d = append([]colDesc(nil), d...)
						for k := range d {
							d[k].format = formatOf(p.formats, k)
						}
					}
					if err := setPlan(d); err != nil {
						return nil, err
					}
				}
				m = o.maskRow(m, cols, plan)
			default:
				cols, plan = nil, nil
			}
		case *pgproto3.Query:
			switch m.typ {
			case 'T':
				d, err := parseRowDescription(m.body)
				if err != nil {
					return nil, err
				}
				if err := setPlan(d); err != nil {
					return nil, err
				}
				done = false
			case 'D':
				m = o.maskRow(m, cols, plan)
				done = false
			case 'C', 'I', 'E':
				cols, plan = nil, nil
				done = false
			case 'Z':
			default:
				done = false
			}
		}
		if m.typ == 'E' {
			if _, simple := cur.(*pgproto3.Query); !simple {
				if _, sync := cur.(*pgproto3.Sync); !sync {
					skip = true
				}
			}
		}
		if m.typ == 'Z' {
			skip = false
		}
		out = append(out, m)
		if done {
			i++
			advance()
		}
	}
	return out, nil
}

func (o *oracle) maskRow(m rawMsg, cols []colDesc, plan *mask.Plan) rawMsg {
	if plan == nil {
		return m
	}
	b := m.body
	n := int(binary.BigEndian.Uint16(b))
	out := append([]byte(nil), b[:2]...)
	rest := b[2:]
	for k := 0; k < n; k++ {
		l := int(int32(binary.BigEndian.Uint32(rest)))
		rest = rest[4:]
		if l < 0 {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		v := rest[:l]
		rest = rest[l:]
		var mv []byte
		var null bool
		if k < len(cols) && cols[k].format == 1 {
			mv, null, _ = plan.ApplyBinary(k, cols[k].typ, v, nil)
		} else {
			mv, null, _ = plan.Apply(k, v, nil)
		}
		if null {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(mv)))
		out = append(out, mv...)
	}
	return rawMsg{typ: 'D', body: out}
}

// diffEnv is a real server, the decoder serving it in process, and the
// oracle.
type diffEnv struct {
	pg    *testenv.Postgres
	proxy string
	o     *oracle
}

func startDiffEnv(t testing.TB) *diffEnv { return startRulesEnv(t, diffRules) }

// startRulesEnv is startDiffEnv with another ruleset (which must keep the
// rule ci/mask/pii the oracle masks with).
func startRulesEnv(t testing.TB, rules func(addr string) string) *diffEnv {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.Admin(t, diffSchema)
	rs, diags := ruleset.Parse(map[string][]byte{"diff.hcl": []byte(rules(pg.Addr()))})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	key := bytes.Repeat([]byte{7}, 32)
	m, err := mask.New([]*ruleset.Rule{rs.Rule("ci/mask/pii")}, key)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := dialClient(pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	cache, masks := NewCache(0), mask.NewCache(key)
	ap := netip.MustParseAddrPort(pg.Addr())
	match := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "pg", Protocol: "postgres", Addr: ap}})
	log := hclog.NewNullLogger()
	if os.Getenv("SLUICE_DIFF_LOG") != "" {
		log = hclog.New(&hclog.LoggerOptions{Level: hclog.Debug})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				Serve(ctx, Params{
					Client:   c,
					Dial:     func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", pg.Addr()) },
					Session:  enforcer.NewSession(ctx, match, nil, 0, log),
					Classify: cache.Classify,
					Masks:    masks,
					Log:      log,
				})
			}()
		}
	}()
	return &diffEnv{pg: pg, proxy: ln.Addr().String(),
		o: &oracle{admin: admin, masker: m, descs: map[string][]colDesc{}, names: map[[2]uint32]mask.Column{}}}
}

// check runs seq both ways and compares.
func (env *diffEnv) check(seq []pgproto3.FrontendMessage) error {
	direct, err := dialClient(env.pg.Addr())
	if err != nil {
		return err
	}
	defer direct.close()
	via, err := dialClient(env.proxy)
	if err != nil {
		return err
	}
	defer via.close()
	dm, err := direct.run(seq)
	if err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	want, err := env.o.expect(seq, dm)
	if err != nil {
		return fmt.Errorf("oracle: %w", err)
	}
	got, err := via.run(seq)
	if err != nil {
		return fmt.Errorf("through sluice: %w\ngot so far:\n%s\nwant:\n%s", err, listMsgs(got), listMsgs(want))
	}
	for k := 0; k < max(len(got), len(want)); k++ {
		if k >= len(got) || k >= len(want) || got[k].typ != want[k].typ || !bytes.Equal(sessionFree(got[k]), sessionFree(want[k])) {
			return fmt.Errorf("answers differ at message %d\nthrough sluice:\n%s\nwant (direct, masked):\n%s", k, listMsgs(got), listMsgs(want))
		}
	}
	return nil
}

// sessionFree is a message's body without what differs between two
// sessions by nature: the table OIDs of a RowDescription (a temporary
// table has one per session).
func sessionFree(m rawMsg) []byte {
	if m.typ != 'T' {
		return m.body
	}
	b := append([]byte(nil), m.body...)
	if len(b) < 2 {
		return b
	}
	n := int(binary.BigEndian.Uint16(b))
	p := 2
	for i := 0; i < n; i++ {
		z := bytes.IndexByte(b[p:], 0)
		if z < 0 || p+z+19 > len(b) {
			return m.body
		}
		p += z + 1
		copy(b[p:p+4], []byte{0, 0, 0, 0})
		p += 18
	}
	return b
}

func listMsgs(ms []rawMsg) string {
	var b strings.Builder
	for i, m := range ms {
		fmt.Fprintf(&b, "  %3d %v\n", i, m)
	}
	return b.String()
}

func describeSeq(seq []pgproto3.FrontendMessage) string {
	var b strings.Builder
	for _, m := range seq {
		switch m := m.(type) {
		case *pgproto3.Parse:
			fmt.Fprintf(&b, "  Parse(%q, %q, %v)\n", m.Name, m.Query, m.ParameterOIDs)
		case *pgproto3.Bind:
			fmt.Fprintf(&b, "  Bind(%q, %q, params %q fmt %v, results %v)\n", m.DestinationPortal, m.PreparedStatement, m.Parameters, m.ParameterFormatCodes, m.ResultFormatCodes)
		case *pgproto3.Describe:
			fmt.Fprintf(&b, "  Describe(%c, %q)\n", m.ObjectType, m.Name)
		case *pgproto3.Execute:
			fmt.Fprintf(&b, "  Execute(%q, %d)\n", m.Portal, m.MaxRows)
		case *pgproto3.Close:
			fmt.Fprintf(&b, "  Close(%c, %q)\n", m.ObjectType, m.Name)
		case *pgproto3.Query:
			fmt.Fprintf(&b, "  Query(%q)\n", m.String)
		default:
			fmt.Fprintf(&b, "  %T\n", m)
		}
	}
	return b.String()
}

// diffSequences is how many generated sequences the CI run checks.
const diffSequences = 2000

// TestDifferentialMasking runs diffSequences generated sequences with a
// fixed seed (SLUICE_DIFF_SEED overrides it) and fails on the first
// difference, printing the sequence.
func TestDifferentialMasking(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and a PostgreSQL server")
	}
	env := startDiffEnv(t)
	seed := uint64(16)
	if s := os.Getenv("SLUICE_DIFF_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	n := diffSequences
	if s := os.Getenv("SLUICE_DIFF_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for k := 0; k < n; k++ {
		seq := genSequence(&entropy{rng: rng})
		if err := env.check(seq); err != nil {
			t.Fatalf("sequence %d (seed %d):\n%s%v", k, seed, describeSeq(seq), err)
		}
	}
	t.Logf("%d sequences, no difference", n)
}

// TestMaskRegressions are sequences that leaked or broke before: the
// report's pipelined BEGIN, and a portal executed without a Describe after
// an earlier batch described another statement (the rows were masked by
// the stale description's columns, so the raw email and SSN passed).
func TestMaskRegressions(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and a PostgreSQL server")
	}
	env := startDiffEnv(t)
	for name, seq := range map[string][]pgproto3.FrontendMessage{
		"pipelined BEGIN": {
			&pgproto3.Query{String: "SELECT email FROM users WHERE id = 5"},
			&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "SELECT email FROM users WHERE id = $1"},
			&pgproto3.Bind{ParameterFormatCodes: []int16{1}, Parameters: [][]byte{{0, 0, 0, 3}}},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{},
		},
		"stale description": {
			&pgproto3.Parse{Query: "SELECT id, name FROM users WHERE id = 1"}, &pgproto3.Bind{},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Parse{Query: "SELECT email, ssn FROM users WHERE id = 1"}, &pgproto3.Bind{},
			&pgproto3.Execute{}, &pgproto3.Sync{},
		},
		"temporary table shadowing users, created in the same batch": {
			&pgproto3.Query{String: "SELECT email FROM users WHERE id = 1"},
			&pgproto3.Parse{Query: "CREATE TEMP TABLE users(id int, email text, other text)"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "INSERT INTO users VALUES (1, 'temp@example.net', 'x')"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "SELECT email, other FROM users"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Sync{},
			&pgproto3.Query{String: "SELECT id, email FROM users; SELECT email FROM public.users WHERE id = 2"},
		},
		"fetch size resumed across batches": {
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Name: "s1", Query: "SELECT id, email, ssn FROM users ORDER BY id"},
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", ResultFormatCodes: []int16{1}},
			&pgproto3.Execute{Portal: "p1", MaxRows: 2}, &pgproto3.Sync{},
			&pgproto3.Execute{Portal: "p1", MaxRows: 3}, &pgproto3.Flush{}, &pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{},
			&pgproto3.Query{String: "COMMIT"},
		},
	} {
		if err := env.check(seq); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzDifferentialMasking derives the sequence from the fuzzer's bytes;
// the committed corpus (testdata/fuzz) runs as part of go test.
func FuzzDifferentialMasking(f *testing.F) {
	if testing.Short() {
		f.Skip("needs root and a PostgreSQL server")
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 1, 2, 0, 0, 1, 1, 1, 0, 2})
	env := startDiffEnv(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		seq := genSequence(&entropy{b: b})
		if err := env.check(seq); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatalf("%s%v", describeSeq(seq), err)
		}
	})
}

// TestResultRowsAcrossExecutes: a rule on result.rows counts a portal
// fetched in pieces (Execute with a row limit, resumed) as one result, so
// a fetch size cannot walk around it.
func TestResultRowsAcrossExecutes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and a PostgreSQL server")
	}
	env := startRulesEnv(t, func(addr string) string {
		return diffRules(addr) + `
policy "limit" {
  targets = ["pg"]
  deny "big" {
    when   = result.rows > 3
    reason = "more than 3 rows"
  }
}
`
	})
	cl, err := dialClient(env.proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.close()
	msgs, err := cl.run([]pgproto3.FrontendMessage{
		&pgproto3.Query{String: "BEGIN"},
		&pgproto3.Parse{Query: "SELECT id FROM users ORDER BY id"},
		&pgproto3.Bind{DestinationPortal: "p1"},
		&pgproto3.Execute{Portal: "p1", MaxRows: 2}, &pgproto3.Sync{},
		&pgproto3.Execute{Portal: "p1", MaxRows: 2}, &pgproto3.Sync{},
		&pgproto3.Execute{Portal: "p1", MaxRows: 2}, &pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, denied := 0, 0
	for _, m := range msgs {
		switch {
		case m.typ == 'D':
			rows++
		case m.typ == 'E' && errorCode(m.body) == "42501":
			denied++
		}
	}
	// Rows 1-3, the denial at row 4, and the denial again for the
	// portal's next piece.
	if rows != 3 || denied != 2 {
		t.Fatalf("%d rows and %d denials, want 3 rows, then a denial for each later Execute:\n%s", rows, denied, listMsgs(msgs))
	}
}
