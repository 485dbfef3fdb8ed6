package mysql

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// TestCacheDialectKeyed: the same text classifies per dialect, whichever
// dialect saw it first.
func TestCacheDialectKeyed(t *testing.T) {
	const q = "SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */"
	for _, order := range [][]Dialect{{mySQL, mariaDB}, {mariaDB, mySQL}} {
		c := NewCache(16)
		for _, d := range order {
			for i := 0; i < 2; i++ { // a miss, then a hit
				st, err := c.Classify(d, q)
				if err != nil {
					t.Fatal(err)
				}
				if got := slices.Contains(st.Flags, FlagLoadFile); got != d.MariaDB {
					t.Errorf("%+v after %+v: load_file %t, want %t", d, order[0], got, d.MariaDB)
				}
				if st.Text != q {
					t.Errorf("Text = %q", st.Text)
				}
			}
		}
	}
}

// TestCacheNormalizedKeyExpandsComments: Normalize alone drops every
// comment, so "SELECT 1" and "SELECT 1 /*M! , LOAD_FILE(...) */" would
// share a key; the cache normalizes the expanded text.
func TestCacheNormalizedKeyExpandsComments(t *testing.T) {
	c := NewCache(16)
	for _, q := range []string{"SELECT 1", "SELECT 2 /* x */", "SELECT 3 -- x"} {
		if _, err := c.Classify(mariaDB, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */",
		"SELECT 1 /*! , LOAD_FILE('/etc/passwd') */",
		"SELECT 1 /*!100000 , LOAD_FILE('/etc/passwd') */",
	} {
		st, err := c.Classify(mariaDB, q)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(st.Flags, FlagLoadFile) {
			t.Errorf("%q after cached harmless texts: %+v, want load_file", q, st)
		}
	}
}

// TestCacheNeverSharesLiteralDependentResults: PREPARE's text is a value;
// another PREPARE with the same normalized text is classified anew.
func TestCacheNeverSharesLiteralDependentResults(t *testing.T) {
	c := NewCache(16)
	first, err := c.Classify(mariaDB, "PREPARE s FROM 'SELECT 1'")
	if err != nil || first.Kind != "select" {
		t.Fatalf("first = %+v, %v", first, err)
	}
	second, err := c.Classify(mariaDB, "PREPARE s FROM 'DROP TABLE users'")
	if err != nil {
		t.Fatal(err)
	}
	if second.Kind != "drop" || !reflect.DeepEqual(second.Tables, []string{"users"}) {
		t.Errorf("PREPARE of a DROP after a cached PREPARE of a SELECT: %+v", second)
	}
}

// TestCacheNormalizedHit: texts differing only in literals share one
// classification, and each keeps its own text.
func TestCacheNormalizedHit(t *testing.T) {
	c := NewCache(16)
	a, _ := c.Classify(mariaDB, "SELECT a FROM t WHERE id = 1")
	b, _ := c.Classify(mariaDB, "SELECT a FROM t WHERE id = 2")
	if a.Kind != "select" || b.Kind != "select" || b.Text != "SELECT a FROM t WHERE id = 2" || !b.HasWhere {
		t.Errorf("a = %+v, b = %+v", a, b)
	}
	if n := c.size(mariaDB); n != 3 {
		t.Errorf("cache holds %d keys, want 3 (two texts and one normalized form)", n)
	}
	if _, err := c.Classify(mariaDB, "SELEC 1"); err == nil {
		t.Error("a parse error was not returned")
	}
	if _, err := c.Classify(mariaDB, "SELEC 1"); err == nil {
		t.Error("a cached parse error was not returned")
	}
}

// TestCacheNoNormalizedKey: dialects that lex otherwise than Normalize,
// and texts with hints, are cached by their exact text only.
func TestCacheNoNormalizedKey(t *testing.T) {
	for _, tt := range []struct {
		d    Dialect
		a, b string
	}{
		{Dialect{MariaDB: true, Version: 101100, NoBackslashEscapes: true}, "SELECT 'a\\' FROM t", "SELECT 'b\\' FROM t"},
		{Dialect{MariaDB: true, Version: 101100, ANSIQuotes: true}, `SELECT "a" FROM t`, `SELECT "b" FROM t`},
		{Dialect{MariaDB: true, Version: 101100, Charset: "gbk"}, "SELECT 1", "SELECT 2"},
		{mySQL, "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", "SELECT /*+ MAX_EXECUTION_TIME(1) */ 2"},
		{mariaDB, "SELECT 1 x'zz'", "SELECT 2 x'zz'"}, // Normalize stops at the invalid literal
	} {
		c := NewCache(16)
		c.Classify(tt.d, tt.a)
		c.Classify(tt.d, tt.b)
		if n := c.size(tt.d); n != 2 {
			t.Errorf("%+v: cache holds %d keys after %q and %q, want 2", tt.d, n, tt.a, tt.b)
		}
	}
}

// TestNormalizerStopsAtInvalidTokens: Normalize ends early at a token its
// lexer finds invalid; the normalizer then gives no key, so a text cannot
// borrow the classification of its prefix.
func TestNormalizerStopsAtInvalidTokens(t *testing.T) {
	n := normalizer(mariaDB)
	if k, err := n("SELECT 1"); err != nil || k != "select ?" {
		t.Errorf("normalizer(SELECT 1) = %q, %v", k, err)
	}
	if k, err := n("SELECT 1 x'zz', LOAD_FILE('/x')"); err == nil {
		t.Errorf("normalizer of a text with an invalid literal = %q, want an error", k)
	}
	if k, err := n("SELECT sluice_end_of_text"); err == nil {
		t.Errorf("normalizer of a text holding the sentinel = %q, want an error", k)
	}
}

// TestCacheDialectBound: past maxDialects, statements are classified
// uncached, and correctly.
func TestCacheDialectBound(t *testing.T) {
	c := NewCache(4)
	for v := 1; v <= maxDialects+4; v++ {
		d := Dialect{MariaDB: true, Version: 100000 + v}
		st, err := c.Classify(d, fmt.Sprintf("SELECT 1 /*M!%d , LOAD_FILE(1) */", 100000+v))
		if err != nil || !slices.Contains(st.Flags, FlagLoadFile) {
			t.Errorf("dialect %d: %+v, %v", v, st, err)
		}
	}
	if n := len(*c.caches.Load()); n != maxDialects {
		t.Errorf("%d dialect caches, want %d", n, maxDialects)
	}
}

// TestCacheConcurrent: sessions of several dialects share one cache (run
// with -race).
func TestCacheConcurrent(t *testing.T) {
	c := NewCache(64)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := []Dialect{mariaDB, mySQL}[g%2]
			for i := 0; i < 100; i++ {
				st, err := c.Classify(d, fmt.Sprintf("SELECT a /*M! , LOAD_FILE(1) */ FROM t WHERE id = %d", i%7))
				if err != nil || slices.Contains(st.Flags, FlagLoadFile) != d.MariaDB {
					t.Errorf("%+v: %+v, %v", d, st, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestNormalizedKeySound is the cache's invariant: when two texts have the
// same normalized key and one classifies literal-free, the other
// classifies the same.
func TestNormalizedKeySound(t *testing.T) {
	groups := [][]string{
		{"PREPARE s FROM 'SELECT 1'", "PREPARE s FROM 'DROP TABLE t'", "PREPARE s FROM 'SELECT LOAD_FILE(1)'"},
		{"SELECT 1", "SELECT 1 /*M! , LOAD_FILE(1) */", "SELECT 1 /*!99999 , LOAD_FILE(1) */", "SELECT 2 -- , LOAD_FILE(1)"},
		{"LOAD DATA INFILE 'a' INTO TABLE t", "LOAD DATA LOCAL INFILE 'a' INTO TABLE t", "LOAD DATA /*!LOCAL*/ INFILE 'b' INTO TABLE t"},
		{"SELECT * FROM t INTO OUTFILE '/tmp/a'", "SELECT * FROM t", "SELECT * FROM t INTO @a"},
		{"SET sql_mode = 'ANSI'", "SET sql_mode = ''", "SET @@sql_mode = 'x'", "SET @x = 'ANSI'", "SET GLOBAL sql_mode = ''"},
		{"SET NAMES utf8mb4", "SET NAMES gbk", "SET NAMES 'gbk'"},
		{"SELECT * FROM t USE INDEX (i) WHERE a = 1", "SELECT * FROM t WHERE a = 1", "SELECT * FROM t FORCE INDEX (j) WHERE a = 2"},
		{"SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT 1, 10", "SELECT * FROM t"},
		{"SELECT _utf8mb4'a'", "SELECT _gbk'a'", "SELECT 'a'", "SELECT -1", "SELECT +1", "SELECT 1"},
		{"INSERT INTO t VALUES (1), (2)", "INSERT INTO t VALUES (1)", "REPLACE INTO t VALUES (1)"},
		{"SELECT a FROM t WHERE b IN (1, 2, 3)", "SELECT a FROM t WHERE b IN (1)", "SELECT a FROM t WHERE b IN (SELECT c FROM u)"},
		{"SELECT STRAIGHT_JOIN * FROM a JOIN b", "SELECT * FROM a JOIN b", "SELECT * FROM a STRAIGHT_JOIN b"},
	}
	n := normalizer(mariaDB)
	for _, g := range groups {
		type res struct {
			sql, norm string
			st        ruleset.Statement
			lf        bool
		}
		var rs []res
		for _, sql := range g {
			norm, nerr := n(sql)
			st, lf, err := ClassifyForCache(mariaDB, sql)
			if nerr != nil || err != nil {
				continue // no key, or not stored
			}
			st.Text = ""
			rs = append(rs, res{sql, norm, st, lf})
		}
		for _, a := range rs {
			for _, b := range rs {
				if a.norm == b.norm && a.lf && !reflect.DeepEqual(a.st, b.st) {
					t.Errorf("%q (literal-free) and %q share the normalized key %q but classify\n%+v\n%+v", a.sql, b.sql, a.norm, a.st, b.st)
				}
			}
		}
	}
}

// size returns how many texts the cache of d holds.
func (c *Cache) size(d Dialect) int {
	dc := (*c.caches.Load())[d]
	if dc == nil {
		return 0
	}
	n, _ := dc.Size()
	return n
}

// BenchmarkClassify measures a sysbench point select: parsed every time,
// through the cache with a new literal (normalized hit), and the same
// text (exact hit, which allocates nothing, dialect lookup included).
// On the 2-core test machine: 13.6 us, 1.7 us, 105 ns.
func BenchmarkClassify(b *testing.B) {
	const q = "SELECT c FROM sbtest1 WHERE id = 4711"
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			ClassifyIn(mariaDB, q)
		}
	})
	c := NewCache(0)
	c.Classify(mariaDB, q)
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Classify(mariaDB, q)
		}
	})
	b.Run("normalized", func(b *testing.B) {
		i := 0
		for b.Loop() {
			c.Classify(mariaDB, fmt.Sprintf("SELECT c FROM sbtest1 WHERE id = %d", i%100000))
			i++
		}
	})
}
