package postgres

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/decoder"
)

// Cache is the shared classification cache (decoder.Cache), here with
// PostgreSQL's classifier and PostgreSQL's own normaliser.
type Cache = decoder.Cache

// Bounds of the classification cache's memory (decoder.CacheBytes,
// decoder.MaxCachedText).
const (
	CacheBytes    = decoder.CacheBytes
	MaxCachedText = decoder.MaxCachedText
)

// NewCache returns a classification cache for PostgreSQL statements
// holding up to 2*max texts (max <= 0 means 4096): exact text first, then
// pg_query's normalised text, then a real parse.
func NewCache(max int) *Cache {
	return decoder.NewCache(max, ClassifyForCache, pg_query.Normalize)
}
