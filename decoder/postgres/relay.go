package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// relay is the statement phase: the client-to-server goroutine classifies
// and decides, the server-to-client goroutine accounts results, masks
// them and turns the server's error for a substituted statement into the
// denial. Where the io_uring relay core runs, the same handlers (clientMsg,
// serverMsg) run on the core's thread instead, a whole message at a time,
// and the goroutines take over only when a session leaves the core
// (core.go).
//
// The two sides share one queue (ops): for every message sent to the
// server that the server answers (Parse, Bind, Describe, Execute, Close,
// Sync, Query, FunctionCall, and the proxy's own messages) the client side
// appends what it was, and the server side takes the head as each answer
// arrives. So the server side always knows which message an answer
// belongs to, whatever the client pipelines: named and unnamed statements
// and portals, descriptions asked for in one batch and used in a later
// one, errors in the middle of a batch (the server skips to the next
// Sync, and so does the queue), suspended portals resumed later. The
// descriptions of statements and portals are kept as the server answers
// them, so a result's columns are always the columns of the portal that
// produced it.
//
// A denied statement never reaches the server. In its place the server
// gets a call of a function that cannot exist (sluice_denied_<nonce>):
// the server fails it exactly where the statement would have run, so its
// transaction state (idle, in a block, or aborted) and the extended
// protocol's skip-until-Sync stay the server's own, and the client sees
// the ReadyForQuery status the server really has. The server's error for
// that message is replaced with the 42501 denial on the way back.
//
// A statement whose verdict masks has its result's columns named before
// it runs: the proxy asks the server for the portal's description when
// the client did not, and looks up the tables the statement names that
// this session has not looked up yet (catalog.go). Both are pipelined in
// front of the statement on the same connection, so no safe point is
// needed and nothing waits. A result whose column origins still cannot
// be named is refused with 42501; its rows never pass.
type relay struct {
	s      *session
	cr, sr *frameReader
	cw, sw *bufio.Writer
	cwMu   sync.Mutex // cw is the server goroutine's, but the client side may need to end the session
	status byte

	// dec decides the client's commands; holdNotice and resultNotice
	// tell the client about a hold before a statement and on a result.
	dec                      decoder.Decider
	holdNotice, resultNotice decoder.Notify

	// Client side: named statements and portals as the client made them.
	stmts     map[string]*cstmt
	portals   map[string]*cportal
	prepared  sqlPrepared // SQL-level PREPAREs
	stmtBytes int         // text held by stmts
	openBatch bool        // extended-protocol messages sent since the last Sync
	batch     uint64      // Syncs and Queries sent: which batch a Describe was in
	ownName   string
	ownBuf    []byte

	// core is the session's state on the io_uring core while it runs
	// there (core.go); resume and pre are the message the goroutines
	// resume with when it left, and that message's decision.
	core    *coreSession
	resume  *resumeMsg
	pre     *decoder.Command
	heldRow *heldRow
	leftFor string // why the session left the core

	// release: the client ended with Terminate while the session was
	// idle, and the server connection goes back to the pool (pool.go).
	release bool

	// Shared: the answers the server owes, in order (the client side
	// pushes, the server side pops), and mu guarding status.
	ops decoder.Owed[*op]
	mu  sync.Mutex

	// Server side: statements and portals as the server has them.
	sStmts   map[string]*sstmt
	sPortals map[string]*sportal
	// suppress drops the server's answers until the batch's
	// ReadyForQuery: the client was told its batch failed (a refused
	// result), so it expects nothing more of it.
	suppress bool
	// lastMasker masks error and notice texts that arrive with no
	// masked statement in flight.
	lastMasker *mask.Masker
	// rowBuf and valBuf are scratch for masked rows.
	rowBuf, valBuf []byte
	// plans makes the results' masking plans, reusing the last one for
	// the next result with the same masker and columns (a statement run
	// again).
	plans decoder.Plans[colDesc]
}

// Bounds of one session's prepared statements (the client's and the
// proxy's records of them).
const (
	maxStatements     = 10000
	maxStatementBytes = 64 << 20
)

// cstmt is a prepared statement as the client side expects the server to
// have it. It is a guess: a Parse the server skips (an error earlier in
// its batch) leaves the server with the statement the name had before.
// What the server really has is the server side's (sstmt); the client
// side's guess only decides what to send ahead of an Execute.
type cstmt struct {
	c *decoder.Command
	// described is the batch in which the client asked for the
	// statement's description after its Parse, plus one (0: never).
	described uint64
}

// cportal is a bound portal as the client side expects it (a guess, as
// cstmt).
type cportal struct {
	c         *decoder.Command
	described uint64 // as cstmt's
}

// sstmt is a prepared statement the server has: the command it was
// decided as, and its description once the server gave it (nil until
// then; empty for no rows).
type sstmt struct {
	c    *decoder.Command
	desc []colDesc
}

// sportal is a portal the server has: the command it runs, its result
// columns (from the statement's description with the Bind's formats, or
// its own Describe) and what earlier Executes of it returned.
type sportal struct {
	c           *decoder.Command
	cols        []colDesc
	rows, bytes int64
	heldOK      bool
	// refused is the refusal of an earlier Execute: the portal's later
	// rows are refused too.
	refused []byte
}

// op is one message the server answers, in the order sent.
type op struct {
	typ     byte // the message: 'P', 'B', 'D', 'E', 'C', 'S', 'Q' or 'F'
	obj     byte // Describe and Close: 'S' or 'P'
	name    string
	stmt    string           // Bind: the statement bound
	formats []int16          // Bind: result formats
	c       *decoder.Command // Parse: the statement decided
	it      *item            // Execute, Query, FunctionCall: the result accounted
	// denial replaces the server's error for this message: the message
	// was substituted for a refused one.
	denial []byte
	// own marks the proxy's own messages, whose answers the client never
	// sees; lk is the lookup an own Execute runs, sync an own Sync.
	own bool
	lk  *lookup
}

// item is one command in flight: a simple Query, an Execute or a function
// call.
type item struct {
	c      *decoder.Command
	simple bool // a simple Query or function call: ends at ReadyForQuery
	start  time.Time
	rows   int64
	bytes  int64
	// base counts what earlier Executes of the same portal returned: a
	// result fetched in pieces is decided on its whole size.
	baseRows, baseBytes int64
	started             bool
	code                string
	denied              bool
	unknown             bool // an Execute of a portal the proxy never saw bound

	// gate decides a result whose rules wait on it again as it grows
	// (decoder.Decider.CheckResult); its Approved is carried across a
	// portal's Executes.
	gate decoder.ResultGate

	// Masking: the portal an Execute runs, the columns of the result in
	// flight and the plan built for them.
	portal  string
	cols    []colDesc
	plan    *mask.Plan
	copyOut *copyState

	// refusal is set when the result was refused: the server was asked
	// to cancel, further rows are dropped and the statement's end is
	// replaced by refusal.
	refusal []byte
}

// init makes the relay's maps; run calls it.
func (r *relay) init() {
	if r.s.catalog == nil {
		r.s.catalog = newCatalog()
	}
	r.stmts = map[string]*cstmt{}
	r.portals = map[string]*cportal{}
	r.sStmts = map[string]*sstmt{}
	r.sPortals = map[string]*sportal{}
	r.ownName = "sluice_lookup_" + r.s.nonce
	r.dec = decoder.Decider{Session: r.s.p.Session, Masks: r.s.p.Masks}
	r.plans.Origins = r.origins
	r.plans.ByStatement = r.namedByStatement
	// A hold before a statement runs is noticed from the client side,
	// while the server side may be writing; a hold on a result from the
	// server side, which holds cwMu.
	r.holdNotice = func(id, msg string) {
		r.cwMu.Lock()
		writeMsg(r.cw, 'N', noticeBody(msg))
		r.cw.Flush()
		r.cwMu.Unlock()
	}
	r.resultNotice = func(id, msg string) {
		writeMsg(r.cw, 'N', noticeBody(msg))
		r.cw.Flush()
	}
}

func (r *relay) run() error {
	r.init()
	if done, err := r.onCore(); done {
		return err
	}
	if r.release {
		// Terminated on the core, which gave the sockets back.
		r.releaseServer()
		return nil
	}
	errc := make(chan error, 1)
	go func() { errc <- r.serverLoop() }()
	cerr := r.clientLoop()
	if cerr != nil {
		// Unblock the server side.
		r.s.up.Close()
	} else if r.release {
		// Stop the server side where it waits for the server, with the
		// connection open.
		r.s.up.SetReadDeadline(time.Unix(1, 0))
	}
	serr := <-errc
	if r.release && cerr == nil {
		r.releaseServer()
		return nil
	}
	r.s.close()
	if cerr != nil && !isEOF(cerr) {
		return cerr
	}
	if serr != nil && !isEOF(serr) && cerr == nil {
		return serr
	}
	return nil
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF)
}

// clientLoop reads the client's messages until Terminate or EOF.
func (r *relay) clientLoop() error {
	if m := r.resume; m != nil {
		// The message the io_uring core stopped at (core.go).
		r.resume = nil
		var err error
		if m.typ == 'Q' {
			err = r.queryMsg(m.body)
		} else {
			err = r.parseMsg(m.body)
		}
		if err != nil {
			return r.endClient(err)
		}
	}
	for {
		if r.cr.idle() {
			if err := r.sw.Flush(); err != nil {
				return err
			}
		}
		typ, n, err := r.cr.next()
		if err != nil {
			return r.endClient(err)
		}
		done, err := r.clientMsg(typ, n)
		if err != nil {
			return r.endClient(err)
		}
		if done {
			return r.sw.Flush()
		}
	}
}

// clientMsg handles one client message, whose header was read; done is
// true after Terminate.
func (r *relay) clientMsg(typ byte, n int) (done bool, err error) {
	switch typ {
	case 'Q':
		err = r.query(n)
	case 'P':
		err = r.parse(n)
	case 'B':
		err = r.bind(n)
	case 'E':
		err = r.execute(n)
	case 'C':
		err = r.closeMsg(n)
	case 'S':
		r.openBatch = false
		r.batch++
		r.push(&op{typ: 'S'})
		err = r.cr.forward(r.sw, n)
	case 'F':
		err = r.functionCall(n)
	case 'X':
		if r.keepServer() {
			_, err := r.cr.body(n)
			return true, err
		}
		return true, r.cr.forward(r.sw, n)
	case 'D':
		err = r.describe(n)
	case 'H', 'd', 'c', 'f':
		// Flush, COPY data/done/fail: no answer of their own.
		err = r.cr.forward(r.sw, n)
	default:
		err = &ProtocolError{Msg: fmt.Sprintf("unknown message type %q from the client", typ)}
	}
	return false, err
}

// endClient ends the session for a client-side error: a protocol
// violation is reported to the client, and nothing of the offending
// message has been forwarded.
func (r *relay) endClient(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		r.cwMu.Lock()
		fatal(r.cw, codeProtocolViolation, "sluice: "+pe.Error())
		r.cwMu.Unlock()
		r.s.p.Log.Warn("session ended: client protocol violation", "error", pe.Msg)
		if pe.Pending > 0 && r.s.cconn != nil && r.core == nil {
			r.cr.discard(r.s.cconn, pe.Pending, 2*time.Second)
		}
	}
	return err
}

// decide classifies text and decides it (decoder.Decider: the verdict,
// and a masker that fails closed).
func (r *relay) decide(text string) *decoder.Command {
	c := &decoder.Command{Cmd: enforcer.Command{Text: text}}
	c.Cmd.Statement, c.Cmd.ClassifyErr = r.s.p.Classify(text)
	if c.Cmd.ClassifyErr == nil {
		// EXECUTE is decided as what this session prepared.
		c.Cmd.Statement = r.prepared.apply(c.Cmd.Statement, text)
	}
	r.dec.Decide(c)
	return c
}

// push appends what the server will answer next.
func (r *relay) push(o *op) {
	r.ops.Push(o)
}

// substitute is the statement sent in place of a denied one.
func (r *relay) substitute() string {
	return "SELECT pg_catalog.sluice_denied_" + r.s.nonce + "()"
}

// changesSchema reports whether a statement can change what names
// resolve to (DDL, search_path, DISCARD): what the session looked up
// must be looked up again.
func changesSchema(st ruleset.Statement) bool {
	switch st.Kind {
	case "select", "insert", "update", "delete", "merge", "copy_out", "copy_in", "transaction",
		"show", "explain", "empty", "lock", "vacuum", "execute", "function_call":
		return false
	}
	return true
}

// query handles a simple Query: one message, one or more statements, one
// implicit transaction. If any statement in it is refused, none runs.
func (r *relay) query(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	return r.queryMsg(b)
}

// queryMsg is query with the message's body.
func (r *relay) queryMsg(b []byte) error {
	text, _, err := cstring(b)
	if err != nil {
		return err
	}
	c := r.decided(text)
	if r.offCore(c, 'Q', b) {
		return errOffCore
	}
	r.dec.AwaitHold(r.s.ctx, c, r.holdNotice)
	it := &item{c: c, simple: true, start: time.Now()}
	r.batch++
	if c.Blocked() {
		it.denied = true
		r.push(&op{typ: 'Q', it: it, denial: denialBody(c.Verdict)})
		return writeMsg(r.sw, 'Q', append([]byte(r.substitute()), 0))
	}
	if changesSchema(c.Cmd.Statement) {
		r.forgetNames()
	}
	if !r.openBatch {
		// A lookup of its own, ended by its own Sync, in front of the
		// query. (After unsynced extended messages a Sync would end the
		// client's implicit transaction early: no lookup then, and
		// origins the session has not named refuse the result.)
		if err := r.lookup(c, true); err != nil {
			return err
		}
	}
	r.push(&op{typ: 'Q', it: it})
	return writeMsg(r.sw, 'Q', b)
}

// parse handles Parse: the statement is decided here, once per prepared
// statement, and a refused one is replaced so that it never exists on the
// server.
func (r *relay) parse(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	return r.parseMsg(b)
}

// parseMsg is parse with the message's body.
func (r *relay) parseMsg(b []byte) error {
	name, rest, err := cstring(b)
	if err != nil {
		return err
	}
	text, _, err := cstring(rest)
	if err != nil {
		return err
	}
	c := r.decided(text)
	if r.offCore(c, 'P', b) {
		return errOffCore
	}
	r.dec.AwaitHold(r.s.ctx, c, r.holdNotice)
	r.openBatch = true
	old := r.stmts[name]
	if old != nil {
		r.stmtBytes -= len(old.c.Cmd.Text)
	}
	if old == nil && len(r.stmts) >= maxStatements || r.stmtBytes+len(text) > maxStatementBytes {
		delete(r.stmts, name)
		body := errorBody("ERROR", "54000", "sluice: too many prepared statements in this session",
			fmt.Sprintf("A session may hold %d prepared statements of %d MiB of text in all.", maxStatements, maxStatementBytes>>20),
			"Close prepared statements the session no longer needs.")
		r.push(&op{typ: 'P', name: name, denial: body})
		return writeMsg(r.sw, 'P', append(append(append([]byte(name), 0), r.substitute()...), 0, 0, 0))
	}
	r.stmts[name] = &cstmt{c: c}
	r.stmtBytes += len(text)
	if c.Blocked() {
		r.push(&op{typ: 'P', name: name, denial: denialBody(c.Verdict)})
		return writeMsg(r.sw, 'P', append(append(append([]byte(name), 0), r.substitute()...), 0, 0, 0))
	}
	if changesSchema(c.Cmd.Statement) {
		r.forgetNames()
	}
	r.push(&op{typ: 'P', name: name, c: c})
	if err := writeMsg(r.sw, 'P', b); err != nil {
		return err
	}
	// The tables are looked up right behind the Parse, with the
	// search_path the server resolved them with: a statement the server
	// has is a statement whose tables were looked up, whatever errors
	// later messages meet.
	return r.lookup(c, false)
}

// bind remembers which statement a portal runs. A statement the proxy
// never saw prepared (a name made with SQL-level PREPARE, or none) is
// not bound: the Bind goes to the server naming a statement that cannot
// exist, and the client gets a 42501 denial.
func (r *relay) bind(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	portalName, rest, err := cstring(b)
	if err != nil {
		return err
	}
	stmt, rest, err := cstring(rest)
	if err != nil {
		return err
	}
	formats, err := bindResultFormats(rest)
	if err != nil {
		return err
	}
	r.openBatch = true
	cs := r.stmts[stmt]
	if cs == nil {
		delete(r.portals, portalName)
		body := errorBody("ERROR", codeInsufficientPrivilege,
			fmt.Sprintf("sluice: prepared statement %q was not prepared through the protocol", stmt),
			"Sluice decides a prepared statement when it is parsed; it never saw this one parsed (SQL-level PREPARE, or no such statement), so it cannot be bound.",
			"Prepare the statement with the protocol's Parse (the driver's prepare), or run it with EXECUTE.")
		r.push(&op{typ: 'B', name: portalName, denial: body})
		out := append(append([]byte(portalName), 0), "sluice_denied_"+r.s.nonce...)
		return writeMsg(r.sw, 'B', append(append(out, 0), rest...))
	}
	if len(r.portals) >= maxStatements {
		clear(r.portals) // names of dead portals; the server's own state is what counts
	}
	r.portals[portalName] = &cportal{c: cs.c, described: cs.described}
	r.push(&op{typ: 'B', name: portalName, stmt: stmt, formats: formats})
	return writeMsg(r.sw, 'B', b)
}

// objectMsg reads the body of a Describe or Close: 'S' or 'P', then a
// statement or portal name.
func (r *relay) objectMsg(n int, what string) (b []byte, name string, err error) {
	if b, err = r.cr.body(n); err != nil {
		return nil, "", err
	}
	if len(b) < 2 || b[0] != 'S' && b[0] != 'P' {
		return nil, "", &ProtocolError{Msg: "malformed " + what}
	}
	name, _, err = cstring(b[1:])
	return b, name, err
}

// describe forwards a Describe; its answer names the columns.
func (r *relay) describe(n int) error {
	b, name, err := r.objectMsg(n, "Describe")
	if err != nil {
		return err
	}
	switch b[0] {
	case 'S':
		if cs := r.stmts[name]; cs != nil {
			cs.described = r.batch + 1
		}
	case 'P':
		if pt := r.portals[name]; pt != nil {
			pt.described = r.batch + 1
		}
	}
	r.openBatch = true
	r.push(&op{typ: 'D', obj: b[0], name: name})
	return writeMsg(r.sw, 'D', b)
}

// execute accounts the portal's statement as in flight. A masked one
// has its columns named first (see lookup).
func (r *relay) execute(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	portal, _, err := cstring(b)
	if err != nil {
		return err
	}
	r.openBatch = true
	// The result is accounted to the command the server side finds the
	// portal bound to (see result); the client side's guess decides what
	// goes ahead of it.
	o := &op{typ: 'E', name: portal, it: &item{start: time.Now(), portal: portal}}
	if pt := r.portals[portal]; pt != nil && pt.c != nil {
		o.it.c = pt.c
		if changesSchema(pt.c.Cmd.Statement) {
			r.forgetNames()
		}
		if pt.c.Masker != nil && !pt.c.Blocked() {
			if pt.described != r.batch+1 {
				// The rows must not arrive before their columns. A
				// description from an earlier batch may belong to a
				// statement the server skipped: ask again.
				pt.described = r.batch + 1
				r.push(&op{typ: 'D', obj: 'P', name: portal, own: true})
				if err := writeMsg(r.sw, 'D', append(append([]byte{'P'}, portal...), 0)); err != nil {
					return err
				}
			}
			if err := r.lookup(pt.c, false); err != nil {
				return err
			}
		}
	}
	r.push(o)
	return writeMsg(r.sw, 'E', b)
}

// lookup sends, in front of the statement about to go, a catalog lookup
// of the tables it names that this session has not looked up, when its
// masks go by column.
func (r *relay) lookup(c *decoder.Command, sync bool) error {
	if c.Masker == nil || !c.Masker.ByColumn() || r.s.catalog == nil {
		return nil
	}
	names, oids, gen := r.s.catalog.unresolved(c.Cmd.Statement.Tables)
	if len(names) == 0 && len(oids) == 0 {
		return nil
	}
	lk := &lookup{gen: gen, names: names, oids: oids}
	r.ownBuf = lookupMessages(r.ownBuf[:0], r.ownName, names, oids, sync)
	r.ops.Push(&op{typ: 'P', own: true}, &op{typ: 'B', own: true}, &op{typ: 'E', own: true, lk: lk},
		&op{typ: 'C', own: true}, &op{typ: 'C', own: true})
	if sync {
		r.ops.Push(&op{typ: 'S', own: true})
	}
	_, err := r.sw.Write(r.ownBuf)
	return err
}

// forgetNames makes the session look its tables up again.
func (r *relay) forgetNames() {
	if r.s.catalog != nil {
		r.s.catalog.forget()
	}
}

// closeMsg forgets a closed statement or portal.
func (r *relay) closeMsg(n int) error {
	b, name, err := r.objectMsg(n, "Close")
	if err != nil {
		return err
	}
	switch b[0] {
	case 'S':
		if cs := r.stmts[name]; cs != nil {
			r.stmtBytes -= len(cs.c.Cmd.Text)
			delete(r.stmts, name)
		}
	case 'P':
		delete(r.portals, name)
	}
	r.openBatch = true
	r.push(&op{typ: 'C', obj: b[0], name: name})
	return writeMsg(r.sw, 'C', b)
}

// functionCall decides a fastpath call. The function is named only by
// its OID, so rules see statement.kind "function_call" and functions
// ["oid:N"].
func (r *relay) functionCall(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	if len(b) < 4 {
		return &ProtocolError{Msg: "short function call"}
	}
	oid := binary.BigEndian.Uint32(b)
	c := &decoder.Command{Cmd: enforcer.Command{Text: fmt.Sprintf("<fastpath function call oid %d>", oid),
		Statement: ruleset.Statement{Kind: "function_call", Functions: []string{fmt.Sprintf("oid:%d", oid)}}}}
	c.Verdict = r.s.p.Session.Decide(&c.Cmd)
	it := &item{c: c, simple: true, start: time.Now()}
	if c.Blocked() {
		it.denied = true
		r.push(&op{typ: 'Q', it: it, denial: denialBody(c.Verdict)})
		return writeMsg(r.sw, 'Q', append([]byte(r.substitute()), 0))
	}
	r.push(&op{typ: 'F', it: it})
	return writeMsg(r.sw, 'F', b)
}

// head returns the answer the server owes next, or nil. Server side
// only.
func (r *relay) head() *op {
	o, _ := r.ops.Front()
	return o
}

// pop removes the head. Server side only.
func (r *relay) pop() {
	r.ops.Pop()
}

// send writes a message to the client unless the batch's answers are
// being suppressed.
func (r *relay) send(typ byte, b []byte) error {
	if r.suppress {
		return nil
	}
	return writeMsg(r.cw, typ, b)
}

// pass forwards the current server message unless suppressed.
func (r *relay) pass(n int) error {
	if r.suppress {
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	return r.serverErr(r.sr.forward(r.cw, n))
}

// serverLoop relays the server's messages to the client.
func (r *relay) serverLoop() error {
	r.cwMu.Lock()
	defer r.cwMu.Unlock()
	if h := r.heldRow; h != nil {
		// The row the io_uring core stopped at (core.go): its hold is
		// waited for here.
		r.heldRow = nil
		it := h.it
		if refused, v := r.dec.AwaitResultHold(r.s.ctx, it.c, &it.gate, h.v, it.baseRows+it.rows, r.resultNotice); refused {
			r.refuseResult(it, denialBody(v))
		}
		if err := r.rowBody(it, h.n); err != nil {
			return err
		}
	}
	for {
		if r.sr.idle() {
			if err := r.cw.Flush(); err != nil {
				return err
			}
			// Let the client side report a violation while we wait.
			r.cwMu.Unlock()
			_, err := r.sr.r.Peek(1)
			r.cwMu.Lock()
			if err != nil {
				return r.serverErr(err)
			}
		}
		typ, n, err := r.sr.next()
		if err != nil {
			return r.serverErr(err)
		}
		if err := r.serverMsg(typ, n); err != nil {
			return err
		}
	}
}

// serverMsg handles one server message, whose header was read.
func (r *relay) serverMsg(typ byte, n int) (err error) {
	switch typ {
	case 'D':
		err = r.dataRow(n)
	case 'T':
		err = r.rowDescription(n)
	case 'n':
		err = r.noData(n)
	case 't':
		err = r.pass(n) // ParameterDescription, then the row description
	case '1', '2', '3':
		err = r.completion(typ, n)
	case 'C', 'I', 's':
		err = r.commandEnd(typ, n)
	case 'E':
		err = r.errorResponse(n)
	case 'Z':
		err = r.ready(n)
	case 'H':
		err = r.copyOutResponse(n)
	case 'd':
		err = r.copyData(n)
	case 'c':
		err = r.copyDone(n)
	case 'N':
		err = r.notice(n)
	case 'S', 'A':
		// Parameter status and notifications: never suppressed.
		if typ == 'S' && r.s.pooling {
			var b []byte
			if b, err = r.sr.body(n); err == nil {
				r.s.paramStatus(b)
				err = writeMsg(r.cw, 'S', b)
			}
			return r.serverErr(err)
		}
		err = r.serverErr(r.sr.forward(r.cw, n))
	default:
		err = r.pass(n)
	}
	return err
}

// unexpected ends the session when the server's answer does not fit the
// message it answers: the proxy's view of the session would be wrong.
func (r *relay) mismatch(typ byte, h *op) error {
	what := "nothing"
	if h != nil {
		what = fmt.Sprintf("%q", h.typ)
	}
	return r.serverErr(&ProtocolError{Msg: fmt.Sprintf("answer %q does not fit the message it answers (%s)", typ, what)})
}

// completion takes ParseComplete, BindComplete and CloseComplete.
func (r *relay) completion(typ byte, n int) error {
	h := r.head()
	want := map[byte]byte{'1': 'P', '2': 'B', '3': 'C'}[typ]
	if h == nil || h.typ != want {
		return r.mismatch(typ, h)
	}
	r.pop()
	if h.own {
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	switch typ {
	case '1':
		r.sStmts[h.name] = &sstmt{c: h.c}
		if len(r.sStmts) > maxStatements {
			r.trimServerState()
		}
	case '2':
		sp := &sportal{}
		if st := r.sStmts[h.stmt]; st != nil {
			sp.c = st.c
			if st.desc != nil {
				sp.cols = withFormats(st.desc, h.formats)
			}
		}
		r.sPortals[h.name] = sp
		if len(r.sPortals) > maxStatements {
			r.trimServerState()
		}
	case '3':
		if h.obj == 'S' {
			delete(r.sStmts, h.name)
		} else {
			delete(r.sPortals, h.name)
		}
	}
	return r.pass(n)
}

// trimServerState keeps the server side's records bounded: the client
// side refuses statements past maxStatements, so only a server that
// answers what it was never sent gets here.
func (r *relay) trimServerState() {
	for k := range r.sPortals {
		if len(r.sPortals) <= maxStatements {
			break
		}
		delete(r.sPortals, k)
	}
	for k := range r.sStmts {
		if len(r.sStmts) <= maxStatements {
			break
		}
		delete(r.sStmts, k)
	}
}

// withFormats is a statement's description with a Bind's result formats.
func withFormats(desc []colDesc, formats []int16) []colDesc {
	cols := make([]colDesc, len(desc))
	copy(cols, desc)
	for i := range cols {
		cols[i].format = formatOf(formats, i)
	}
	return cols
}

// rowDescription notes a result's columns: a Describe's answer, under the
// statement or portal described, or the next result of a simple query.
func (r *relay) rowDescription(n int) error {
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	cols, err := parseRowDescription(b)
	if err != nil {
		return r.serverErr(err)
	}
	h := r.head()
	switch {
	case h != nil && h.typ == 'D':
		r.pop()
		r.described(h, cols)
		if h.own {
			return nil
		}
	case h != nil && h.typ == 'Q' && h.it != nil:
		h.it.cols, h.it.plan = cols, nil
	default:
		return r.mismatch('T', h)
	}
	return r.send('T', b)
}

// described stores a Describe's answer.
func (r *relay) described(h *op, cols []colDesc) {
	if h.obj == 'S' {
		if st := r.sStmts[h.name]; st != nil {
			st.desc = cols
		}
		return
	}
	if sp := r.sPortals[h.name]; sp != nil {
		sp.cols = cols
	}
}

// noData answers a Describe of something that returns no rows.
func (r *relay) noData(n int) error {
	h := r.head()
	if h == nil || h.typ != 'D' {
		return r.mismatch('n', h)
	}
	r.pop()
	r.described(h, []colDesc{})
	if h.own {
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	return r.pass(n)
}

// result returns the item whose result the head is producing, starting
// it on its first answer. An Execute's command is the one the server has
// the portal bound to, whatever the client side guessed; a portal the
// proxy never saw bound (a SQL cursor, say) has none, and its rows are
// refused. A resumed portal's earlier counts carry on.
func (r *relay) result(h *op) *item {
	it := h.it
	if it == nil || it.started {
		return it
	}
	it.started = true
	if h.typ != 'E' {
		return it
	}
	sp := r.sPortals[h.name]
	if sp == nil || sp.c == nil {
		it.c = &decoder.Command{Cmd: enforcer.Command{Text: fmt.Sprintf("<execute of portal %q>", h.name)}}
		it.denied = true // reported below, if it returns rows
		it.unknown = true
		return it
	}
	if it.c != sp.c {
		it.c = sp.c
		it.denied = sp.c.Blocked()
	}
	it.baseRows, it.baseBytes, it.gate.Approved = sp.rows, sp.bytes, sp.heldOK
	it.cols = sp.cols
	if sp.refused != nil {
		it.refusal = sp.refused
	}
	return it
}

// dataRow forwards a row and counts it against the statement in flight,
// re-deciding it when a rule waits on the result and the counts reach the
// next point where the verdict can change.
func (r *relay) dataRow(n int) error {
	h := r.head()
	if h == nil || h.typ != 'E' && h.typ != 'Q' {
		return r.mismatch('D', h)
	}
	if h.lk != nil {
		b, err := r.sr.body(n)
		if err != nil {
			return r.serverErr(err)
		}
		h.lk.row(b)
		return nil
	}
	it := r.result(h)
	if it == nil {
		return r.pass(n)
	}
	if it.unknown && it.refusal == nil {
		r.s.p.Log.Warn("rows of a portal Sluice never saw bound refused", "portal", it.portal)
		r.refuseResult(it, errorBody("ERROR", codeInsufficientPrivilege,
			fmt.Sprintf("sluice: portal %q was not bound through the protocol", it.portal),
			"Sluice decides what a portal runs when it is bound; rows of a portal it never saw bound (a SQL cursor run with the protocol's Execute) are refused.",
			"Fetch from a cursor with FETCH, or bind the statement with the driver."))
	}
	it.rows++ // items are the server side's alone
	it.bytes += int64(n)
	if it.refusal == nil {
		// A rule waits on the result: decide it again at this row when
		// the counts reach the next point where the verdict can change.
		// A hold pauses here; a deny or a refused hold refuses the rest.
		rows, bytes := it.baseRows+it.rows, it.baseBytes+it.bytes
		if r.dec.ResultDue(it.c, &it.gate, rows, bytes) {
			refused, v, hold := r.dec.DecideResultNow(it.c, &it.gate, rows, bytes)
			if hold && r.core != nil {
				// On the relay core nothing may wait: the hold is
				// waited for on the goroutines, at this row (core.go).
				r.heldRow = &heldRow{it: it, n: n, v: v}
				r.leftFor = "a result held for approval"
				return errOffCore
			}
			if hold {
				refused, v = r.dec.AwaitResultHold(r.s.ctx, it.c, &it.gate, v, rows, r.resultNotice)
			}
			if refused {
				r.refuseResult(it, denialBody(v))
			}
		}
	}
	return r.rowBody(it, n)
}

// rowBody passes, masks or drops a DataRow's body once its result was
// decided at the row.
func (r *relay) rowBody(it *item, n int) error {
	if it.refusal != nil || r.suppress {
		// Refused: the server is cancelling; drop what it still sends.
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	if it.c.Masker != nil {
		return r.maskRow(it, n)
	}
	return r.sr.forward(r.cw, n)
}

// commandEnd takes CommandComplete, EmptyQueryResponse and
// PortalSuspended: the end of an Execute, or of one statement of a query.
func (r *relay) commandEnd(typ byte, n int) error {
	h := r.head()
	if h == nil || h.typ != 'E' && h.typ != 'Q' && h.typ != 'F' {
		return r.mismatch(typ, h)
	}
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	if h.lk != nil {
		r.pop()
		if r.s.catalog != nil {
			r.s.catalog.apply(h.lk)
		}
		return nil
	}
	it := r.result(h)
	if it != nil && len(it.refusal) > 0 {
		// The result was refused: the client gets the refusal where
		// the statement ended, and nothing more of its batch.
		body := it.refusal
		it.refusal = []byte{}
		it.code = codeInsufficientPrivilege
		if h.typ == 'E' {
			r.pop()
			r.report(it, false)
			if sp := r.sPortals[h.name]; sp != nil {
				sp.refused = body
			}
		}
		if err := r.send('E', body); err != nil {
			return err
		}
		r.suppress = true
		return nil
	}
	if h.typ == 'E' {
		r.pop()
		if it != nil {
			if sp := r.sPortals[h.name]; sp != nil && typ == 's' {
				sp.rows, sp.bytes, sp.heldOK = it.baseRows+it.rows, it.baseBytes+it.bytes, it.gate.Approved
			}
			r.report(it, false)
		}
	} else if it != nil {
		// The next statement of the query has its own result.
		it.cols, it.plan, it.copyOut = nil, nil, nil
		it.refusal = nil
	}
	return r.send(typ, b)
}

// errorResponse takes an ErrorResponse: the failure of the head message.
// For a message of the extended protocol the server then skips to the
// next Sync, and so does the queue; a query or function call goes on to
// its ReadyForQuery.
func (r *relay) errorResponse(n int) error {
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	h := r.head()
	if h == nil {
		// A FATAL the server sends on its own (shutdown, timeouts).
		return writeMsg(r.cw, 'E', r.maskMessage(b))
	}
	code := errorCode(b)
	var it *item
	if h.it != nil {
		it = r.result(h)
	}
	switch {
	case h.denial != nil:
		if !bytes.Contains(b, []byte("sluice_denied_"+r.s.nonce)) {
			// The substitute cannot fail otherwise; if it did, the
			// client still learns only that Sluice refused.
			r.s.p.Log.Warn("a substituted statement failed for another reason", "code", code)
		}
		b = h.denial
		code = codeInsufficientPrivilege
	case h.own && h.typ == 'D':
		// The proxy's own Describe of the portal about to run fails
		// exactly as the Execute would have ("portal does not exist").
		b = r.maskMessage(b)
	case h.own:
		r.forgetNames()
		if h.typ == 'S' || r.ownSynced() {
			// The lookup in front of a query ends with its own Sync:
			// its failure is the proxy's alone.
			b = nil
			break
		}
		r.s.p.Log.Warn("catalog lookup for masking failed", "code", code)
		b = errorBody("ERROR", codeInsufficientPrivilege, "sluice: cannot name the columns of this result for masking",
			"The proxy's catalog lookup failed ("+code+"): "+messageOf(b)+". Rather than send the values unmasked, the statement is refused.", "")
		code = codeInsufficientPrivilege
	case it != nil && len(it.refusal) > 0:
		b = it.refusal
		it.refusal = []byte{}
		code = codeInsufficientPrivilege
	default:
		b = r.maskMessage(b)
	}
	if it != nil && it.code == "" {
		it.code = code
	}
	// A failed Parse or Bind has already dropped the unnamed statement
	// or portal it was replacing.
	if !h.own && h.name == "" {
		switch h.typ {
		case 'P':
			delete(r.sStmts, "")
		case 'B':
			delete(r.sPortals, "")
		}
	}
	switch h.typ {
	case 'Q', 'F', 'S':
		// ReadyForQuery follows.
	default:
		r.skipToSync()
	}
	if b == nil {
		return nil
	}
	return r.send('E', b)
}

// ownSynced reports whether the failed own message belongs to a lookup
// ended by its own Sync.
func (r *relay) ownSynced() bool {
	synced := false
	r.ops.Scan(func(o *op) bool {
		synced = o.own && o.typ == 'S'
		return o.own && o.typ != 'S'
	})
	return synced
}

// skipToSync drops the head and every message after it up to the next
// Sync: the server skips them after an error.
func (r *relay) skipToSync() {
	first := true
	r.ops.Drop(func(o *op) bool {
		if o.typ == 'S' {
			return false
		}
		if o.typ == 'E' && o.it != nil {
			r.report(o.it, !first)
		}
		if o.lk != nil {
			r.s.catalog.forget()
		}
		first = false
		return true
	})
}

// ready takes ReadyForQuery: the end of a batch, a query or a call.
func (r *relay) ready(n int) error {
	b, err := r.sr.body(n)
	if err != nil || len(b) != 1 {
		return r.serverErr(&ProtocolError{Msg: "malformed ReadyForQuery"})
	}
	h := r.head()
	if h == nil || h.typ != 'S' && h.typ != 'Q' && h.typ != 'F' {
		return r.mismatch('Z', h)
	}
	r.pop()
	if h.own {
		return nil
	}
	if h.it != nil {
		r.report(r.result(h), false)
	}
	r.mu.Lock()
	r.status = b[0]
	r.mu.Unlock()
	r.suppress = false
	return writeMsg(r.cw, 'Z', b)
}

// refuseResult drops the rest of a result and ends it with body; the
// server is asked to cancel the statement.
func (r *relay) refuseResult(it *item, body []byte) {
	it.refusal = body
	r.cancelBackend()
}

// cancelBackend asks the server to cancel the running statement, as a
// client's CancelRequest would, on a new connection (decoder.CancelCommand
// runs it in the background, bounded and logged).
func (r *relay) cancelBackend() {
	if r.s.cancelPacket == nil {
		return
	}
	decoder.CancelCommand(r.s.cancelRequest, r.s.p.Log)
}

// cancelRequest sends the session's CancelRequest on a new connection
// and waits (within ctx) for the server to close it.
func (s *session) cancelRequest(ctx context.Context) error {
	c, err := s.p.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	c.Write(s.cancelPacket)
	var b [1]byte
	c.Read(b[:])
	return nil
}

// noticeBody is a NoticeResponse body telling the client about a hold.
func noticeBody(msg string) []byte {
	e := &pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "01000", Message: msg}
	b, err := e.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b[5:]
}

// report tells the session how a command ended (a denial was reported
// when it was decided). An Execute skipped before it started, of a portal
// the client side never saw bound, has no command: nothing was decided,
// so nothing is reported.
func (r *relay) report(it *item, skipped bool) {
	if it == nil || it.denied || it.c == nil {
		return
	}
	r.s.p.Session.Done(&it.c.Cmd, it.c.Verdict, enforcer.Outcome{
		Rows: it.rows, Bytes: it.bytes, Duration: time.Since(it.start), ErrCode: it.code, Skipped: skipped,
	})
}

// serverErr ends the session on a server-side failure.
func (r *relay) serverErr(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		fatal(r.cw, codeProtocolViolation, "sluice: the server sent an invalid message: "+pe.Msg)
	}
	return err
}

// errorCode extracts the SQLSTATE from an ErrorResponse body.
func errorCode(b []byte) string { return errorField(b, 'C') }

// messageOf extracts the primary message from an ErrorResponse body.
func messageOf(b []byte) string { return errorField(b, 'M') }

func errorField(b []byte, field byte) string {
	for len(b) > 1 {
		f := b[0]
		v, rest, err := cstring(b[1:])
		if err != nil {
			return ""
		}
		if f == field {
			return v
		}
		b = rest
	}
	return ""
}

// keepServer reports whether the server connection goes back to the pool
// at the client's Terminate (which the server then never gets): only on a
// pooled session that is idle, with no answer owed. Anything the check
// cannot see (a reply racing the Terminate) the reset catches: it needs
// the connection idle and quiet (pool.go).
func (r *relay) keepServer() bool {
	s := r.s
	if !s.pooling {
		return false
	}
	r.mu.Lock()
	status := r.status
	r.mu.Unlock()
	switch {
	case s.kept != "":
	case status != 'I':
		s.noPool(fmt.Sprintf("the client ended in transaction status %q", status))
	case r.ops.Len() > 0 || r.openBatch:
		s.noPool("the client ended with answers owed")
	default:
		r.release = true
	}
	return r.release
}

// releaseServer ends a session whose client terminated while idle: the
// client's connection is closed and the server's, stopped where the
// server had nothing more to say, goes to the pool to be reset.
func (r *relay) releaseServer() {
	s := r.s
	up := s.up
	if r.sr.r.Buffered() > 0 {
		s.noPool("the server sent more after the session's end")
	}
	if s.kept != "" {
		s.close()
		return
	}
	up.SetReadDeadline(time.Time{})
	if !s.conns.DetachServer() {
		return // closed already: the session's context ended
	}
	s.close()
	conn := unwrapConn(up)
	_, plain := conn.(*net.TCPConn)
	s.released = true
	s.p.Pool.release(&serverConn{key: s.poolKey, conn: conn, plain: plain, tls: s.upstreamTLS,
		params: s.params, backend: s.backend, born: s.born}, s.p.PoolSize, s.p.Log)
}
