package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

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

// describeReq is a Describe awaiting its RowDescription or NoData.
type describeReq struct {
	batch uint64
	key   string // "S:name" or "P:name"
}

// injection is a catalog query the proxy runs on the client's connection.
type injection struct {
	done chan error
	err  error
}

// errUnresolved ends a session whose masked result has columns of a table
// the proxy could not name: their values must not pass unmasked.
var errUnresolved = errors.New("cannot resolve the origin of result columns for masking")

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

// describe forwards a Describe and remembers to catch its answer.
func (r *relay) describe(n int) error {
	b, err := r.cr.body(n)
	if err != nil {
		return err
	}
	if len(b) < 2 {
		return &ProtocolError{Msg: "short Describe"}
	}
	name, _, err := cstring(b[1:])
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.describes = append(r.describes, describeReq{batch: r.cBatch, key: string(b[0]) + ":" + name})
	r.mu.Unlock()
	r.openBatch = true
	return writeMsg(r.sw, 'D', b)
}

// rowDescription forwards a RowDescription after noting its columns: for
// a Describe's answer, under the statement or portal described; otherwise
// for the simple query in flight.
func (r *relay) rowDescription(n int, batch uint64) error {
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	cols, err := parseRowDescription(b)
	if err != nil {
		return r.serverErr(err)
	}
	r.mu.Lock()
	if len(r.describes) > 0 && r.describes[0].batch == batch {
		r.descs[r.describes[0].key] = cols
		r.describes = r.describes[1:]
	} else if len(r.pending) > 0 && r.pending[0].simple {
		it := r.pending[0]
		it.cols, it.plan = cols, nil
	}
	r.mu.Unlock()
	return writeMsg(r.cw, 'T', b)
}

// noData answers a Describe of something that returns no rows.
func (r *relay) noData(batch uint64) {
	r.mu.Lock()
	if len(r.describes) > 0 && r.describes[0].batch == batch {
		r.describes = r.describes[1:]
	}
	r.mu.Unlock()
}

// endResult forgets the result in flight (CommandComplete and friends).
func (r *relay) endResult() {
	r.mu.Lock()
	if len(r.pending) > 0 && r.pending[0].simple {
		it := r.pending[0]
		it.cols, it.plan, it.copyOut = nil, nil, nil
	}
	r.mu.Unlock()
}

// planFor builds (once) the masking plan of the item's result.
func (r *relay) planFor(it *item) (*mask.Plan, error) {
	if it.plan != nil {
		return it.plan, nil
	}
	cols := it.cols
	if cols == nil && !it.simple {
		r.mu.Lock()
		if d, ok := r.descs["P:"+it.portal]; ok {
			cols = d
		} else if d, ok := r.descs["S:"+it.stmt]; ok {
			// A statement's description has no formats: Bind chose them.
			cols = append([]colDesc(nil), d...)
			for i := range cols {
				cols[i].format = formatOf(it.formats, i)
			}
		}
		r.mu.Unlock()
	}
	if cols == nil {
		return nil, errUnresolved
	}
	it.cols = cols
	if lp := &r.lastPlan; lp.plan != nil && lp.masker == it.c.masker && lp.plan.DryRun == it.c.verdict.Decision.Monitor &&
		slices.Equal(lp.cols, cols) {
		it.plan = lp.plan.Fresh()
		return it.plan, nil
	}
	mc := make([]mask.Column, len(cols))
	for i, c := range cols {
		mc[i] = mask.Column{Name: c.name, Type: c.typ}
		if c.table == 0 {
			continue // an expression: detectors only
		}
		if r.catalog() == nil {
			return nil, errUnresolved
		}
		schema, table, col, ok := r.catalog().column(c.table, c.attnum)
		if !ok {
			r.catalog().wantOID(c.table)
			return nil, errUnresolved
		}
		mc[i] = mask.Column{Schema: schema, Table: table, Name: col, Type: c.typ}
	}
	it.plan = it.c.masker.Plan(mc)
	it.plan.DryRun = it.c.verdict.Decision.Monitor
	r.lastPlan.plan, r.lastPlan.masker, r.lastPlan.cols = it.plan, it.c.masker, cols
	return it.plan, nil
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

func (r *relay) catalog() *Catalog { return r.s.catalog }

// maskRow rewrites a DataRow through the item's plan; a row that needs no
// masking goes through undecoded.
func (r *relay) maskRow(it *item, n int) error {
	plan, err := r.planFor(it)
	if err != nil {
		return r.failMask(err)
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

// failMask ends the session rather than let a value through unmasked.
func (r *relay) failMask(err error) error {
	r.s.p.Log.Error("session ended: a masked result could not be masked", "error", err)
	r.cw.Flush()
	writeMsg(r.cw, 'E', errorBody("FATAL", codeInsufficientPrivilege, "sluice: "+err.Error(),
		"The result holds columns that mask rules cover; rather than send them unmasked, the session ends.",
		"Retry: the proxy has learnt the missing names for the next session."))
	r.cw.Flush()
	r.s.up.Close()
	return err
}

// copyState is a COPY TO STDOUT in flight.
type copyState struct {
	binary bool
	csv    bool
	opts   mask.CopyOptions
}

// copyOutResponse starts masking a COPY TO STDOUT of a statement whose
// verdict masks.
func (r *relay) copyOutResponse(n int, batch uint64) error {
	b, err := r.sr.body(n)
	if err != nil {
		return r.serverErr(err)
	}
	r.mu.Lock()
	var it *item
	if len(r.pending) > 0 {
		it = r.pending[0]
	}
	r.mu.Unlock()
	if it != nil && it.c.masker != nil && len(b) >= 1 {
		st := &copyState{binary: b[0] == 1}
		text := strings.ToLower(it.c.cmd.Text)
		st.csv = strings.Contains(text, "csv")
		st.opts.Header = st.csv && strings.Contains(text, "header")
		it.copyOut = st
		// The columns of a COPY are the table's, in order: name them from
		// the catalog when the statement copies a table.
		it.cols = nil
		it.plan = nil
		tables := it.c.cmd.Statement.Tables
		cols := []mask.Column{}
		if len(tables) == 1 && !strings.Contains(text, "(select") && !strings.Contains(text, "( select") {
			ok := false
			if r.catalog() != nil {
				cols, ok = r.catalog().tableColumns(tables[0])
			}
			if !ok {
				return r.failMask(errUnresolved)
			}
			if i := strings.Index(text, tables[0]+" ("); i >= 0 || strings.Contains(text, tables[0]+"(") {
				// A column list: mask by the listed names.
				cols = listedColumns(text, tables[0], cols)
			}
		}
		it.plan = it.c.masker.Plan(cols)
		it.plan.DryRun = it.c.verdict.Decision.Monitor
	}
	return writeMsg(r.cw, 'H', b)
}

// copyData masks one CopyData message of a masked COPY TO STDOUT.
func (r *relay) copyData(n int) error {
	r.mu.Lock()
	var it *item
	if len(r.pending) > 0 {
		it = r.pending[0]
	}
	r.mu.Unlock()
	if it == nil || it.copyOut == nil || it.plan == nil {
		return r.sr.forward(r.cw, n)
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
		return r.failMask(fmt.Errorf("mask COPY data: %w", err))
	}
	return writeMsg(r.cw, 'd', out)
}

// maskMessage runs an ErrorResponse or NoticeResponse's message, detail
// and hint through the value detectors of the statement in flight (or of
// the session's last masked statement): a unique violation's
// "Key (email)=(...)" must not leak.
func (r *relay) maskMessage(b []byte) []byte {
	r.mu.Lock()
	if len(r.pending) > 0 && r.pending[0].c.masker != nil {
		r.lastMasker = r.pending[0].c.masker
	}
	m := r.lastMasker
	r.mu.Unlock()
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
	return writeMsg(r.cw, 'N', r.maskMessage(b))
}

// resolveTables makes sure the catalog names every table a masked
// statement touches, by a catalog query on this connection at a safe
// point: no extended batch open, nothing in flight, the transaction not
// aborted. Outside a safe point it does nothing; a result whose columns
// stay unnamed then ends the session (failMask) rather than pass unmasked.
func (r *relay) resolveTables(c *command) error {
	if c.masker == nil || r.s.catalog == nil {
		return nil
	}
	names := c.cmd.Statement.Tables
	missing := r.catalog().missing(names)
	oids := r.catalog().wanted()
	if len(missing) == 0 && len(oids) == 0 {
		return nil
	}
	r.mu.Lock()
	safe := len(r.pending) == 0 && !r.openBatch && r.status != 'E'
	if safe {
		r.inject = &injection{done: make(chan error, 1)}
	}
	inj := r.inject
	r.mu.Unlock()
	if !safe {
		return nil
	}
	start := time.Now()
	if err := writeMsg(r.sw, 'Q', append([]byte(catalogQuery(missing, oids)), 0)); err != nil {
		return err
	}
	if err := r.sw.Flush(); err != nil {
		return err
	}
	select {
	case err := <-inj.done:
		if err != nil {
			return fmt.Errorf("catalog lookup: %w", err)
		}
	case <-time.After(10 * time.Second):
		return errors.New("catalog lookup: no answer within 10s")
	}
	r.catalog().markAbsent(missing)
	r.s.p.Log.Debug("catalog lookup", "tables", missing, "oids", len(oids), "duration_us", time.Since(start).Microseconds())
	return nil
}

func (r *relay) injecting() *injection {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inject
}

// injected consumes the answer to a catalog query; async messages
// (parameter status, notifications) still reach the client.
func (r *relay) injected(inj *injection, typ byte, n int) (bool, error) {
	switch typ {
	case 'S', 'A':
		return false, nil
	case 'D':
		b, err := r.sr.body(n)
		if err != nil {
			return true, r.serverErr(err)
		}
		vals := textValues(b)
		if len(vals) == 6 {
			oid, _ := strconv.ParseUint(vals[0], 10, 32)
			att, _ := strconv.ParseInt(vals[3], 10, 16)
			typ, _ := strconv.ParseUint(vals[5], 10, 32)
			r.catalog().add(uint32(oid), vals[1], vals[2], int16(att), vals[4], uint32(typ))
		}
		return true, nil
	case 'E':
		b, err := r.sr.body(n)
		if err != nil {
			return true, r.serverErr(err)
		}
		inj.err = fmt.Errorf("the server refused the catalog query: %s", errorCode(b))
		return true, nil
	case 'Z':
		if _, err := r.sr.body(n); err != nil {
			return true, r.serverErr(err)
		}
		r.mu.Lock()
		r.inject = nil
		r.mu.Unlock()
		inj.done <- inj.err
		return true, nil
	}
	_, err := r.sr.body(n) // RowDescription, CommandComplete, notices
	if err != nil {
		return true, r.serverErr(err)
	}
	return true, nil
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
