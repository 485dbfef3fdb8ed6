package mysql

import (
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	perrors "github.com/pingcap/errors"
	"github.com/pingcap/tidb/pkg/parser"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

// maxDialects bounds how many dialects a Cache keeps a cache for. Dialects
// come from servers (version, status flags), not from clients, so a daemon
// sees a handful; past the bound, statements are classified uncached.
const maxDialects = 16

// Cache classifies MySQL statements once per distinct text and dialect:
// one decoder.Cache per Dialect (exact text, then the normalized text,
// then a real parse), since the same text can classify differently under
// another server or sql_mode. It is safe for concurrent use by every
// session of the daemon.
type Cache struct {
	max int

	mu     sync.Mutex                                 // serializes adding a dialect
	caches atomic.Pointer[map[Dialect]*decoder.Cache] // replaced, never changed: lookups take no lock
}

// NewCache returns a cache holding up to 2*max texts per dialect (max <= 0
// means 4096), for up to 16 dialects.
func NewCache(max int) *Cache {
	c := &Cache{max: max}
	c.caches.Store(&map[Dialect]*decoder.Cache{})
	return c
}

// Classify returns ClassifyIn(d, text), from the cache when it can. The
// returned Statement's Text is text; its slices are shared and must not be
// modified.
func (c *Cache) Classify(d Dialect, text string) (ruleset.Statement, error) {
	dc := c.forDialect(d)
	if dc == nil {
		return ClassifyIn(d, text)
	}
	return dc.Classify(text)
}

// forDialect returns the cache of d, making it if there is room; nil when
// there is none.
func (c *Cache) forDialect(d Dialect) *decoder.Cache {
	if dc, ok := (*c.caches.Load())[d]; ok {
		return dc
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.caches.Load()
	if dc, ok := old[d]; ok {
		return dc
	}
	if len(old) >= maxDialects {
		return nil
	}
	dc := decoder.NewCache(c.max,
		func(text string) (ruleset.Statement, bool, error) { return ClassifyForCache(d, text) },
		normalizer(d))
	m := make(map[Dialect]*decoder.Cache, len(old)+1)
	maps.Copy(m, old)
	m[d] = dc
	c.caches.Store(&m)
	return dc
}

// errNoNormalize makes the cache skip its normalized key for a text.
var errNoNormalize = errors.New("no normalized text")

// normalizer returns the cache's second-level key for d: TiDB's
// parser.Normalize (literals replaced by ?) of the text with its
// executable comments applied, so that two texts share a key only when
// what the server runs differs in literals alone. Normalize lexes with
// TiDB's defaults (backslash escapes on, "..." a string, utf8mb4), so a
// dialect that lexes otherwise has no normalized key, nor does a text
// with an optimizer hint (Normalize drops hints, and a MySQL SET_VAR hint
// is a flag). Normalize stops without a word at a token its lexer finds
// invalid, and the part it left out would be missing from the key: a
// sentinel word after the text must come out at the end, or the text has
// no normalized key.
func normalizer(d Dialect) decoder.Normalizer {
	if d.NoBackslashEscapes || d.ANSIQuotes || d.multibyteTrail() {
		return func(string) (string, error) { return "", errNoNormalize }
	}
	return func(text string) (norm string, err error) {
		defer func() {
			if recover() != nil { // as the parser can (see classifyAll)
				norm, err = "", errNoNormalize
			}
		}()
		expanded, hints, err := expand(d, text)
		if err != nil {
			return "", err
		}
		if hints || strings.Contains(expanded, sentinel) {
			return "", errNoNormalize
		}
		norm = parser.Normalize(expanded+"\n"+sentinel, perrors.RedactLogEnable)
		cut, ok := strings.CutSuffix(norm, "`"+sentinel+"`")
		if !ok {
			return "", errNoNormalize
		}
		return strings.TrimSpace(cut), nil
	}
}

// sentinel ends the text the normalizer gives Normalize; see normalizer.
const sentinel = "sluice_end_of_text"
