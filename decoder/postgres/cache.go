package postgres

import (
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/ruleset"
)

// Cache classifies statements once per distinct text. A lookup tries the
// exact text first (prepared statements and repeated queries), then
// PostgreSQL's own normalised text (literals replaced by $n: same structure,
// same classification), and only then parses. The key is never produced by
// a home-made lexer: one that disagreed with PostgreSQL's would be a bypass.
// A classification that looked at a literal's value (set_config's first
// argument, say) is stored under its exact text only, so it is never
// reused for a statement that differs in that value.
//
// The cache is bounded in entries and in bytes: each generation holds at
// most max entries and CacheBytes/2 bytes (texts and classifications), and
// when the current one fills it becomes the previous one (two
// generations, a cheap approximation of LRU). A text longer than
// MaxCachedText bypasses the cache: it is neither looked up nor normalised
// nor stored, but parsed every time (normalising 1 MiB costs about as much
// as parsing it, and its normalised form is rarely short enough to be
// stored). It is safe for concurrent use by every session.
type Cache struct {
	max int

	mu        sync.Mutex
	cur, prev map[string]entry
	curBytes  int
}

// Bounds of the classification cache's memory.
const (
	// CacheBytes bounds what the cache holds, both generations together.
	CacheBytes = 32 << 20
	// MaxCachedText is the longest statement text the cache looks up or
	// stores.
	MaxCachedText = 64 << 10
)

type entry struct {
	st  ruleset.Statement
	err error
}

// NewCache returns a cache holding up to 2*max texts. max <= 0 means 4096.
func NewCache(max int) *Cache {
	if max <= 0 {
		max = 4096
	}
	return &Cache{max: max, cur: make(map[string]entry, max)}
}

// Classify returns the classification of text, from the cache when it can.
// The returned Statement's Text is text itself; its slices are shared and
// must not be modified.
func (c *Cache) Classify(text string) (ruleset.Statement, error) {
	if len(text) > MaxCachedText {
		st, _, err := ClassifyForCache(text)
		return st, err
	}
	if e, ok := c.get(text); ok {
		e.st.Text = text
		return e.st, e.err
	}
	norm, nerr := pg_query.Normalize(text)
	if nerr == nil && norm != text {
		if e, ok := c.get(norm); ok {
			c.put(text, e)
			e.st.Text = text
			return e.st, e.err
		}
	}
	st, literalFree, err := ClassifyForCache(text)
	e := entry{st: st, err: err}
	c.put(text, e)
	if literalFree && nerr == nil && norm != text {
		c.put(norm, e)
	}
	return st, err
}

func (c *Cache) get(k string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[k]; ok {
		return e, true
	}
	if e, ok := c.prev[k]; ok {
		c.putLocked(k, e)
		return e, true
	}
	return entry{}, false
}

func (c *Cache) put(k string, e entry) {
	if len(k) > MaxCachedText { // a normalised text can be longer than its source
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, e)
}

func (c *Cache) putLocked(k string, e entry) {
	n := entrySize(k, e)
	if len(c.cur) >= c.max || c.curBytes+n > CacheBytes/2 {
		c.prev, c.cur, c.curBytes = c.cur, make(map[string]entry, c.max), 0
	}
	e.st.Text = ""
	c.cur[k] = e
	c.curBytes += n
}

// entrySize estimates what an entry holds in memory: its key, the
// strings of its classification, and fixed overheads.
func entrySize(k string, e entry) int {
	n := len(k) + 160
	for _, l := range [][]string{e.st.Tables, e.st.Functions, e.st.Flags} {
		for _, v := range l {
			n += len(v) + 16
		}
	}
	if e.err != nil {
		n += len(e.err.Error()) + 32
	}
	return n
}
