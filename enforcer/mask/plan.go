package mask

import (
	"encoding/binary"
	"encoding/json"
	"strconv"

	"github.com/sluicehq/sluice/ruleset"
)

// Column describes one column of a result, as the decoder resolved it.
type Column struct {
	// Schema and Table name the column's origin table; Table is empty
	// when the column is an expression with no origin (lower(email), a
	// literal, a function result), and Schema may be empty when unknown.
	Schema, Table string
	// Name is the origin column's name, or the output name of an
	// expression.
	Name string
	// Type is the column's PostgreSQL type OID, 0 when unknown. It lets
	// the plan skip detectors on types that cannot hold sensitive text
	// and tells CopyBinary how fields are encoded.
	Type uint32
}

// PostgreSQL type OIDs the masker treats specially.
const (
	OIDBool        = 16
	OIDBytea       = 17
	OIDChar        = 18
	OIDName        = 19
	OIDInt8        = 20
	OIDInt2        = 21
	OIDInt4        = 23
	OIDText        = 25
	OIDOid         = 26
	OIDJSON        = 114
	OIDXML         = 142
	OIDFloat4      = 700
	OIDFloat8      = 701
	OIDUnknown     = 705
	OIDBPChar      = 1042
	OIDVarchar     = 1043
	OIDDate        = 1082
	OIDTime        = 1083
	OIDTimestamp   = 1114
	OIDTimestampTZ = 1184
	OIDInterval    = 1186
	OIDTimeTZ      = 1266
	OIDNumeric     = 1700
	OIDUUID        = 2950
	OIDJSONB       = 3802
)

// noText lists types whose text form cannot hold anything a detector
// looks for.
func noText(oid uint32) bool {
	switch oid {
	case OIDBool, OIDInt2, OIDInt4, OIDOid, OIDFloat4, OIDFloat8, OIDDate, OIDTime,
		OIDTimestamp, OIDTimestampTZ, OIDInterval, OIDTimeTZ, OIDUUID:
		return true
	}
	return false
}

// Plan is what to do with each column of one result. It belongs to that
// result: use it from one goroutine, for the result's lifetime. Its
// methods never retain the slices they are given.
type Plan struct {
	// DryRun makes the plan mask nothing: values, rows and COPY data come
	// back unchanged while changed results and Counts still say what
	// would have been masked (monitor mode). Set it before first use.
	DryRun bool

	m      *Masker
	cols   []planCol
	decode bool
	counts []int64
	spans  []span
	buf    []byte // scratch for decoded COPY fields and binary numbers
	out    []byte // scratch for masked COPY fields

	// COPY state: whether the header line or the binary signature has
	// been passed.
	copyStarted bool
}

type planCol struct {
	Column
	fn     Func // column mask; nil: none
	rule   int
	detect bool
}

// Plan returns the plan for a result with columns cols. A column gets
// the function of the most specific matching pattern (see the package
// documentation), else detectors when the masker has any and the
// column's type can hold text.
func (m *Masker) Plan(cols []Column) *Plan {
	p := &Plan{m: m, cols: make([]planCol, len(cols)), counts: make([]int64, len(m.rules))}
	for i := range cols {
		pc := &p.cols[i]
		pc.Column = cols[i]
		for j := range m.columns {
			if m.columns[j].match(&cols[i]) {
				pc.fn, pc.rule = m.columns[j].fn, m.columns[j].rule
				break
			}
		}
		pc.detect = pc.fn == nil && len(m.dets) > 0 && !noText(cols[i].Type)
		p.decode = p.decode || pc.fn != nil || pc.detect
	}
	return p
}

// Fresh returns a plan for another result with the same columns: the
// column decisions are shared (they never change once made), the counts
// start at zero.
func (p *Plan) Fresh() *Plan {
	return &Plan{DryRun: p.DryRun, m: p.m, cols: p.cols, decode: p.decode, counts: make([]int64, len(p.counts))}
}

// NeedsDecode reports whether any column needs masking or scanning.
// When false, the result's rows can be relayed without decoding their
// values.
func (p *Plan) NeedsDecode() bool { return p.decode }

// Masked reports whether column col has a column mask, and its rule.
func (p *Plan) Masked(col int) (*ruleset.Rule, bool) {
	if col < 0 || col >= len(p.cols) || p.cols[col].fn == nil {
		return nil, false
	}
	return p.m.rules[p.cols[col].rule], true
}

// RuleCount is how many values a rule masked, or would have masked.
type RuleCount struct {
	Rule   *ruleset.Rule
	Values int64
}

// Counts returns, per rule that masked something, how many values it
// masked (or would have, under DryRun): each masked column value counts
// once for its column rule, each value or message detector span once for
// its detector's rule.
func (p *Plan) Counts() []RuleCount {
	var out []RuleCount
	for i, n := range p.counts {
		if n > 0 {
			out = append(out, RuleCount{Rule: p.m.rules[i], Values: n})
		}
	}
	return out
}

// Apply masks text-format value v of column col. When changed is false
// (nothing to mask), out is v itself; otherwise out is the masked value
// appended to dst, or null says to send SQL NULL. Under DryRun, out is
// always v and null false. A col outside the plan's columns is sent as
// NULL: the caller's row does not match its description.
func (p *Plan) Apply(col int, v, dst []byte) (out []byte, null, changed bool) {
	if col < 0 || col >= len(p.cols) {
		return dst, true, true
	}
	c := &p.cols[col]
	if c.fn != nil {
		p.counts[c.rule]++
		if p.DryRun {
			return v, false, true
		}
		out, null = c.fn(dst, v)
		return out, null, true
	}
	if !c.detect {
		return v, false, false
	}
	return p.detect(v, dst)
}

// detect runs the detectors over v and replaces what they find.
func (p *Plan) detect(v, dst []byte) (out []byte, null, changed bool) {
	p.spans = p.m.scan(v, p.spans)
	if len(p.spans) == 0 {
		return v, false, false
	}
	for _, s := range p.spans {
		d := &p.m.dets[s.det]
		p.counts[d.rule]++
		null = null || d.null
	}
	if p.DryRun {
		return v, false, true
	}
	if null {
		return dst, true, true
	}
	out, prev := dst, 0
	for _, s := range p.spans {
		out = append(out, v[prev:s.lo]...)
		out, _ = p.m.dets[s.det].fn(out, v[s.lo:s.hi])
		prev = s.hi
	}
	return append(out, v[prev:]...), false, true
}

// ApplyBinary masks binary-format value v of column col, whose type OID
// is typ (0: Column.Type). It returns like Apply. A mask must leave a
// valid binary encoding, so by type:
//
//   - text, varchar, bpchar, name, unknown and bytea, whose binary form
//     is the bytes themselves: masked in place, as in text format.
//   - json and jsonb: detectors replace spans in place when the result is
//     still valid JSON; a column mask, or a replacement that breaks the
//     JSON, sends NULL.
//   - int2, int4, int8 and numeric: a column mask sends NULL; detectors
//     run over the number's decimal text and any finding sends NULL.
//   - every other type, and an unknown typ: a column mask sends NULL;
//     detectors run over the raw bytes and any finding sends NULL.
//
// Under DryRun nothing is replaced, as with Apply.
func (p *Plan) ApplyBinary(col int, typ uint32, v, dst []byte) (out []byte, null, changed bool) {
	if col < 0 || col >= len(p.cols) {
		return dst, true, true
	}
	c := &p.cols[col]
	if typ == 0 {
		typ = c.Type
	}
	switch typ {
	case OIDText, OIDVarchar, OIDBPChar, OIDName, OIDUnknown, OIDBytea:
		return p.Apply(col, v, dst)
	}
	if c.fn != nil {
		p.counts[c.rule]++
		if p.DryRun {
			return v, false, true
		}
		return dst, true, true
	}
	if !c.detect {
		return v, false, false
	}
	switch typ {
	case OIDJSON:
		out, null, changed = p.detect(v, dst)
		if changed && !null && !p.DryRun && !json.Valid(out) {
			return dst, true, true
		}
		return out, null, changed
	case OIDJSONB:
		if len(v) == 0 || v[0] != 1 {
			return p.nullIfFound(v, v, dst)
		}
		out, null, changed = p.detect(v[1:], append(dst, 1))
		switch {
		case !changed:
			return v, false, false
		case p.DryRun:
			return v, false, true
		case null || !json.Valid(out[len(dst)+1:]):
			return dst, true, true
		}
		return out, false, true
	case OIDInt2, OIDInt4, OIDInt8:
		var n int64
		switch {
		case typ == OIDInt2 && len(v) == 2:
			n = int64(int16(binary.BigEndian.Uint16(v)))
		case typ == OIDInt4 && len(v) == 4:
			n = int64(int32(binary.BigEndian.Uint32(v)))
		case typ == OIDInt8 && len(v) == 8:
			n = int64(binary.BigEndian.Uint64(v))
		default:
			return p.nullIfFound(v, v, dst)
		}
		p.buf = strconv.AppendInt(p.buf[:0], n, 10)
		return p.nullIfFound(p.buf, v, dst)
	case OIDNumeric:
		text, ok := numericText(p.buf[:0], v)
		if !ok {
			return p.nullIfFound(v, v, dst)
		}
		p.buf = text
		return p.nullIfFound(text, v, dst)
	}
	return p.nullIfFound(v, v, dst)
}

// nullIfFound scans text and sends NULL in place of v when a detector
// finds anything.
func (p *Plan) nullIfFound(text, v, dst []byte) ([]byte, bool, bool) {
	p.spans = p.m.scan(text, p.spans)
	if len(p.spans) == 0 {
		return v, false, false
	}
	for _, s := range p.spans {
		p.counts[p.m.dets[s.det].rule]++
	}
	if p.DryRun {
		return v, false, true
	}
	return dst, true, true
}

// numericText appends the decimal digits of a binary numeric's integer
// and fraction parts (no sign or point: detectors look for digit runs).
func numericText(dst, v []byte) ([]byte, bool) {
	if len(v) < 8 {
		return dst, false
	}
	ndigits := int(binary.BigEndian.Uint16(v[0:]))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	if len(v) != 8+2*ndigits || ndigits > 1000 {
		return dst, false
	}
	for i := 0; i < ndigits; i++ {
		d := int(binary.BigEndian.Uint16(v[8+2*i:]))
		if d > 9999 {
			return dst, false
		}
		if i == 0 && weight >= 0 {
			dst = strconv.AppendInt(dst, int64(d), 10)
		} else {
			dst = append(dst, byte('0'+d/1000), byte('0'+d/100%10), byte('0'+d/10%10), byte('0'+d%10))
		}
	}
	for i := ndigits; i <= weight; i++ {
		dst = append(dst, "0000"...)
	}
	return dst, true
}
