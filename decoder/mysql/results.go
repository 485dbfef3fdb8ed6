package mysql

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
)

// maxColumns bounds a result's columns (MySQL's own limit is 4096).
const maxColumns = 1 << 16

// colKey is one column of a result as its definition describes it: what
// a masking plan names the column from. Two results with the same keys
// share a plan (decoder.Plans).
type colKey struct {
	schema, table, name, orgName string
	typ                          byte
	charset                      uint16
}

// result is one result set in flight: its columns, its masking plan, and
// its counts for the result stage of the rules.
type result struct {
	c      *decoder.Command
	binary bool
	cols   []colKey
	plan   *mask.Plan
	gate   decoder.ResultGate
	rows   int64
	bytes  int64
	start  time.Time
	code   string // the server's error, if one ended it
	// ended is set when the whole answer ended with the result (an ERR,
	// or a refusal after which the rest was dropped).
	ended bool
}

// results relays the answer to a command that returns results: COM_QUERY
// (text rows) and COM_STMT_EXECUTE (binary rows), each possibly several
// results (multi-statements, procedures), every row masked per c's plan
// and decided again where c's rules wait on the result.
func (r *relay) results(c *decoder.Command, binary bool, st *stmt) error {
	start := time.Now()
	var rows, bytes int64
	code := ""
	defer func() {
		r.s.p.Session.Done(&c.Cmd, c.Verdict, enforcer.Outcome{Rows: rows, Bytes: bytes, Duration: time.Since(start), ErrCode: code})
	}()
	r.cw.seq = 1
	for {
		p, seq, err := r.sr.next()
		if err != nil {
			return r.serverErr(err)
		}
		if len(p) == 0 {
			return r.serverErr(&ProtocolError{Msg: "an empty packet where a result begins"})
		}
		switch p[0] {
		case 0x00:
			status, err := okStatus(p)
			r.status(status, err)
			if err := r.cw.write(p); err != nil {
				return err
			}
			if err != nil || status&statusMoreResults == 0 {
				return r.cw.flush()
			}
			continue
		case 0xff:
			p, code = r.maskErr(c, p)
			if err := r.cw.write(p); err != nil {
				return err
			}
			return r.cw.flush()
		case 0xfb:
			// LOCAL INFILE: the server asks the client for a file.
			if err := r.localInfile(c, p, seq); err != nil {
				code = stateDenied
				return err
			}
			continue
		}
		res := &result{c: c, binary: binary, start: start}
		status, err := r.resultSet(p, res, st)
		rows, bytes = rows+res.rows, bytes+res.bytes
		if res.code != "" {
			code = res.code
		}
		if err != nil || res.ended {
			return err
		}
		if status&statusCursorExists != 0 && binary && st != nil {
			// A cursor: the rows come with COM_STMT_FETCH.
			st.cursor = res
			return r.cw.flush()
		}
		if status&statusMoreResults == 0 {
			return r.cw.flush()
		}
	}
}

// resultSet relays one result set whose first packet (the column count)
// is p: the column definitions, their EOF, the rows and the last EOF. It
// returns the status of the EOF that ends the column definitions when a
// cursor was opened, else of the last one.
func (r *relay) resultSet(p []byte, res *result, st *stmt) (uint16, error) {
	n, _, _, err := readLenenc(p)
	if err != nil || n == 0 || n > maxColumns {
		return 0, r.serverErr(&ProtocolError{Msg: "a malformed column count"})
	}
	if err := r.cw.write(p); err != nil {
		return 0, err
	}
	// The definitions name the columns' origins, which only a masked
	// result needs (maskRow); others pass them on unread.
	masked := res.c.Masker != nil
	if masked {
		res.cols = make([]colKey, n)
	}
	for i := uint64(0); i < n; i++ {
		d, _, err := r.sr.next()
		if err != nil {
			return 0, r.serverErr(err)
		}
		if masked {
			if res.cols[i], err = parseColumn(d); err != nil {
				return 0, r.serverErr(err)
			}
		}
		if err := r.cw.write(d); err != nil {
			return 0, err
		}
	}
	e, _, err := r.sr.next()
	if err != nil {
		return 0, r.serverErr(err)
	}
	if !isEOF(e) {
		return 0, r.serverErr(&ProtocolError{Msg: "no EOF after the column definitions"})
	}
	status := eofStatus(e)
	if err := r.cw.write(e); err != nil {
		return 0, err
	}
	if status&statusCursorExists != 0 && res.binary && st != nil {
		return status, nil
	}
	return r.rows(res)
}

// rows relays a result's rows until its EOF (whose status it returns) or
// an ERR (res.ended).
func (r *relay) rows(res *result) (uint16, error) {
	c := res.c
	for {
		p, _, err := r.sr.next()
		if err != nil {
			return 0, r.serverErr(err)
		}
		if len(p) > 0 && p[0] == 0xff {
			p, res.code = r.maskErr(c, p)
			res.ended = true
			if err := r.cw.write(p); err != nil {
				return 0, err
			}
			return 0, r.cw.flush()
		}
		if isEOF(p) {
			status := eofStatus(p)
			r.status(status, nil)
			return status, r.cw.write(p)
		}
		res.rows++
		res.bytes += int64(len(p))
		if refused, v := r.s.decider.CheckResult(r.s.ctx, c, &res.gate, res.rows, res.bytes, r.notify); refused {
			// The row and the rest must not reach the client: the query
			// is stopped on the server where the proxy can (kill.go), and
			// the rest is read and dropped.
			res.rows--
			res.bytes -= int64(len(p))
			res.ended, res.code = true, stateDenied
			r.stopResult()
			if err := r.drain(); err != nil {
				return 0, err
			}
			d := v.Decision
			r.cw.write(appendErr(nil, codeDenied, stateDenied,
				fmt.Sprintf("sluice: result refused by rule %q after %d rows: %s", d.Rule.ID, res.rows, d.Reason), true))
			return 0, r.cw.flush()
		}
		if c.Masker != nil {
			if p, err = r.maskRow(res, p); err != nil {
				res.ended, res.code = true, stateDenied
				r.s.p.Log.Error("masked result refused: it cannot be masked", "error", err, "statement", c.Cmd.Text)
				r.stopResult()
				if err := r.drain(); err != nil {
					return 0, err
				}
				r.cw.write(appendErr(nil, codeDenied, stateDenied, "sluice: the result cannot be masked, so it is refused: "+err.Error(), true))
				return 0, r.cw.flush()
			}
		}
		if err := r.cw.write(p); err != nil {
			return 0, err
		}
		if r.sr.buffered() == 0 {
			if err := r.cw.flush(); err != nil {
				return 0, err
			}
		}
	}
}

// drain reads and drops the rest of the server's answer: this result's
// rows, and every result after it.
func (r *relay) drain() error {
	more := true
	inRows := true
	for more {
		p, _, err := r.sr.next()
		if err != nil {
			return r.serverErr(err)
		}
		switch {
		case len(p) > 0 && p[0] == 0xff:
			return nil
		case inRows && isEOF(p):
			more = eofStatus(p)&statusMoreResults != 0
			inRows = false
		case inRows:
		case len(p) > 0 && p[0] == 0x00:
			st, err := okStatus(p)
			more = err == nil && st&statusMoreResults != 0
		default:
			// A next result set: its definitions, their EOF, its rows.
			n, _, _, err := readLenenc(p)
			if err != nil || n > maxColumns {
				return r.serverErr(&ProtocolError{Msg: "a malformed column count"})
			}
			for i := uint64(0); i <= n; i++ {
				if _, _, err := r.sr.next(); err != nil {
					return r.serverErr(err)
				}
			}
			inRows = true
		}
	}
	return nil
}

// parseColumn reads a ColumnDefinition41.
func parseColumn(b []byte) (colKey, error) {
	var k colKey
	var f [6][]byte
	rest := b
	for i := range f {
		var err error
		if f[i], rest, _, err = readLenencString(rest); err != nil {
			return k, &ProtocolError{Msg: "a malformed column definition"}
		}
	}
	_, n, _, err := readLenenc(rest)
	if err != nil || len(rest) < n+7 {
		return k, &ProtocolError{Msg: "a malformed column definition"}
	}
	rest = rest[n:]
	k = colKey{schema: string(f[1]), table: string(f[3]), name: string(f[4]), orgName: string(f[5]),
		charset: le16(rest), typ: rest[6]}
	return k, nil
}

// origins names the origins of a result's columns for the mask rules
// (decoder.Plans.Origins). MySQL's column definitions carry them: the
// schema, the original table and the original column; a column with no
// original table (an expression) is named by its output name alone.
func origins(c *decoder.Command, cols []colKey) ([]mask.Column, error) {
	out := make([]mask.Column, len(cols))
	for i, k := range cols {
		out[i] = mask.Column{Name: k.name, Type: oidOf(k)}
		if k.table != "" {
			out[i].Schema, out[i].Table = k.schema, k.table
			if k.orgName != "" {
				out[i].Name = k.orgName
			}
		}
	}
	return out, nil
}

// oidOf maps a MySQL column type to the PostgreSQL type the masker knows
// it by (mask.Column.Type): numbers, dates and times hold no text a
// detector looks for; BIGINT and DECIMAL may (a card number).
func oidOf(k colKey) uint32 {
	switch k.typ {
	case typeTiny, typeShort, typeLong, typeInt24, typeYear:
		return mask.OIDInt4
	case typeLongLong:
		return mask.OIDInt8
	case typeFloat:
		return mask.OIDFloat4
	case typeDouble:
		return mask.OIDFloat8
	case typeDecimal, typeNewDecimal:
		return mask.OIDNumeric
	case typeDate, typeNewDate:
		return mask.OIDDate
	case typeTime, typeTime2:
		return mask.OIDTime
	case typeDatetime, typeDatetime2, typeTimestamp, typeTimestamp2:
		return mask.OIDTimestamp
	case typeJSON:
		return mask.OIDJSON
	case typeNull:
		return mask.OIDUnknown
	case typeBit, typeGeometry:
		return mask.OIDBytea
	}
	if k.charset == 63 { // binary: BLOB, VARBINARY, BINARY
		return mask.OIDBytea
	}
	return mask.OIDVarchar
}

// maskRow rewrites a row through the result's plan; a row nothing in
// which is masked goes out as it came.
func (r *relay) maskRow(res *result, p []byte) ([]byte, error) {
	if res.plan == nil {
		plan, err := r.plans.Plan(res.c, res.cols)
		if err != nil {
			return nil, err
		}
		res.plan = plan
		r.lastMasker = res.c.Masker
	}
	if !res.plan.NeedsDecode() {
		return p, nil
	}
	if res.binary {
		return r.maskBinary(res, p)
	}
	return r.maskText(res, p)
}

var errRow = &ProtocolError{Msg: "a row that does not match its column definitions"}

// maskText masks a text-protocol row: one length-encoded string per
// column, 0xfb for NULL.
func (r *relay) maskText(res *result, p []byte) ([]byte, error) {
	var out []byte
	rebuilt := false
	rest := p
	scratch := r.valBuf[:0]
	for i := range res.cols {
		at := len(p) - len(rest)
		v, next, null, err := readLenencString(rest)
		if err != nil {
			return nil, errRow
		}
		rest = next
		if null {
			if rebuilt {
				out = append(out, 0xfb)
			}
			continue
		}
		mv, mnull, changed := res.plan.Apply(i, v, scratch[:0])
		if changed {
			scratch = mv
			if !rebuilt {
				out, rebuilt = append(r.rowBuf[:0], p[:at]...), true
			}
		}
		if !rebuilt {
			continue
		}
		if mnull {
			out = append(out, 0xfb)
			continue
		}
		out = appendLenencString(out, mv)
	}
	if len(rest) != 0 {
		return nil, errRow
	}
	r.valBuf = scratch
	if !rebuilt {
		return p, nil
	}
	r.rowBuf = out
	return out, nil
}

// maskBinary masks a binary-protocol row: 0x00, a NULL bitmap (offset
// 2), then each non-NULL value in its type's encoding. A mask must leave
// the encoding valid: a string-like value (strings, BLOBs, ENUM, SET,
// DECIMAL, JSON, BIT) is masked in place as text is; a number, date or
// time that a column mask or a detector would change is sent as NULL
// (its type has no room for a token).
func (r *relay) maskBinary(res *result, p []byte) ([]byte, error) {
	ncol := len(res.cols)
	nb := (ncol + 7 + 2) / 8
	if len(p) < 1+nb || p[0] != 0x00 {
		return nil, errRow
	}
	bitmap := p[1 : 1+nb]
	rest := p[1+nb:]
	type val struct {
		v    []byte
		null bool
	}
	var out []byte
	changedAny := false
	vals := make([]val, ncol)
	var text []byte
	for i, k := range res.cols {
		if bitmap[(i+2)/8]&(1<<((i+2)%8)) != 0 {
			vals[i].null = true
			continue
		}
		v, next, err := binaryValue(k.typ, rest)
		if err != nil {
			return nil, err
		}
		rest = next
		vals[i].v = v
		var mv []byte
		var mnull, changed bool
		if stringLike(k.typ) {
			// A value of its own: the row is rebuilt from vals.
			if mv, mnull, changed = res.plan.Apply(i, v, nil); changed {
				vals[i] = val{v: mv, null: mnull}
			}
		} else {
			text = numberText(text[:0], k.typ, v)
			if _, _, changed = res.plan.Apply(i, text, nil); changed && !res.plan.DryRun {
				vals[i] = val{null: true}
			}
		}
		changedAny = changedAny || changed
	}
	if len(rest) != 0 {
		return nil, errRow
	}
	if !changedAny || res.plan.DryRun {
		return p, nil
	}
	out = append(r.rowBuf[:0], 0x00)
	at := len(out)
	out = append(out, make([]byte, nb)...)
	for i, k := range res.cols {
		if vals[i].null {
			out[at+(i+2)/8] |= 1 << ((i + 2) % 8)
			continue
		}
		if stringLike(k.typ) {
			out = appendLenencString(out, vals[i].v)
		} else {
			out = append(out, vals[i].v...)
		}
	}
	r.rowBuf = out
	return out, nil
}

// stringLike reports whether a type's binary encoding is a
// length-encoded string.
func stringLike(t byte) bool {
	switch t {
	case typeTiny, typeShort, typeLong, typeInt24, typeYear, typeLongLong, typeFloat, typeDouble,
		typeDate, typeNewDate, typeTime, typeTime2, typeDatetime, typeDatetime2, typeTimestamp, typeTimestamp2, typeNull:
		return false
	}
	return true
}

// binaryValue splits one binary-protocol value of type t off b: its
// whole encoding (with its length byte, for dates and times) for fixed
// types, its bytes for string-like ones.
func binaryValue(t byte, b []byte) (v, rest []byte, err error) {
	n := 0
	switch t {
	case typeTiny:
		n = 1
	case typeShort, typeYear:
		n = 2
	case typeLong, typeInt24, typeFloat:
		n = 4
	case typeLongLong, typeDouble:
		n = 8
	case typeNull:
		n = 0
	case typeDate, typeNewDate, typeTime, typeTime2, typeDatetime, typeDatetime2, typeTimestamp, typeTimestamp2:
		if len(b) < 1 {
			return nil, nil, errRow
		}
		n = 1 + int(b[0])
	default:
		v, rest, null, err := readLenencString(b)
		if err != nil || null {
			return nil, nil, errRow
		}
		return v, rest, nil
	}
	if len(b) < n {
		return nil, nil, errRow
	}
	return b[:n], b[n:], nil
}

// numberText appends the decimal text of a binary number (what a
// detector scans: a card number in a BIGINT), or the raw bytes of a
// date or time.
func numberText(dst []byte, t byte, v []byte) []byte {
	var u uint64
	for i := len(v) - 1; i >= 0; i-- {
		u = u<<8 | uint64(v[i])
	}
	switch t {
	case typeTiny:
		return strconv.AppendInt(dst, int64(int8(u)), 10)
	case typeShort, typeYear:
		return strconv.AppendInt(dst, int64(int16(u)), 10)
	case typeLong, typeInt24:
		return strconv.AppendInt(dst, int64(int32(u)), 10)
	case typeLongLong:
		return strconv.AppendInt(dst, int64(u), 10)
	case typeFloat:
		return strconv.AppendFloat(dst, float64(math.Float32frombits(uint32(u))), 'f', -1, 32)
	case typeDouble:
		return strconv.AppendFloat(dst, math.Float64frombits(u), 'f', -1, 64)
	}
	return append(dst, v...)
}

// maskErr runs an ERR packet's message through the detectors of c's
// masker (or of the session's last masked command): a duplicate key's
// "Duplicate entry 'alice@example.com' for key ..." must not leak. It
// returns the packet and the error's SQL state (or its code).
func (r *relay) maskErr(c *decoder.Command, p []byte) ([]byte, string) {
	e := parseErr(p)
	code := e.state
	if code == "" {
		code = strconv.Itoa(int(e.code))
	}
	m := r.lastMasker
	if c != nil && c.Masker != nil {
		m, r.lastMasker = c.Masker, c.Masker
	}
	if m == nil {
		return p, code
	}
	mv, ok := m.Text(string(e.msg))
	if !ok {
		return p, code
	}
	state := e.state
	if state == "" {
		state = "HY000"
	}
	return appendErr(nil, e.code, state, mv, true), code
}
