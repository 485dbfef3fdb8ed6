package postgres

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestCacheNeverSharesLiteralDependentResults: a classification that
// depends on a literal's value is not reused through the normalised key.
func TestCacheNeverSharesLiteralDependentResults(t *testing.T) {
	c := NewCache(16)
	first, err := c.Classify("SELECT set_config('work_mem', '1MB', false)")
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(first.Flags, FlagSearchPath) {
		t.Fatalf("work_mem flagged as search_path: %v", first.Flags)
	}
	second, err := c.Classify("SELECT set_config('search_path', 'evil', false)")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(second.Flags, FlagSearchPath) {
		t.Fatalf("set_config of search_path after a cached set_config of work_mem: flags %v, want search_path", second.Flags)
	}
}

// TestCacheNormalizedHit: texts differing only in literals share one
// classification, and each keeps its own text.
func TestCacheNormalizedHit(t *testing.T) {
	c := NewCache(16)
	a, _ := c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
	b, _ := c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 2")
	if a.Kind != "select" || b.Kind != "select" || b.Text != "SELECT abalance FROM pgbench_accounts WHERE aid = 2" || !b.HasWhere {
		t.Errorf("a = %+v, b = %+v", a, b)
	}
	if n, _ := c.Size(); n != 3 {
		t.Errorf("cache holds %d keys, want 3 (two texts and one normalised form)", n)
	}
	if _, err := c.Classify("SELEC 1"); err == nil {
		t.Error("a parse error was not returned")
	}
	if _, err := c.Classify("SELEC 1"); err == nil {
		t.Error("a cached parse error was not returned")
	}
}

// BenchmarkCacheHit measures the per-statement cost on the hot path: a
// repeated pgbench -S query with a new literal each time (normalised hit)
// and the exact same text (exact hit).
func BenchmarkCacheHit(b *testing.B) {
	c := NewCache(0)
	c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
	b.Run("exact", func(b *testing.B) {
		for b.Loop() {
			c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;")
		}
	})
	b.Run("normalized", func(b *testing.B) {
		texts := []string{"SELECT abalance FROM pgbench_accounts WHERE aid = 7;", "SELECT abalance FROM pgbench_accounts WHERE aid = 8;"}
		i := 0
		for b.Loop() {
			c.Forget(texts[i%2])
			c.Classify(texts[i%2])
			i++
		}
	})
}

// TestCacheBoundedInBytes: many distinct large statements keep the cache
// within CacheBytes, and a text above MaxCachedText is never stored.
func TestCacheBoundedInBytes(t *testing.T) {
	c := NewCache(0)
	pad := strings.Repeat("x", 60<<10)
	for i := 0; i < 2000; i++ {
		c.Classify(fmt.Sprintf("SELECT %d /* %s */", i, pad))
	}
	_, total := c.Size()
	if total > CacheBytes {
		t.Fatalf("cache holds %d bytes, bound %d", total, CacheBytes)
	}
	big := "SELECT 1 /* " + strings.Repeat("y", MaxCachedText) + " */"
	if _, err := c.Classify(big); err != nil {
		t.Fatal(err)
	}
	before, _ := c.Size()
	if _, err := c.Classify(big); err != nil {
		t.Fatal(err)
	}
	if after, _ := c.Size(); after != before {
		t.Fatal("a text above MaxCachedText was stored")
	}
}

// TestCacheLargeTextBypass: a text above MaxCachedText is classified as
// ClassifyForCache classifies it (the cache is only a shortcut), leaves
// nothing in the cache, and a denied kind stays denied every time.
func TestCacheLargeTextBypass(t *testing.T) {
	c := NewCache(16)
	pad := strings.Repeat("x", MaxCachedText)
	for _, text := range []string{
		"DROP TABLE victim /* " + pad + " */",
		"SELECT '" + pad + "' FROM users",
		"DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$ /* " + pad + " */",
	} {
		want, _, werr := ClassifyForCache(text)
		for i := 0; i < 2; i++ {
			got, err := c.Classify(text)
			if (err == nil) != (werr == nil) || got.Kind != want.Kind || !slices.Equal(got.Tables, want.Tables) ||
				!slices.Equal(got.Flags, want.Flags) || got.Text != text {
				t.Errorf("%.40s...: got %+v %v, want %+v %v", text, got.Kind, err, want.Kind, werr)
			}
		}
	}
	if n, _ := c.Size(); n != 0 {
		t.Errorf("cache holds %d entries after texts above MaxCachedText only", n)
	}
}

// TestCacheHitAllocs: a hit, exact or through the normalised text,
// allocates nothing in the cache itself (pg_query's normaliser allocates
// its result).
func TestCacheHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	c := NewCache(0)
	const q = "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
	c.Classify(q)
	if n := testing.AllocsPerRun(1000, func() { c.Classify(q) }); n != 0 {
		t.Errorf("exact hit: %v allocations, want 0", n)
	}
}

// BenchmarkCacheLargeText: a distinct 1 MiB statement each time (a long
// comment), the shape e2e/bounds_test.go floods the proxy with. Such a
// text is never stored; this is what classifying it costs.
func BenchmarkCacheLargeText(b *testing.B) {
	c := NewCache(0)
	pad := strings.Repeat("x", 1<<20)
	i := 0
	b.SetBytes(1 << 20)
	for b.Loop() {
		c.Classify(fmt.Sprintf("DROP TABLE t%d /* %s */", i, pad))
		i++
	}
}
