package postgres

import (
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sluicehq/sluice/enforcer/mask"
)

// Catalog maps table OIDs to names for one database, so a RowDescription's
// column origins (table OID, attribute number) can be matched against mask
// rules written with names. It is filled by catalog queries the proxy runs
// on the client's own connection at safe points (no extended-protocol
// batch open, no aborted transaction), and shared by every session to the
// same database. It is safe for concurrent use.
type Catalog struct {
	mu     sync.Mutex
	rels   map[uint32]*relation
	byName map[string]uint32 // table name as the classifier reports it -> OID
	want   map[uint32]bool   // OIDs seen in results but not yet named
}

type relation struct {
	schema, name string
	cols         map[int16]string
	types        map[int16]uint32
}

// Catalogs hands out one Catalog per database of a server.
type Catalogs struct {
	mu sync.Mutex
	m  map[string]*Catalog
}

// NewCatalogs returns an empty set.
func NewCatalogs() *Catalogs { return &Catalogs{m: map[string]*Catalog{}} }

// For returns the catalog of database db on server addr.
func (cs *Catalogs) For(addr, db string) *Catalog {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	k := addr + "/" + db
	c := cs.m[k]
	if c == nil {
		c = &Catalog{rels: map[uint32]*relation{}, byName: map[string]uint32{}, want: map[uint32]bool{}}
		cs.m[k] = c
	}
	return c
}

// missing returns the table names not yet resolved.
func (c *Catalog) missing(tables []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, t := range tables {
		if _, ok := c.byName[t]; !ok {
			out = append(out, t)
		}
	}
	return out
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

// add records one catalog row.
func (c *Catalog) add(oid uint32, schema, table string, attnum int16, col string, typ uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rels[oid]
	if r == nil {
		r = &relation{schema: schema, name: table, cols: map[int16]string{}, types: map[int16]uint32{}}
		c.rels[oid] = r
	}
	r.cols[attnum] = col
	r.types[attnum] = typ
	c.byName[table] = oid
	c.byName[schema+"."+table] = oid
	delete(c.want, oid)
}

// wantOID notes a table OID a result showed that has no name yet; the
// next catalog query at a safe point looks it up.
func (c *Catalog) wantOID(oid uint32) {
	c.mu.Lock()
	c.want[oid] = true
	c.mu.Unlock()
}

// wanted returns the OIDs waiting for a name.
func (c *Catalog) wanted() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]uint32, 0, len(c.want))
	for o := range c.want {
		out = append(out, o)
	}
	return out
}

// tableColumns returns a table's columns in attribute order, as COPY
// writes them.
func (c *Catalog) tableColumns(name string) ([]mask.Column, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	oid := c.byName[name]
	r := c.rels[oid]
	if oid == 0 || r == nil {
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

// markAbsent remembers names that resolved to nothing (a CTE name, a
// table created later in the same statement), so they are not looked up
// again and again. A later catalog query that finds them overrides this.
func (c *Catalog) markAbsent(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		if _, ok := c.byName[n]; !ok {
			c.byName[n] = 0
		}
	}
}

// catalogQuery is the lookup for tables named as the classifier reports
// them ("users", "public.users"), matching names exactly (quoted or not,
// the parser has already folded them) and, without a schema, the table
// the session's search_path makes visible.
func catalogQuery(tables []string, oids []uint32) string {
	var conds []string
	if len(oids) > 0 {
		ids := make([]string, len(oids))
		for i, o := range oids {
			ids[i] = strconv.FormatUint(uint64(o), 10)
		}
		conds = append(conds, "c.oid = ANY ('{"+strings.Join(ids, ",")+"}'::pg_catalog.oid[])")
	}
	for _, t := range tables {
		schema, name, qualified := strings.Cut(t, ".")
		if !qualified {
			name, schema = schema, ""
		}
		if schema == "" {
			conds = append(conds, "(c.relname = "+literal(name)+" AND pg_catalog.pg_table_is_visible(c.oid))")
		} else {
			conds = append(conds, "(c.relname = "+literal(name)+" AND n.nspname = "+literal(schema)+")")
		}
	}
	return "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.atttypid FROM pg_catalog.pg_class c" +
		" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace" +
		" JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid" +
		" WHERE a.attnum > 0 AND NOT a.attisdropped AND (" + strings.Join(conds, " OR ") + ")"
}

// literal quotes s as a standard SQL string literal.
func literal(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, "\x00", ""), "'", "''") + "'"
}
