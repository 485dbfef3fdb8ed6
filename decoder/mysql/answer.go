package mysql

import (
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
)

// The server's answer to a command, read packet by packet. A command that
// the server answers is sent, then its answer is expected (expect): an
// answer is a small state machine that each server packet moves on
// (serverPacket), so that the same code runs whether the packets come
// from a goroutine that reads them one by one (await) or from the relay
// core, which hands over whatever arrived (core.go). Between answers the
// client's next command is read; the command phase is half duplex, and a
// client that sends ahead has its commands read one at a time, each once
// the answer before it ended.

// answerKind is the shape of an answer.
type answerKind uint8

const (
	// ansResults: OK, ERR, a LOCAL INFILE request, or result sets, as
	// many as the server's status says (COM_QUERY, COM_STMT_EXECUTE,
	// COM_PROCESS_INFO).
	ansResults   answerKind = iota
	ansSingle               // one packet: OK, ERR, EOF or a string
	ansPrepare              // COM_STMT_PREPARE's OK and its definitions
	ansFieldList            // column definitions to an EOF
	ansFetch                // an open cursor's rows to an EOF
)

// phase is where an ansResults (or ansFetch) answer is.
type phase uint8

const (
	phStart   phase = iota // a result begins: OK, ERR, LOCAL INFILE or a column count
	phDefs                 // column definitions
	phDefsEOF              // the EOF after the definitions
	phRows                 // rows, to an EOF or an ERR
)

// answer is the answer in flight.
type answer struct {
	kind   answerKind
	c      *decoder.Command // the command's decision (nil for commands not decided)
	st     *stmt            // the prepared statement executed or fetched from
	binary bool             // binary-protocol rows (COM_STMT_EXECUTE)
	lexing bool             // the command may change the session's lexing (lexingChanged)
	done   bool             // the command's end is reported (Session.Done)
	start  time.Time

	phase       phase
	res         *result // the result set being read
	ncols, defs uint64  // its column count, and the definitions read
	rows, bytes int64   // over every result set of the answer
	code        string  // the error that ended it, if any

	// COM_STMT_PREPARE: the statement's id and parameter count, and how
	// many definitions are still to come (-1 before the first packet).
	id      uint32
	nparams int
	left    int

	// drop: the rest of the answer is read and dropped (after a refusal
	// part way through a result), then refusal is sent. dropRows: the
	// dropped packets are rows; dropSkip: definitions (and their EOF) to
	// skip before rows.
	drop     bool
	dropRows bool
	dropSkip uint64
	refusal  []byte
}

// expect makes a the answer the relay waits for, once its command was
// sent: the client's answer packets are numbered from 1.
func (r *relay) expect(a *answer) {
	r.cw.seq = 1
	a.start = time.Now()
	a.left = -1
	if a.kind == ansFetch {
		a.phase = phRows
	}
	r.ans = a
}

// await relays the answer in flight to its end, reading the server's
// packets (on the goroutines).
func (r *relay) await() error {
	for r.ans != nil {
		p, seq := r.carry, r.carrySeq
		if p != nil {
			r.carry = nil // a packet the core left to the goroutines
		} else {
			var err error
			if p, seq, err = r.sr.next(); err != nil {
				return r.endAnswer(r.serverErr(err))
			}
		}
		if err := r.serverPacket(p, seq); err != nil {
			return err
		}
	}
	return nil
}

// endAnswer ends the answer in flight: its command's end is reported, and
// a statement that changes the session's lexing takes effect. It returns
// err.
func (r *relay) endAnswer(err error) error {
	a := r.ans
	if a == nil {
		return err
	}
	r.ans = nil
	if a.done && a.c != nil {
		r.s.p.Session.Done(&a.c.Cmd, a.c.Verdict, enforcer.Outcome{Rows: a.rows, Bytes: a.bytes,
			Duration: time.Since(a.start), ErrCode: a.code})
	}
	if a.lexing {
		r.lexingChanged(a.c)
	}
	return err
}

// serverPacket moves the answer in flight on by one server packet (p, its
// sequence id seq). It returns an error when the answer ended with one
// (the session ends), or errOffCore on the core when the packet must be
// handled on the goroutines (kept in carry, with the answer unchanged).
func (r *relay) serverPacket(p []byte, seq byte) error {
	a := r.ans
	var end bool
	var err error
	switch {
	case a.drop:
		end, err = r.dropPacket(a, p)
		if end && err == nil {
			r.cw.write(a.refusal)
			err = r.cw.flush()
		}
	case a.kind == ansResults:
		end, err = r.resultsPacket(a, p, seq)
	case a.kind == ansFetch:
		end, err = r.fetchPacket(a, p, seq)
	case a.kind == ansSingle:
		end, err = true, r.singlePacket(a, p)
	case a.kind == ansPrepare:
		end, err = r.preparePacket(a, p)
	case a.kind == ansFieldList:
		if len(p) > 0 && p[0] == 0xff {
			p, _ = r.maskErr(a.c, p)
		}
		if err = r.cw.write(p); err == nil && (len(p) == 0 || p[0] == 0xff || isEOF(p)) {
			end, err = true, r.cw.flush()
		}
	}
	if errors.Is(err, errOffCore) {
		return err
	}
	if end || err != nil {
		if a.kind == ansFetch && a.st != nil && (err != nil || a.res.ended) {
			a.st.cursor = nil
		}
		return r.endAnswer(err)
	}
	return nil
}

// singlePacket relays a one-packet answer.
func (r *relay) singlePacket(a *answer, p []byte) error {
	if len(p) > 0 {
		switch p[0] {
		case 0x00:
			r.status(okStatus(p))
		case 0xff:
			p, a.code = r.maskErr(a.c, p)
		case 0xfe:
			r.status(eofStatus(p), nil)
		}
	}
	if err := r.cw.write(p); err != nil {
		return err
	}
	return r.cw.flush()
}

// preparePacket relays COM_STMT_PREPARE's answer: an OK naming the
// statement, then the parameters' and the columns' definitions, each list
// ended by an EOF, passed on as they are (they hold no data); the
// statement is kept for its executions.
func (r *relay) preparePacket(a *answer, p []byte) (bool, error) {
	if a.left < 0 {
		if len(p) > 0 && p[0] == 0xff {
			p, _ = r.maskErr(a.c, p)
			if err := r.cw.write(p); err != nil {
				return true, err
			}
			return true, r.cw.flush()
		}
		if len(p) < 12 || p[0] != 0x00 {
			return true, r.serverErr(&ProtocolError{Msg: "a malformed COM_STMT_PREPARE answer"})
		}
		a.id = le32(p[1:])
		ncols, nparams := int(le16(p[5:])), int(le16(p[7:]))
		a.nparams, a.left = nparams, 0
		for _, n := range []int{nparams, ncols} {
			if n > 0 {
				a.left += n + 1
			}
		}
	} else {
		a.left--
	}
	if err := r.cw.write(p); err != nil {
		return true, err
	}
	if a.left > 0 {
		return false, nil
	}
	r.stmts[a.id] = &stmt{c: a.c, nparams: a.nparams}
	return true, r.cw.flush()
}

// resultsPacket moves an ansResults answer on: each result is an OK, an
// ERR (which ends the answer), a LOCAL INFILE request, or a result set
// (its column count, definitions, their EOF, rows and last EOF); the
// status of an OK or of a result set's last EOF says whether another
// result follows. Every row is masked per the command's plan and decided
// again where its rules wait on the result (rowPacket).
func (r *relay) resultsPacket(a *answer, p []byte, seq byte) (bool, error) {
	switch a.phase {
	case phStart:
		if len(p) == 0 {
			return true, r.serverErr(&ProtocolError{Msg: "an empty packet where a result begins"})
		}
		switch p[0] {
		case 0x00:
			status, serr := okStatus(p)
			r.status(status, serr)
			if err := r.cw.write(p); err != nil {
				return true, err
			}
			if serr != nil || status&statusMoreResults == 0 {
				return true, r.cw.flush()
			}
			return false, nil
		case 0xff:
			p, a.code = r.maskErr(a.c, p)
			if err := r.cw.write(p); err != nil {
				return true, err
			}
			return true, r.cw.flush()
		case 0xfb:
			// LOCAL INFILE: the server asks the client for a file.
			if r.core != nil {
				return false, r.leave(p, seq, "a LOAD DATA LOCAL INFILE request")
			}
			if err := r.localInfile(a.c, p, seq); err != nil {
				a.code = stateDenied
				return true, err
			}
			return false, nil
		}
		// The column count is the whole packet: anything after it would
		// reach the client unread.
		n, size, _, err := readLenenc(p)
		if err != nil || n == 0 || n > maxColumns || size != len(p) {
			return true, r.serverErr(&ProtocolError{Msg: "a malformed column count"})
		}
		if err := r.cw.write(p); err != nil {
			return true, err
		}
		a.res = &result{c: a.c, binary: a.binary}
		// The definitions name the columns' origins, which only a masked
		// result needs (maskRow); others pass them on unread.
		if a.c.Masker != nil {
			a.res.cols = make([]colKey, n)
		}
		a.ncols, a.defs, a.phase = n, 0, phDefs
		return false, nil
	case phDefs:
		if a.res.cols != nil {
			k, err := parseColumn(p)
			if err != nil {
				return true, r.serverErr(err)
			}
			a.res.cols[a.defs] = k
		}
		if err := r.cw.write(p); err != nil {
			return true, err
		}
		if a.defs++; a.defs == a.ncols {
			a.phase = phDefsEOF
		}
		return false, nil
	case phDefsEOF:
		if !isEOF(p) {
			return true, r.serverErr(&ProtocolError{Msg: "no EOF after the column definitions"})
		}
		status := eofStatus(p)
		if err := r.cw.write(p); err != nil {
			return true, err
		}
		if status&statusCursorExists != 0 && a.binary && a.st != nil {
			// A cursor: the rows come with COM_STMT_FETCH.
			a.st.cursor = a.res
			return true, r.cw.flush()
		}
		a.phase = phRows
		return false, nil
	}
	res := a.res
	end, status, err := r.rowPacket(a, res, p, seq)
	if errors.Is(err, errOffCore) || !end && err == nil && !a.drop {
		return false, err
	}
	// The result ended (or the answer did, or the rest is refused):
	// its counts join the answer's.
	a.rows, a.bytes = a.rows+res.rows, a.bytes+res.bytes
	if res.code != "" {
		a.code = res.code
	}
	if !end || err != nil {
		return end, err
	}
	if res.ended || status&statusMoreResults == 0 {
		return true, r.cw.flush()
	}
	a.phase = phStart
	return false, nil
}

// fetchPacket moves an ansFetch answer (the rows of an open cursor) on.
func (r *relay) fetchPacket(a *answer, p []byte, seq byte) (bool, error) {
	end, status, err := r.rowPacket(a, a.res, p, seq)
	if !end || err != nil {
		return end, err
	}
	if status&statusCursorExists == 0 {
		a.st.cursor = nil
	}
	return true, r.cw.flush()
}

// rowPacket relays one packet of a result's rows: a row, its EOF (end,
// with its status) or an ERR (end, res.ended). A row the rules refuse
// turns the answer into a dropped one (a.drop): the refused row and the
// rest never reach the client, which gets an ERR once the server's
// answer is drained.
func (r *relay) rowPacket(a *answer, res *result, p []byte, seq byte) (end bool, status uint16, err error) {
	c := res.c
	if len(p) > 0 && p[0] == 0xff {
		p, res.code = r.maskErr(c, p)
		res.ended = true
		if err := r.cw.write(p); err != nil {
			return true, 0, err
		}
		return true, 0, r.cw.flush()
	}
	if isEOF(p) {
		status := eofStatus(p)
		r.status(status, nil)
		return true, status, r.cw.write(p)
	}
	res.rows++
	res.bytes += int64(len(p))
	refused, v, err := r.checkRow(res, p, seq)
	if err != nil || refused {
		res.rows--
		res.bytes -= int64(len(p))
	}
	if err != nil {
		return false, 0, err
	}
	if refused {
		// The row and the rest must not reach the client: the query is
		// stopped on the server where the proxy can (kill.go), and the
		// rest is read and dropped.
		d := v.Decision
		r.dropRest(a, res, fmt.Sprintf("sluice: result refused by rule %q after %d rows: %s", d.Rule.ID, res.rows, d.Reason))
		return false, 0, nil
	}
	if c.Masker != nil {
		if p, err = r.maskRow(res, p); err != nil {
			r.s.p.Log.Error("masked result refused: it cannot be masked", "error", err, "statement", c.Cmd.Text)
			r.dropRest(a, res, "sluice: the result cannot be masked, so it is refused: "+err.Error())
			return false, 0, nil
		}
	}
	if err := r.cw.write(p); err != nil {
		return false, 0, err
	}
	if r.core == nil && r.sr.buffered() == 0 {
		// The next read may wait: what was written goes now. (On the
		// core, what a batch of input wrote is sent once it is handled.)
		return false, 0, r.cw.flush()
	}
	return false, 0, nil
}

// checkRow decides a result again at a row, where its rules wait on the
// result (decoder.Decider.CheckResult). A hold waits for a human on the
// goroutines: on the core, the row is left to them (errOffCore), with
// the verdict that holds it, so it is not decided twice.
func (r *relay) checkRow(res *result, p []byte, seq byte) (refused bool, v enforcer.Verdict, err error) {
	d, c := r.s.decider, res.c
	if held := r.held; held != nil {
		r.held = nil
		refused, v = d.AwaitResultHold(r.s.ctx, c, &res.gate, *held, res.rows, r.notify)
		return refused, v, nil
	}
	if !d.ResultDue(c, &res.gate, res.rows, res.bytes) {
		return false, v, nil
	}
	refused, v, hold := d.DecideResultNow(c, &res.gate, res.rows, res.bytes)
	if !hold {
		return refused, v, nil
	}
	if r.core != nil {
		r.held = &v
		return false, v, r.leave(p, seq, "a result held for approval")
	}
	refused, v = d.AwaitResultHold(r.s.ctx, c, &res.gate, v, res.rows, r.notify)
	return refused, v, nil
}

// dropRest refuses the rest of the answer with msg: the command is
// stopped on the server where the proxy can, what the server still sends
// is read and dropped (dropPacket), and then the client gets the ERR.
func (r *relay) dropRest(a *answer, res *result, msg string) {
	res.ended, res.code = true, stateDenied
	r.stopResult()
	a.drop, a.dropRows = true, true
	a.refusal = appendErr(nil, codeDenied, stateDenied, msg, true)
}

// dropPacket drops one packet of the rest of a refused answer: this
// result's rows, and every result after it. It reports the answer's end.
func (r *relay) dropPacket(a *answer, p []byte) (bool, error) {
	switch {
	case a.dropSkip > 0:
		if a.dropSkip--; a.dropSkip == 0 {
			a.dropRows = true
		}
		return false, nil
	case len(p) > 0 && p[0] == 0xff:
		return true, nil
	case a.dropRows && isEOF(p):
		a.dropRows = false
		return eofStatus(p)&statusMoreResults == 0, nil
	case a.dropRows:
		return false, nil
	case len(p) > 0 && p[0] == 0x00:
		st, err := okStatus(p)
		return err != nil || st&statusMoreResults == 0, nil
	}
	// A next result set: its definitions and their EOF, then its rows.
	n, _, _, err := readLenenc(p)
	if err != nil || n > maxColumns {
		return true, r.serverErr(&ProtocolError{Msg: "a malformed column count"})
	}
	a.dropSkip = n + 1
	return false, nil
}
