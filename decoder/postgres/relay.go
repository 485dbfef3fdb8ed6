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

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// relay is the statement phase: the client-to-server goroutine classifies
// and decides, the server-to-client goroutine accounts results and turns
// the server's error for a substituted statement into the denial.
//
// A denied statement never reaches the server. In its place the server
// gets a call of a function that cannot exist (sluice_denied_<nonce>):
// the server fails it exactly where the statement would have run, so its
// transaction state (idle, in a block, or aborted) and the extended
// protocol's skip-until-Sync stay the server's own, and the client sees
// the ReadyForQuery status the server really has. The server's "function
// does not exist" error is replaced with the 42501 denial on the way back.
type relay struct {
	s      *session
	cr, sr *frameReader
	cw, sw *bufio.Writer
	cwMu   sync.Mutex // cw is the server goroutine's, but the client side may need to end the session
	status byte

	// Client-side state: named statements and portals, batch counter.
	stmts     map[string]*command
	portals   map[string]*portal
	cBatch    uint64
	openBatch bool // extended-protocol messages sent since the last Sync

	// Shared with the server goroutine.
	mu        sync.Mutex
	pending   []*item // commands awaiting their results, in order
	denials   []denial
	describes []describeReq        // Describe messages awaiting their answer
	descs     map[string][]colDesc // "S:name" / "P:name" -> row description
	inject    *injection           // a catalog query in flight on this connection

	// lastMasker masks error and notice texts that arrive with no
	// masked statement in flight (server side only).
	lastMasker *mask.Masker
	// rowBuf and valBuf are the server goroutine's scratch for masked rows.
	rowBuf, valBuf []byte
	// lastPlan is the last masking plan made, with its masker and the
	// columns it was made for: the next result with the same masker and
	// columns (a statement run again) reuses it (Plan.Fresh). Server side
	// only.
	lastPlan struct {
		plan   *mask.Plan
		masker *mask.Masker
		cols   []colDesc
	}
}

// command is one classified statement text and its verdict.
type command struct {
	cmd     enforcer.Command
	verdict enforcer.Verdict
	// masker is set when the verdict's mask rules apply to the results.
	masker *mask.Masker
}

// portal is a bound portal: its statement and result formats.
type portal struct {
	c       *command
	stmt    string
	formats []int16
}

// item is one command in flight: a simple Query, an Execute or a function
// call, with its batch (the ReadyForQuery that ends it).
type item struct {
	c      *command
	batch  uint64
	simple bool // a simple Query: ends at ReadyForQuery
	start  time.Time
	rows   int64
	bytes  int64
	code   string
	denied bool

	// checkRows and checkBytes are the counts at which a result that
	// awaits its verdict is decided again (zero: at its first row).
	checkRows, checkBytes int64

	// Masking (server side): the statement and portal an Execute runs,
	// the columns of the result in flight and the plan built for them.
	stmt, portal string
	formats      []int16
	cols         []colDesc
	plan         *mask.Plan
	copyOut      *copyState

	// Result-stage holds: held once approved; refused means the server
	// was asked to cancel, further rows are dropped and the statement's
	// end is replaced by refusal.
	heldOK  bool
	refusal []byte
}

// denial is the ErrorResponse to send in place of the server's error for
// a substituted statement of a batch.
type denial struct {
	batch uint64
	body  []byte
}

func (r *relay) run() error {
	r.stmts = map[string]*command{}
	r.portals = map[string]*portal{}
	r.descs = map[string][]colDesc{}
	errc := make(chan error, 1)
	go func() { errc <- r.serverLoop() }()
	cerr := r.clientLoop()
	if cerr != nil {
		// Unblock the server side.
		r.s.up.Close()
	}
	serr := <-errc
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
			r.cBatch++
			r.openBatch = false
			err = r.cr.forward(r.sw, n)
		case 'F':
			err = r.functionCall(n)
		case 'X':
			if err := r.cr.forward(r.sw, n); err != nil {
				return err
			}
			return r.sw.Flush()
		case 'D':
			err = r.describe(n)
		case 'H', 'd', 'c', 'f', 'p':
			// Flush, COPY data/done/fail, GSS/SASL answers.
			err = r.cr.forward(r.sw, n)
		default:
			err = &ProtocolError{Msg: fmt.Sprintf("unknown message type %q from the client", typ)}
		}
		if err != nil {
			return r.endClient(err)
		}
	}
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
		if pe.Pending > 0 && r.s.cconn != nil {
			r.cr.discard(r.s.cconn, pe.Pending, 2*time.Second)
		}
	}
	return err
}

// decide classifies text and asks the session for a verdict.
func (r *relay) decide(text string) *command {
	c := &command{cmd: enforcer.Command{Text: text}}
	c.cmd.Statement, c.cmd.ClassifyErr = r.s.p.Classify(text)
	c.verdict = r.s.p.Session.Decide(&c.cmd)
	if len(c.verdict.Decision.Masks) > 0 && c.verdict.Action != ruleset.Deny {
		var m *mask.Masker
		err := errors.New("no masking configured")
		if r.s.p.Masks != nil {
			m, err = r.s.p.Masks.Masker(c.verdict.Decision.Masks)
		}
		if err != nil {
			// A mask that cannot be built must not let data through.
			c.verdict.Action = ruleset.Deny
			c.verdict.Decision.Reason = "the mask rules cannot be applied: " + err.Error()
			return c
		}
		c.masker = m
	}
	return c
}

// blocked reports whether a verdict keeps the statement from the server.
// A hold is refused outright until approval holds exist: fail closed.
func blocked(v enforcer.Verdict) bool {
	return v.Action == ruleset.Deny || v.Action == ruleset.Hold
}

func (r *relay) push(it *item) {
	r.mu.Lock()
	r.pending = append(r.pending, it)
	r.mu.Unlock()
}

// pushDenial records the error to show when the substitute sent for c in
// batch fails on the server.
func (r *relay) pushDenial(c *command, batch uint64) {
	r.mu.Lock()
	r.denials = append(r.denials, denial{batch: batch, body: denialBody(c.verdict)})
	r.mu.Unlock()
}

// substitute is the statement sent in place of a denied one.
func (r *relay) substitute() string {
	return "SELECT pg_catalog.sluice_denied_" + r.s.nonce + "()"
}

// query handles a simple Query: one message, one or more statements, one
// implicit transaction. If any statement in it is refused, none runs.
func (r *relay) query(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	text, _, err := cstring(b)
	if err != nil {
		return err
	}
	c := r.decide(text)
	r.awaitHold(c)
	it := &item{c: c, batch: r.cBatch, simple: true, start: time.Now()}
	r.cBatch++ // a Query is a batch of its own
	if blocked(c.verdict) {
		it.denied = true
		r.push(it)
		r.pushDenial(c, it.batch)
		return writeMsg(r.sw, 'Q', append([]byte(r.substitute()), 0))
	}
	if err := r.resolveTables(c); err != nil {
		return err
	}
	r.push(it)
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
	name, rest, err := cstring(b)
	if err != nil {
		return err
	}
	text, _, err := cstring(rest)
	if err != nil {
		return err
	}
	c := r.decide(text)
	r.awaitHold(c)
	r.stmts[name] = c
	if blocked(c.verdict) {
		r.pushDenial(c, r.cBatch)
		r.openBatch = true
		body := append(append(append([]byte(name), 0), r.substitute()...), 0, 0, 0)
		return writeMsg(r.sw, 'P', body)
	}
	if err := r.resolveTables(c); err != nil {
		return err
	}
	r.openBatch = true
	return writeMsg(r.sw, 'P', b)
}

// bind remembers which statement a portal runs.
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
	pt := &portal{c: r.stmts[stmt], stmt: stmt}
	pt.formats, err = bindResultFormats(rest)
	if err != nil {
		return err
	}
	r.portals[portalName] = pt
	// The start of a batch is a safe point to learn the tables of a
	// statement prepared in an earlier, pipelined batch.
	if pt.c != nil && !r.openBatch {
		if err := r.resolveTables(pt.c); err != nil {
			return err
		}
	}
	r.openBatch = true
	return writeMsg(r.sw, 'B', b)
}

// execute accounts the portal's statement as in flight.
func (r *relay) execute(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	portal, _, err := cstring(b)
	if err != nil {
		return err
	}
	if pt := r.portals[portal]; pt != nil && pt.c != nil {
		r.push(&item{c: pt.c, batch: r.cBatch, start: time.Now(), denied: blocked(pt.c.verdict),
			stmt: pt.stmt, portal: portal, formats: pt.formats})
	}
	r.openBatch = true
	return writeMsg(r.sw, 'E', b)
}

// closeMsg forgets a closed statement or portal.
func (r *relay) closeMsg(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	if len(b) >= 2 {
		name, _, err := cstring(b[1:])
		if err != nil {
			return err
		}
		switch b[0] {
		case 'S':
			delete(r.stmts, name)
		case 'P':
			delete(r.portals, name)
		}
	}
	r.openBatch = true
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
	c := &command{cmd: enforcer.Command{Text: fmt.Sprintf("<fastpath function call oid %d>", oid),
		Statement: ruleset.Statement{Kind: "function_call", Functions: []string{fmt.Sprintf("oid:%d", oid)}}}}
	c.verdict = r.s.p.Session.Decide(&c.cmd)
	it := &item{c: c, batch: r.cBatch, simple: true, start: time.Now()}
	r.cBatch++
	if blocked(c.verdict) {
		it.denied = true
		r.push(it)
		r.pushDenial(c, it.batch)
		return writeMsg(r.sw, 'Q', append([]byte(r.substitute()), 0))
	}
	r.push(it)
	return writeMsg(r.sw, 'F', b)
}

// serverLoop relays the server's messages to the client.
func (r *relay) serverLoop() error {
	r.cwMu.Lock()
	defer r.cwMu.Unlock()
	var sBatch uint64
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
		if inj := r.injecting(); inj != nil {
			if handled, err := r.injected(inj, typ, n); err != nil {
				return err
			} else if handled {
				continue
			}
		}
		switch typ {
		case 'D':
			if err := r.dataRow(n, sBatch); err != nil {
				return err
			}
			continue
		case 'T':
			if err := r.rowDescription(n, sBatch); err != nil {
				return err
			}
			continue
		case 'n':
			r.noData(sBatch)
		case 'H':
			if err := r.copyOutResponse(n, sBatch); err != nil {
				return err
			}
			continue
		case 'd':
			if err := r.copyData(n); err != nil {
				return err
			}
			continue
		case 'N':
			if err := r.notice(n); err != nil {
				return err
			}
			continue
		case 'C', 'I', 's':
			if body := r.takeRefusal(); body != nil {
				if _, err := r.sr.body(n); err != nil {
					return r.serverErr(err)
				}
				r.endResult()
				r.finishExecute(codeInsufficientPrivilege, sBatch)
				if err := writeMsg(r.cw, 'E', body); err != nil {
					return err
				}
				continue
			}
			r.endResult()
			r.finishExecute("", sBatch)
		case 'E':
			b, err := r.sr.body(n)
			if err != nil {
				return r.serverErr(err)
			}
			if repl, ok := r.replaceDenied(b, sBatch); ok {
				b = repl
			} else if body := r.takeRefusal(); body != nil {
				r.endResult()
				r.finishExecute(codeInsufficientPrivilege, sBatch)
				b = body
			} else {
				r.endResult()
				r.finishExecute(errorCode(b), sBatch)
				b = r.maskMessage(b)
			}
			if err := writeMsg(r.cw, 'E', b); err != nil {
				return err
			}
			continue
		case 'Z':
			b, err := r.sr.body(n)
			if err != nil || len(b) != 1 {
				return r.serverErr(&ProtocolError{Msg: "malformed ReadyForQuery"})
			}
			r.mu.Lock()
			r.status = b[0]
			r.mu.Unlock()
			r.endBatch(sBatch)
			sBatch++
			if err := writeMsg(r.cw, 'Z', b); err != nil {
				return err
			}
			continue
		}
		if err := r.sr.forward(r.cw, n); err != nil {
			return r.serverErr(err)
		}
	}
}

// dataRow forwards a row and counts it against the statement in flight,
// re-deciding it when a rule waits on the result and the counts reach the
// next point where the verdict can change.
func (r *relay) dataRow(n int, batch uint64) error {
	r.mu.Lock()
	var it *item
	if len(r.pending) > 0 {
		it = r.pending[0]
		it.rows++
		it.bytes += int64(n)
	}
	r.mu.Unlock()
	if err := r.checkResult(it); err != nil {
		return err
	}
	if it != nil && it.refusal != nil {
		// Refused: the server is cancelling; drop what it still sends.
		_, err := r.sr.body(n)
		return err
	}
	if it != nil && it.c.masker != nil {
		return r.maskRow(it, n)
	}
	return r.sr.forward(r.cw, n)
}

// checkResult re-decides a statement whose rules wait on its result: at
// its first row, then whenever the rows or bytes reach the next count at
// which the ruleset says the verdict can change (for result.rows > N, row
// N+1), so the verdict is the one every row would get. A hold pauses the
// result (nothing more is read from the server, so it waits too) until a
// human decides; a deny, or a refused hold, cancels the statement on the
// server and ends it for the client with an error, after exactly the rows
// already sent.
func (r *relay) checkResult(it *item) error {
	if it == nil || !it.c.verdict.Decision.AwaitResult || it.heldOK || it.refusal != nil ||
		(it.rows < it.checkRows && it.bytes < it.checkBytes) {
		return nil
	}
	// it.rows counts the row about to be sent: decide as if it had been.
	v := r.s.p.Session.DecideResult(&it.c.cmd, it.rows, it.bytes)
	it.checkRows, it.checkBytes = r.s.p.Session.NextResultCheck(it.rows, it.bytes)
	switch v.Action {
	case ruleset.Hold:
		if r.s.p.Session.CanHold() {
			o := r.s.p.Session.Hold(r.s.ctx, enforcer.HoldRequest{Command: &it.c.cmd, Verdict: v, Stage: "result", Rows: it.rows - 1,
				Notify: func(id, msg string) {
					writeMsg(r.cw, 'N', noticeBody(msg))
					r.cw.Flush()
				}})
			if o.Approved {
				it.heldOK = true
				return nil
			}
			v.Action = ruleset.Deny
			v.Decision.Reason = o.Reason
		}
	case ruleset.Deny:
	default:
		return nil
	}
	it.refusal = denialBody(v)
	r.cancelBackend()
	return nil
}

// cancelBackend asks the server to cancel the running statement, as a
// client's CancelRequest would, on a new connection.
func (r *relay) cancelBackend() {
	if r.s.cancelPacket == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := r.s.p.Dial(ctx)
		if err != nil {
			r.s.p.Log.Error("cancel request for a refused result failed", "error", err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(r.s.cancelPacket)
		var b [1]byte
		c.Read(b[:])
	}()
}

// awaitHold waits for the decision on a statement held before it runs. An
// approved statement goes on (its masks still apply); a refused or
// expired one becomes a denial with the decider's reason.
func (r *relay) awaitHold(c *command) {
	if c.verdict.Action != ruleset.Hold || !r.s.p.Session.CanHold() {
		return
	}
	o := r.s.p.Session.Hold(r.s.ctx, enforcer.HoldRequest{Command: &c.cmd, Verdict: c.verdict, Stage: "before",
		Notify: func(id, msg string) {
			r.cwMu.Lock()
			writeMsg(r.cw, 'N', noticeBody(msg))
			r.cw.Flush()
			r.cwMu.Unlock()
		}})
	if o.Approved {
		c.verdict.Action = ruleset.Allow
		if c.masker != nil {
			c.verdict.Action = ruleset.Mask
		}
		return
	}
	c.verdict.Action = ruleset.Deny
	c.verdict.Decision.Reason = o.Reason
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

// takeRefusal returns the refusal of the result in flight, once.
func (r *relay) takeRefusal() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 || r.pending[0].refusal == nil {
		return nil
	}
	b := r.pending[0].refusal
	r.pending[0].refusal = []byte{} // ends the dropping, not the item
	if len(b) == 0 {
		return nil
	}
	return b
}

// replaceDenied swaps the server's error for a substituted statement for
// the denial that caused it.
func (r *relay) replaceDenied(b []byte, batch uint64) ([]byte, bool) {
	if !bytes.Contains(b, []byte("sluice_denied_"+r.s.nonce)) {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, d := range r.denials {
		if d.batch == batch {
			r.denials = append(r.denials[:i], r.denials[i+1:]...)
			r.popExecuteLocked("42501", batch)
			return d.body, true
		}
	}
	// A substituted statement with no denial on record cannot happen;
	// refuse generically rather than show the nonce.
	return errorBody("ERROR", codeInsufficientPrivilege, "sluice: statement denied", "", ""), true
}

// finishExecute ends the Execute at the head of the queue, if that is what
// is in flight.
func (r *relay) finishExecute(code string, batch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.popExecuteLocked(code, batch)
}

func (r *relay) popExecuteLocked(code string, batch uint64) {
	if len(r.pending) == 0 || r.pending[0].batch != batch {
		return
	}
	it := r.pending[0]
	if it.simple {
		if code != "" && it.code == "" {
			it.code = code
		}
		it.cols, it.plan, it.copyOut = nil, nil, nil // the next statement of the query has its own
		return
	}
	it.code = code
	r.pending = r.pending[1:]
	r.report(it, false)
}

// endBatch ends everything of batch b at ReadyForQuery: simple queries
// finish, Executes the server skipped after an error are reported as
// skipped, and denials whose substitute never ran (an earlier error in the
// batch) are dropped.
func (r *relay) endBatch(b uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := 0
	for ; i < len(r.pending) && r.pending[i].batch <= b; i++ {
		it := r.pending[i]
		r.report(it, !it.simple)
	}
	r.pending = r.pending[i:]
	j := 0
	for ; j < len(r.denials) && r.denials[j].batch <= b; j++ {
	}
	r.denials = r.denials[j:]
}

func (r *relay) report(it *item, skipped bool) {
	if it.denied {
		return // the denial was reported when it was decided
	}
	r.s.p.Session.Done(&it.c.cmd, it.c.verdict, enforcer.Outcome{
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
func errorCode(b []byte) string {
	for len(b) > 1 {
		f := b[0]
		v, rest, err := cstring(b[1:])
		if err != nil {
			return ""
		}
		if f == 'C' {
			return v
		}
		b = rest
	}
	return ""
}
