package postgres

import (
	"encoding/binary"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/enforcer/mask"
)

// Catalog names the column origins of one session's results: a
// RowDescription gives each column's table OID and attribute number, and
// mask rules are written with names. It is filled by lookups the proxy
// sends on the session's own connection, pipelined in front of the
// statement that needs them (see relay.lookup), so no safe point is
// needed: the server answers the lookup before it runs the statement.
//
// A catalog belongs to one session: names resolve through that session's
// search_path (a temporary table shadows a permanent one), and the
// session's own DDL invalidates what it learnt. It is bounded (maxRels
// relations, maxNames looked-up names); past a bound it starts over and
// looks up again. It is safe for concurrent use by the session's two
// goroutines.
type Catalog struct {
	mu       sync.Mutex
	rels     map[uint32]*relation
	resolved map[string]uint32 // name as the classifier reports it -> OID
	want     map[uint32]bool   // OIDs seen in results but not named
	// gen counts forget calls: a lookup sent before the last one (a DDL
	// statement sent after it may change what its names resolve to)
	// names relations but resolves no names.
	gen uint64
}

// Bounds of a session's catalog.
const (
	maxRels  = 4096
	maxNames = 4096
)

type relation struct {
	schema, name string
	cols         map[int16]string
	types        map[int16]uint32
}

func newCatalog() *Catalog {
	return &Catalog{rels: map[uint32]*relation{}, resolved: map[string]uint32{}, want: map[uint32]bool{}}
}

// unresolved returns the names that no answered lookup of this session
// covered, and the OIDs waiting for a name. Names stay unresolved until a
// lookup's answer arrives (apply): a lookup the server skips (an error
// earlier in its batch) must not leave later statements without one, so
// statements pipelined before the first answer each carry a lookup.
func (c *Catalog) unresolved(tables []string) ([]string, []uint32, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, t := range tables {
		if _, ok := c.resolved[t]; !ok {
			out = append(out, t)
		}
	}
	var oids []uint32
	for o := range c.want {
		oids = append(oids, o)
	}
	clear(c.want)
	return out, oids, c.gen
}

// forget drops what the session learnt by name, after DDL or a failed
// lookup: the next statement looks its tables up again.
func (c *Catalog) forget() {
	c.mu.Lock()
	clear(c.resolved)
	c.gen++
	c.mu.Unlock()
}

// column returns the schema, table and column of an origin, or ok=false.
func (c *Catalog) column(oid uint32, attnum int16) (schema, table, col string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rels[oid]
	if r == nil {
		return "", "", "", false
	}
	col, ok = r.cols[attnum]
	return r.schema, r.name, col, ok
}

// relationOf returns the schema and name of a table as the session last
// resolved the name the classifier reported.
func (c *Catalog) relationOf(name string) (schema, table string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rels[c.resolved[name]]
	if r == nil {
		return "", "", false
	}
	return r.schema, r.name, true
}

// wantOID notes a table OID a result showed that has no name yet; the
// session's next lookup asks for it.
func (c *Catalog) wantOID(oid uint32) {
	c.mu.Lock()
	if len(c.want) < maxNames {
		c.want[oid] = true
	}
	c.mu.Unlock()
}

// tableColumns returns a table's columns in attribute order, as COPY
// writes them.
func (c *Catalog) tableColumns(name string) ([]mask.Column, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rels[c.resolved[name]]
	if r == nil {
		return nil, false
	}
	nums := make([]int, 0, len(r.cols))
	for n := range r.cols {
		nums = append(nums, int(n))
	}
	sort.Ints(nums)
	out := make([]mask.Column, 0, len(nums))
	for _, n := range nums {
		out = append(out, mask.Column{Schema: r.schema, Table: r.name, Name: r.cols[int16(n)], Type: r.types[int16(n)]})
	}
	return out, true
}

// apply stores what one lookup returned: the relations it found replace
// what was known of them, and each asked name that resolved maps to its
// relation.
func (c *Catalog) apply(l *lookup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rels)+len(l.rels) > maxRels {
		clear(c.rels)
		clear(c.resolved)
	}
	if len(c.resolved)+len(l.names) > maxNames {
		clear(c.resolved)
	}
	for oid, r := range l.rels {
		c.rels[oid] = r
	}
	// A name that resolved to nothing is not remembered: the table may
	// be created by another session, and the next statement naming it
	// looks it up again.
	for _, n := range l.names {
		if oid, ok := l.byName[n]; ok && l.gen == c.gen {
			c.resolved[n] = oid
		}
	}
}

// lookup is one catalog lookup in flight: the names and OIDs asked for,
// and the rows the server returned so far.
type lookup struct {
	gen    uint64 // the catalog's generation when it was sent
	names  []string
	oids   []uint32
	rels   map[uint32]*relation
	byName map[string]uint32
}

// row takes one DataRow of the lookup's answer (text format: oid, schema,
// table, attnum, column, type, and the name asked for or "").
func (l *lookup) row(b []byte) {
	v := textValues(b)
	if len(v) != 7 {
		return
	}
	oid, err1 := strconv.ParseUint(v[0], 10, 32)
	att, err2 := strconv.ParseInt(v[3], 10, 16)
	typ, err3 := strconv.ParseUint(v[5], 10, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return
	}
	r := l.rels[uint32(oid)]
	if r == nil {
		if l.rels == nil {
			l.rels, l.byName = map[uint32]*relation{}, map[string]uint32{}
		}
		r = &relation{schema: v[1], name: v[2], cols: map[int16]string{}, types: map[int16]uint32{}}
		l.rels[uint32(oid)] = r
	}
	r.cols[int16(att)] = v[4]
	r.types[int16(att)] = uint32(typ)
	if v[6] != "" {
		l.byName[v[6]] = uint32(oid)
	}
}

// lookupSQL finds the columns of the tables named in $1 (schemas, "" for
// a name the search_path resolves) and $2 (names), and of the relations
// whose OIDs are in $3. Every value is a parameter: nothing a client
// chose is ever part of the text, and every operator is pg_catalog's, so
// neither standard_conforming_strings nor a search_path the session set
// changes what runs.
const lookupSQL = `SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.atttypid, t.asked
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
JOIN (SELECT s, r, CASE WHEN s OPERATOR(pg_catalog.=) '' THEN r ELSE s OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) r END AS asked
      FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS u(s, r)) t
  ON c.relname OPERATOR(pg_catalog.=) t.r
 AND CASE WHEN t.s OPERATOR(pg_catalog.=) '' THEN pg_catalog.pg_table_is_visible(c.oid) ELSE n.nspname OPERATOR(pg_catalog.=) t.s END
WHERE a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
UNION ALL
SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.atttypid, ''
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
WHERE c.oid OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.oid[])
  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped`

// OIDs of the array types the lookup's parameters use.
const (
	oidTextArray = 1009
	oidOIDArray  = 1028
	oidText      = 25
	oidOID       = 26
)

// lookupMessages appends the lookup for names and oids as extended-protocol
// messages with the session's private statement and portal name: Parse,
// Bind (binary array parameters), Execute, and Close of both, so nothing
// of it outlives the lookup. With sync, a Sync ends it (a lookup of its
// own, in front of a simple Query).
func lookupMessages(buf []byte, name string, names []string, oids []uint32, sync bool) []byte {
	schemas := make([][]byte, len(names))
	rels := make([][]byte, len(names))
	for i, t := range names {
		s, r, qualified := strings.Cut(t, ".")
		if !qualified {
			s, r = "", s
		}
		schemas[i], rels[i] = []byte(s), []byte(r)
	}
	ids := make([][]byte, len(oids))
	for i, o := range oids {
		ids[i] = binary.BigEndian.AppendUint32(nil, o)
	}
	msgs := []pgproto3.FrontendMessage{
		&pgproto3.Parse{Name: name, Query: lookupSQL, ParameterOIDs: []uint32{oidTextArray, oidTextArray, oidOIDArray}},
		&pgproto3.Bind{DestinationPortal: name, PreparedStatement: name, ParameterFormatCodes: []int16{1},
			Parameters: [][]byte{binaryArray(oidText, schemas), binaryArray(oidText, rels), binaryArray(oidOID, ids)}},
		&pgproto3.Execute{Portal: name},
		&pgproto3.Close{ObjectType: 'P', Name: name},
		&pgproto3.Close{ObjectType: 'S', Name: name},
	}
	if sync {
		msgs = append(msgs, &pgproto3.Sync{})
	}
	for _, m := range msgs {
		buf, _ = m.Encode(buf) // encoding these fixed shapes cannot fail
	}
	return buf
}

// binaryArray encodes a one-dimensional array of non-null elements of
// type elem in PostgreSQL's binary format.
func binaryArray(elem uint32, vals [][]byte) []byte {
	if len(vals) == 0 {
		b := binary.BigEndian.AppendUint32(nil, 0) // no dimensions: empty
		b = binary.BigEndian.AppendUint32(b, 0)
		return binary.BigEndian.AppendUint32(b, elem)
	}
	b := binary.BigEndian.AppendUint32(nil, 1) // dimensions
	b = binary.BigEndian.AppendUint32(b, 0)    // no NULLs
	b = binary.BigEndian.AppendUint32(b, elem)
	b = binary.BigEndian.AppendUint32(b, uint32(len(vals)))
	b = binary.BigEndian.AppendUint32(b, 1) // lower bound
	for _, v := range vals {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}
