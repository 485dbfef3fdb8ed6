// Package mask redacts sensitive values on their way from a database to
// a CI job: in result rows, in COPY exports and in error and notice
// messages. It implements what a ruleset's mask blocks describe
// (ruleset.MaskSpec): column patterns, value detectors and the masking
// functions, and knows no wire protocol; the decoders hand it column
// descriptions, value bytes, COPY data and message text.
//
// # Use
//
// A decision's mask rules (ruleset.Decision.Masks) compile into a Masker
// with New, or through a Cache that keeps one per distinct rule list. For
// each result, Masker.Plan takes the result's columns and says, per
// column, what to do; when Plan.NeedsDecode is false no value of the
// result needs looking at and rows are relayed as they are. Otherwise
// Plan.Apply masks a text-format value, Plan.ApplyBinary a binary one,
// and Plan.CopyText, Plan.CopyCSV and Plan.CopyBinary mask COPY ... TO
// STDOUT data. Masker.Text masks an error or notice field.
//
// # Columns
//
// A column pattern is "column", "table.column" or "schema.table.column",
// each part a glob (* matches any run of characters, ? one character, \
// escapes the next); a part left out matches anything, so "email" and
// "*.email" mean the same. Names compare case-insensitively. A column with
// no origin (an expression such as lower(email), so Column.Table is
// empty) matches a pattern whose table and schema parts match anything,
// by its output name.
//
// When several patterns of the decision's mask rules match a column, the
// most specific wins: the pattern with the most parts written without
// glob characters; then the one with the most glob parts that are not a
// bare "*"; then the earlier rule (decision order, which is file order)
// and the earlier pattern in the rule. So "public.users.email" beats
// "users.email", which beats "users_*.email", which beats "*.email" and
// "email".
//
// # Detectors
//
// The detectors of every rule apply to every value of a column that no
// column pattern masks, in text-format values of any type and
// binary-format values of text types (see ApplyBinary), to every COPY
// field likewise, and to messages. Each detected span is replaced by the
// function of the first rule (in decision order) that lists the
// detector; a span found by a null rule makes the whole value NULL (in a
// message it is redacted). Overlapping spans merge, keeping the earlier
// span's function. The heuristics are documented on each detector in
// detect.go; in short: email, card_number (13-19 digits starting 2-6,
// Luhn), ssn (ddd-dd-dddd, unissued ranges excluded), iban (mod 97),
// phone (+ international, or North American with separators), jwt
// (header decodes to JSON with "alg"), aws_access_key (AKIA/ASIA + 16),
// private_key (PEM PRIVATE KEY blocks), secret (20+ characters mixing
// upper, lower and digits at 3.5+ bits of entropy per character, not a
// UUID), ip_address, and each custom detector's regular expression.
//
// Columns of types that cannot hold such text in text format (booleans,
// int2 and int4, floats, dates and times, UUIDs, oids) are not scanned
// when Column.Type says so. Other values of up to 512 bytes are profiled
// in one pass first (counts of digits and letters, digit runs, a few
// landmark bytes), and a built-in detector whose necessary conditions the
// profile rules out is not run: that changes what runs, never what is
// found.
//
// # Monitor mode
//
// A Plan with DryRun set masks nothing: it returns every value, row and
// COPY chunk unchanged, still reports changed where it would have masked,
// and counts what it would have masked per rule (Plan.Counts). For
// messages, Masker.Text's changed result says the same.
//
// # Concurrency
//
// A Masker is immutable and safe for concurrent use; a Plan belongs to
// one result on one goroutine.
package mask

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/sluicehq/sluice/ruleset"
)

var (
	// ErrUnknown means a mask spec names a function or detector this
	// package does not implement.
	ErrUnknown = errors.New("not implemented by the masker")
	// ErrPartialRow means COPY data ended inside a row. The proxy hands
	// whole CopyData messages, which PostgreSQL fills with whole rows; a
	// caller seeing this cannot mask the data and must fail closed.
	ErrPartialRow = errors.New("copy data ends inside a row")
	// ErrMalformed means COPY data does not parse in its format, or its
	// rows do not have the plan's number of columns. Fail closed.
	ErrMalformed = errors.New("malformed copy data")
)

// Masker is a compiled list of mask rules: the column patterns to match
// result columns against and the detectors to run over values. Build it
// with New or a Cache. It is immutable and safe for concurrent use.
type Masker struct {
	rules   []*ruleset.Rule
	columns []colPattern // in precedence order
	dets    []activeDet
	hasCol  bool
	profile bool // some detector has a need: profile values before scanning
}

// colPattern is one column pattern of one rule.
type colPattern struct {
	parts  [3]string // schema, table, column, lower-cased; "" for a part left out
	rule   int
	fn     Func
	anyTab bool // the schema and table parts match anything
	// Precedence: more literal parts, then more partial globs, then
	// earlier rule, then earlier pattern (the stable sort keeps order).
	literal, partial int
}

// activeDet is one detector of the masker, with the function of the
// first rule that lists it.
type activeDet struct {
	name string
	find finder
	fn   Func
	rule int
	null bool
	// need, when set, is what a value must have for find to find
	// anything (a built-in detector's); custom detectors always run.
	need *need
}

// New compiles the mask rules of a decision (rules with a Mask spec;
// others are ignored) with the hash key (see LoadOrCreateKey). It fails
// with ErrUnknown for a function or detector it does not implement,
// which a ruleset that loaded never names.
func New(rules []*ruleset.Rule, key []byte) (*Masker, error) {
	m := &Masker{rules: rules}
	k := sync.OnceValue(func() *keyed { return newKeyed(key) })
	seen := map[string]bool{}
	for ri, r := range rules {
		if r == nil || r.Mask == nil {
			continue
		}
		spec := r.Mask
		fn, err := funcFor(spec, k)
		if err != nil {
			return nil, fmt.Errorf("mask rule %s: %w", r.ID, err)
		}
		for _, p := range spec.Columns {
			cp, err := compilePattern(p)
			if err != nil {
				return nil, fmt.Errorf("mask rule %s: %w", r.ID, err)
			}
			cp.rule, cp.fn = ri, fn
			m.columns = append(m.columns, cp)
		}
		for _, name := range spec.Detect {
			if seen[name] {
				continue
			}
			f := builtins[name]
			if re := spec.Custom[name]; re != nil {
				f = regexFinder(re)
			}
			if f == nil {
				return nil, fmt.Errorf("mask rule %s: detector %q: %w", r.ID, name, ErrUnknown)
			}
			seen[name] = true
			d := activeDet{name: name, find: f, fn: fn, rule: ri, null: spec.Using == "null"}
			if nd, ok := needs[name]; ok && spec.Custom[name] == nil {
				d.need = &nd
				m.profile = true
			}
			m.dets = append(m.dets, d)
		}
	}
	slices.SortStableFunc(m.columns, func(a, b colPattern) int {
		if a.literal != b.literal {
			return b.literal - a.literal
		}
		return b.partial - a.partial
	})
	m.hasCol = len(m.columns) > 0
	return m, nil
}

// ByColumn reports whether the masker has column patterns: only then do
// a result column's origin (schema, table, column) matter to Plan.
func (m *Masker) ByColumn() bool { return m.hasCol }

// Rules returns the rules the masker was built from; Plan.Counts indexes
// them.
func (m *Masker) Rules() []*ruleset.Rule { return m.rules }

// Detectors returns the names of the detectors the masker runs, in the
// order they were first listed.
func (m *Masker) Detectors() []string {
	names := make([]string, len(m.dets))
	for i, d := range m.dets {
		names[i] = d.name
	}
	return names
}

func compilePattern(p string) (colPattern, error) {
	parts := ruleset.SplitColumnPattern(p)
	if len(parts) == 0 || len(parts) > 3 {
		return colPattern{}, fmt.Errorf("column pattern %q: want column, table.column or schema.table.column", p)
	}
	var cp colPattern
	// Right-align: the last part is the column.
	off := 3 - len(parts)
	for i, s := range parts {
		cp.parts[off+i] = strings.ToLower(s)
	}
	for _, s := range cp.parts {
		switch {
		case s == "" || s == "*":
		case !strings.ContainsAny(s, `*?\`):
			cp.literal++
		default:
			cp.partial++
		}
	}
	cp.anyTab = matchesAnything(cp.parts[0]) && matchesAnything(cp.parts[1])
	return cp, nil
}

func matchesAnything(s string) bool { return strings.Trim(s, "*") == "" }

// match reports whether the pattern covers c.
func (p *colPattern) match(c *Column) bool {
	if c.Table == "" && !p.anyTab {
		return false
	}
	return globFold(p.parts[2], c.Name) && globFold(p.parts[1], c.Table) && globFold(p.parts[0], c.Schema)
}

// globFold matches s against a lower-case glob pattern ("" matches
// anything), comparing case-insensitively.
func globFold(pattern, s string) bool {
	return pattern == "" || ruleset.MatchGlob(pattern, strings.ToLower(s))
}

// maxProfiled is the longest value scan profiles: a long text (a message,
// a document) almost always meets most detectors' needs, so profiling it
// costs a pass and saves little.
const maxProfiled = 512

// scan returns, in out's storage, the merged, sorted spans every
// detector finds in b. For a value of up to maxProfiled bytes, one pass
// over it first rules out the built-in detectors that cannot find
// anything in it (see need), which is most of them for most values.
func (m *Masker) scan(b []byte, out []span) []span {
	out = out[:0]
	var p profile
	gated := m.profile && len(b) <= maxProfiled
	if gated {
		p = profileOf(b)
	}
	for i := range m.dets {
		d := &m.dets[i]
		if gated && d.need != nil && !d.need.met(&p) {
			continue
		}
		out = d.find(b, i, out)
	}
	return mergeSpans(out)
}

// mergeSpans sorts spans by start and merges overlapping ones, keeping
// the earlier span's detector.
func mergeSpans(out []span) []span {
	if len(out) < 2 {
		return out
	}
	slices.SortStableFunc(out, func(a, b span) int { return a.lo - b.lo })
	w := 0
	for _, s := range out[1:] {
		if s.lo < out[w].hi {
			out[w].hi = max(out[w].hi, s.hi)
			continue
		}
		w++
		out[w] = s
	}
	return out[:w+1]
}

// Cache keeps one Masker per distinct list of mask rules, so a proxy can
// ask for the masker of every statement's decision without compiling it
// again. Rules are compared by identity: a reloaded ruleset's rules are
// new pointers and get new maskers. The cache holds at most a few
// thousand maskers and starts over when full. It is safe for concurrent
// use.
type Cache struct {
	key []byte
	mu  sync.Mutex
	m   map[*ruleset.Rule][]*Masker // by first rule
	n   int
}

// maxCached bounds the maskers a Cache holds.
const maxCached = 4096

// NewCache returns an empty cache whose maskers use key.
func NewCache(key []byte) *Cache {
	return &Cache{key: append([]byte(nil), key...), m: map[*ruleset.Rule][]*Masker{}}
}

// Masker returns the masker for rules, building it on first use.
func (c *Cache) Masker(rules []*ruleset.Rule) (*Masker, error) {
	if len(rules) == 0 {
		return New(nil, c.key)
	}
	c.mu.Lock()
	for _, m := range c.m[rules[0]] {
		if slices.Equal(m.rules, rules) {
			c.mu.Unlock()
			return m, nil
		}
	}
	c.mu.Unlock()
	m, err := New(slices.Clone(rules), c.key)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= maxCached {
		clear(c.m)
		c.n = 0
	}
	c.m[rules[0]] = append(c.m[rules[0]], m)
	c.n++
	return m, nil
}
