package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/mask"
)

// colDesc is one field of a RowDescription.
type colDesc struct {
	name   string
	table  uint32
	attnum int16
	typ    uint32
	format int16
}

// parseRowDescription decodes a RowDescription body.
func parseRowDescription(b []byte) ([]colDesc, error) {
	if len(b) < 2 {
		return nil, &ProtocolError{Msg: "short RowDescription"}
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	cols := make([]colDesc, 0, n)
	for i := 0; i < n; i++ {
		name, rest, err := cstring(b)
		if err != nil || len(rest) < 18 {
			return nil, &ProtocolError{Msg: "malformed RowDescription"}
		}
		cols = append(cols, colDesc{
			name:   name,
			table:  binary.BigEndian.Uint32(rest),
			attnum: int16(binary.BigEndian.Uint16(rest[4:])),
			typ:    binary.BigEndian.Uint32(rest[6:]),
			format: int16(binary.BigEndian.Uint16(rest[16:])),
		})
		b = rest[18:]
	}
	return cols, nil
}

// bindResultFormats returns the result-column format codes of a Bind body
// after the portal and statement names.
func bindResultFormats(b []byte) ([]int16, error) {
	bad := &ProtocolError{Msg: "malformed Bind"}
	if len(b) < 2 {
		return nil, bad
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 2*n+2 {
		return nil, bad
	}
	b = b[2*n:]
	np := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	for i := 0; i < np; i++ {
		if len(b) < 4 {
			return nil, bad
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l > 0 {
			if len(b) < l {
				return nil, bad
			}
			b = b[l:]
		}
	}
	if len(b) < 2 {
		return nil, bad
	}
	nf := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if len(b) < 2*nf {
		return nil, bad
	}
	f := make([]int16, nf)
	for i := range f {
		f[i] = int16(binary.BigEndian.Uint16(b[2*i:]))
	}
	return f, nil
}

func formatOf(f []int16, i int) int16 {
	switch {
	case len(f) == 0:
		return 0
	case len(f) == 1:
		return f[0]
	case i < len(f):
		return f[i]
	}
	return 0
}

// errUnresolved refuses a masked result with columns of a table the
// proxy could not name: their values must not pass unmasked.
var errUnresolved = errors.New("cannot name the origin of the result's columns")

// planFor builds (once) the masking plan of the item's result from its
// columns (decoder.Plans: the session's last plan is reused for the same
// masker and columns; origins names them otherwise).
func (r *relay) planFor(it *item) (*mask.Plan, error) {
	if it.plan != nil {
		return it.plan, nil
	}
	if it.cols == nil {
		return nil, errUnresolved
	}
	plan, err := r.plans.Plan(it.c, it.cols)
	if err != nil {
		return nil, err
	}
	it.plan = plan
	return plan, nil
}

// origins names the origins of a result's columns for c's masker
// (decoder.Plans.Origins): through the session's catalog, from each
// column's table OID and attribute number, when the masks go by column;
// by output name and type alone when they only detect. A column of a
// table the catalog cannot name is an error (the result is refused), and
// the table is looked up with the next statement.
func (r *relay) origins(c *decoder.Command, cols []colDesc) ([]mask.Column, error) {
	byColumn := c.Masker.ByColumn()
	mc := make([]mask.Column, len(cols))
	for i, col := range cols {
		mc[i] = mask.Column{Name: col.name, Type: col.typ}
		if !byColumn {
			continue
		}
		if col.table == 0 {
			// An expression, or a value a statement returns without
			// naming its origin (RETURNING): by its output name, as a
			// column of each table the statement writes.
			if w := r.writtenTable(c); w.Table != "" {
				mc[i].Schema, mc[i].Table = w.Schema, w.Table
			}
			continue
		}
		if r.s.catalog == nil {
			return nil, errUnresolved
		}
		schema, table, name, ok := r.s.catalog.column(col.table, col.attnum)
		if !ok {
			r.s.catalog.wantOID(col.table)
			r.forgetNames()
			return nil, fmt.Errorf("%w: table oid %d is not among the tables the statement names", errUnresolved, col.table)
		}
		mc[i] = mask.Column{Schema: schema, Table: table, Name: name, Type: col.typ}
	}
	return mc, nil
}

// namedByStatement reports whether origins names a column of cols by the
// table c writes (a RETURNING value without an origin of its own, masked
// by column): such a plan holds for c's statement only
// (decoder.Plans.ByStatement), since another statement's result with the
// same description may write another table.
func (r *relay) namedByStatement(c *decoder.Command, cols []colDesc) bool {
	switch c.Cmd.Statement.Kind {
	case "insert", "update", "delete", "merge":
	default:
		return false
	}
	if !c.Masker.ByColumn() {
		return false
	}
	for _, col := range cols {
		if col.table == 0 {
			return true
		}
	}
	return false
}

// writtenTable is the table an INSERT, UPDATE, DELETE or MERGE writes, as
// the session's catalog resolved it: its RETURNING values come without
// an origin.
func (r *relay) writtenTable(c *decoder.Command) mask.Column {
	switch c.Cmd.Statement.Kind {
	case "insert", "update", "delete", "merge":
	default:
		return mask.Column{}
	}
	if len(c.Cmd.Statement.Tables) == 0 || r.s.catalog == nil {
		return mask.Column{}
	}
	schema, table, ok := r.s.catalog.relationOf(c.Cmd.Statement.Tables[0])
	if !ok {
		return mask.Column{}
	}
	return mask.Column{Schema: schema, Table: table}
}

// maskRow rewrites a DataRow through the item's plan; a row that needs no
// masking goes through undecoded.
func (r *relay) maskRow(it *item, n int) error {
	plan, err := r.planFor(it)
	if err != nil {
		return r.failMask(it, n, err)
	}
	if !plan.NeedsDecode() {
		return r.sr.forward(r.cw, n)
	}
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	if len(b) < 2 {
		return r.serverErr(&ProtocolError{Msg: "short DataRow"})
	}
	ncol := int(binary.BigEndian.Uint16(b))
	// A row nothing in which is masked goes out as it came. Otherwise it
	// is rebuilt, from the first changed value on, in a buffer reused
	// across rows: writeMsg copies it into the client's writer at once.
	var out []byte
	rebuilt := false
	rest := b[2:]
	scratch := r.valBuf[:0]
	for i := 0; i < ncol; i++ {
		if len(rest) < 4 {
			return r.serverErr(&ProtocolError{Msg: "malformed DataRow"})
		}
		field := len(b) - len(rest) // where this value's length starts in b
		l := int(int32(binary.BigEndian.Uint32(rest)))
		rest = rest[4:]
		if l < 0 {
			if rebuilt {
				out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			}
			continue
		}
		if len(rest) < l {
			return r.serverErr(&ProtocolError{Msg: "malformed DataRow"})
		}
		v := rest[:l]
		rest = rest[l:]
		var mv []byte
		var null, changed bool
		if i < len(it.cols) && it.cols[i].format == 1 {
			mv, null, changed = plan.ApplyBinary(i, it.cols[i].typ, v, scratch[:0])
		} else {
			mv, null, changed = plan.Apply(i, v, scratch[:0])
		}
		if changed {
			scratch = mv
			if !rebuilt {
				out, rebuilt = append(r.rowBuf[:0], b[:field]...), true
			}
		}
		if !rebuilt {
			continue
		}
		if null {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(mv)))
		out = append(out, mv...)
	}
	r.valBuf = scratch
	if !rebuilt {
		return writeMsg(r.cw, 'D', b)
	}
	r.rowBuf = out
	return writeMsg(r.cw, 'D', out)
}

// failMask refuses a result that cannot be masked: the row at hand and
// every later one are dropped, the server is asked to cancel, and the
// client gets 42501 where the statement ends. The session goes on.
func (r *relay) failMask(it *item, n int, err error) error {
	r.s.p.Log.Error("masked result refused: it cannot be masked", "error", err, "statement", it.c.Cmd.Text)
	r.refuseResult(it, errorBody("ERROR", codeInsufficientPrivilege, "sluice: "+err.Error(),
		"The result holds columns that mask rules cover; rather than send them unmasked, Sluice refused the statement.",
		"Name the tables the statement reads directly; a table created or renamed in the same batch is looked up when the next statement runs."))
	if n >= 0 {
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	return nil
}

// headItem is the result in flight, or nil.
func (r *relay) headItem() *item {
	h := r.head()
	if h == nil || h.lk != nil || h.typ != 'E' && h.typ != 'Q' {
		return nil
	}
	return r.result(h)
}

// copyState is a COPY TO STDOUT in flight.
type copyState struct {
	binary bool
	csv    bool
	opts   mask.CopyOptions
}

// copyOutResponse starts masking a COPY TO STDOUT of a statement whose
// verdict masks.
func (r *relay) copyOutResponse(n int) error {
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	it := r.headItem()
	if it != nil && it.c.Masker != nil && len(b) >= 1 {
		st := &copyState{binary: b[0] == 1}
		text := strings.ToLower(it.c.Cmd.Text)
		st.csv = strings.Contains(text, "csv")
		st.opts.Header = st.csv && strings.Contains(text, "header")
		it.copyOut = st
		// The columns of a COPY are the table's, in order: name them from
		// the catalog when the statement copies a table.
		it.cols = nil
		it.plan = nil
		tables := it.c.Cmd.Statement.Tables
		cols := []mask.Column{}
		if len(tables) == 1 && !strings.Contains(text, "(select") && !strings.Contains(text, "( select") {
			ok := false
			if r.s.catalog != nil {
				cols, ok = r.s.catalog.tableColumns(tables[0])
			}
			if !ok && it.c.Masker.ByColumn() {
				r.failMask(it, -1, errUnresolved)
			}
			if i := strings.Index(text, tables[0]+" ("); i >= 0 || strings.Contains(text, tables[0]+"(") {
				// A column list: mask by the listed names.
				cols = listedColumns(text, tables[0], cols)
			}
		}
		it.plan = it.c.Plan(cols)
	}
	return r.send('H', b)
}

// copyData masks one CopyData message of a masked COPY TO STDOUT.
func (r *relay) copyData(n int) error {
	it := r.headItem()
	if it != nil && (it.refusal != nil || r.suppress) {
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	if it == nil || it.copyOut == nil || it.plan == nil {
		return r.pass(n)
	}
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	var out []byte
	switch {
	case it.copyOut.binary:
		out, err = it.plan.CopyBinary(b, nil)
	case it.copyOut.csv:
		out, err = it.plan.CopyCSV(b, nil, it.copyOut.opts)
	default:
		out, err = it.plan.CopyText(b, nil, it.copyOut.opts)
	}
	if err != nil {
		return r.failMask(it, -1, fmt.Errorf("mask COPY data: %w", err))
	}
	return writeMsg(r.cw, 'd', out)
}

// copyDone passes the end of COPY data, unless the COPY was refused.
func (r *relay) copyDone(n int) error {
	if it := r.headItem(); it != nil && it.refusal != nil {
		_, err := r.sr.body(n)
		return r.serverErr(err)
	}
	return r.pass(n)
}

// maskMessage runs an ErrorResponse or NoticeResponse's message, detail
// and hint through the value detectors of the statement in flight (or of
// the session's last masked statement): a unique violation's
// "Key (email)=(...)" must not leak.
func (r *relay) maskMessage(b []byte) []byte {
	if h := r.head(); h != nil && h.it != nil && h.it.c.Masker != nil {
		r.lastMasker = h.it.c.Masker
	}
	m := r.lastMasker
	if m == nil {
		return b
	}
	var out []byte
	changed := false
	rest := b
	for len(rest) > 1 {
		f := rest[0]
		v, next, err := cstring(rest[1:])
		if err != nil {
			return b
		}
		if f == 'M' || f == 'D' || f == 'H' || f == 'W' {
			if mv, ok := m.Text(v); ok {
				v, changed = mv, true
			}
		}
		out = append(append(append(out, f), v...), 0)
		rest = next
	}
	if !changed {
		return b
	}
	return append(out, 0)
}

// notice forwards a NoticeResponse through the detectors.
func (r *relay) notice(n int) error {
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	return r.send('N', r.maskMessage(b))
}

// textValues splits a text-format DataRow into strings ("" for NULL).
func textValues(b []byte) []string {
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if len(b) < 4 {
			return nil
		}
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l < 0 {
			out = append(out, "")
			continue
		}
		if len(b) < l {
			return nil
		}
		out = append(out, string(b[:l]))
		b = b[l:]
	}
	return out
}

// listedColumns narrows a table's columns to a COPY column list.
func listedColumns(text, table string, all []mask.Column) []mask.Column {
	i := strings.Index(text, table)
	rest := text[i+len(table):]
	open := strings.Index(rest, "(")
	close := strings.Index(rest, ")")
	if open < 0 || close < open {
		return all
	}
	var out []mask.Column
	for _, name := range strings.Split(rest[open+1:close], ",") {
		name = strings.Trim(strings.TrimSpace(name), `"`)
		col := mask.Column{Name: name}
		for _, c := range all {
			if strings.EqualFold(c.Name, name) {
				col = c
				break
			}
		}
		out = append(out, col)
	}
	return out
}
