package decoder

import (
	"sync"

	"github.com/sluicehq/sluice/ruleset"
)

// Classifier classifies a command's text for the ruleset. literalFree
// says the classification never looked at a literal's value, so every
// text with the same normalised form shares it.
type Classifier func(text string) (st ruleset.Statement, literalFree bool, err error)

// Normalizer returns a text's normalised form, with literals replaced: the
// protocol's own (PostgreSQL's pg_query.Normalize), never a home-made
// lexer, since one that disagreed with the server's would be a bypass.
type Normalizer func(text string) (string, error)

// Cache classifies commands once per distinct text, for every protocol
// whose commands are text (a Classifier and a Normalizer of its own). A
// lookup tries the exact text first (prepared statements and repeated
// queries), then the protocol's own normalised text (literals replaced:
// same structure, same classification), and only then classifies. The key
// is never produced by a home-made lexer: one that disagreed with the
// server's would be a bypass.
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
	max       int
	classify  Classifier
	normalize Normalizer

	mu                  sync.Mutex
	cur, prev           map[string]entry
	curBytes, prevBytes int
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

// NewCache returns a cache holding up to 2*max texts, classifying with
// classify and normalising with normalize. max <= 0 means 4096.
func NewCache(max int, classify Classifier, normalize Normalizer) *Cache {
	if max <= 0 {
		max = 4096
	}
	return &Cache{max: max, classify: classify, normalize: normalize, cur: make(map[string]entry, max)}
}

// Classify returns the classification of text, from the cache when it can.
// The returned Statement's Text is text itself; its slices are shared and
// must not be modified.
func (c *Cache) Classify(text string) (ruleset.Statement, error) {
	if len(text) > MaxCachedText {
		st, _, err := c.classify(text)
		st.Text = text
		return st, err
	}
	if e, ok := c.get(text); ok {
		e.st.Text = text
		return e.st, e.err
	}
	norm, nerr := c.normalize(text)
	if nerr == nil && norm != text {
		if e, ok := c.get(norm); ok {
			c.put(text, e)
			e.st.Text = text
			return e.st, e.err
		}
	}
	st, literalFree, err := c.classify(text)
	st.Text = text
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
		c.prev, c.cur = c.cur, make(map[string]entry, c.max)
		c.prevBytes, c.curBytes = c.curBytes, 0
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

// Size returns how many texts the cache holds and its estimate of their
// bytes, both generations together.
func (c *Cache) Size() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev), c.curBytes + c.prevBytes
}

// Forget drops text, so its next Classify classifies it again.
func (c *Cache) Forget(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[text]; ok {
		c.curBytes -= entrySize(text, e)
		delete(c.cur, text)
	}
	if e, ok := c.prev[text]; ok {
		c.prevBytes -= entrySize(text, e)
		delete(c.prev, text)
	}
}
