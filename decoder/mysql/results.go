package mysql

import (
	"math"
	"strconv"

	"github.com/sluicehq/sluice/decoder"
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
	code   string // the server's error, if one ended it
	// ended is set when the whole answer ended with the result (an ERR,
	// or a refusal after which the rest was dropped).
	ended bool
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
	var out []byte
	changedAny := false
	vals := r.binVals[:0]
	if cap(vals) < ncol {
		vals = make([]binVal, ncol)
	}
	vals = vals[:ncol]
	clear(vals)
	r.binVals = vals
	text := r.numBuf[:0]
	defer func() { r.numBuf = text[:0] }()
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
				vals[i] = binVal{v: mv, null: mnull}
			}
		} else {
			text = numberText(text[:0], k.typ, v)
			if _, _, changed = res.plan.Apply(i, text, nil); changed && !res.plan.DryRun {
				vals[i] = binVal{null: true}
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

// binVal is one value of a binary row being masked.
type binVal struct {
	v    []byte
	null bool
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
