package postgres

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// TestSQLPrepared: one session's statements in order; EXECUTE is decided
// as what the session prepared, unknown names are flagged, DEALLOCATE and
// DISCARD ALL forget.
func TestSQLPrepared(t *testing.T) {
	unknown := []string{FlagUnknownPrepared}
	steps := []struct {
		sql    string
		kind   string
		tables []string
		flags  []string
	}{
		{"PREPARE del AS DELETE FROM victims", "delete", []string{"victims"}, []string{FlagPrepare}},
		{"EXECUTE del", "delete", []string{"victims"}, nil},
		{"execute nope", "execute", nil, unknown},
		{"PREPARE upd AS UPDATE t SET x = 1", "update", []string{"t"}, []string{FlagPrepare}},
		{"EXECUTE upd", "update", []string{"t"}, nil},
		{"PREPARE s(int) AS SELECT email FROM users WHERE id = $1", "select", []string{"users"}, []string{FlagPrepare}},
		{"EXECUTE s(1)", "select", []string{"users"}, nil}, // a select, so mask rules see users
		{"SELECT 1; EXECUTE s(2)", "select", []string{"users"}, nil},
		{"PREPARE s2 AS SELECT 1; EXECUTE s2; EXECUTE del", "delete", []string{"victims"}, []string{FlagPrepare}},
		{"EXPLAIN ANALYZE EXECUTE del", "delete", []string{"victims"}, nil},
		{"CREATE TABLE copy AS EXECUTE s(1)", "create", []string{"copy", "users"}, nil},
		{"EXPLAIN ANALYZE EXECUTE ghost", "execute", nil, unknown},
		{"DEALLOCATE del", "other", nil, nil},
		{"EXECUTE del", "execute", nil, unknown},
		{"DEALLOCATE PREPARE s2; EXECUTE s(3)", "other", []string{"users"}, nil}, // other outranks select (Merge)
		{"EXECUTE s2", "execute", nil, unknown},
		{"DEALLOCATE ALL", "other", nil, nil},
		{"EXECUTE s(1)", "execute", nil, unknown},
		{"PREPARE a AS SELECT 1", "select", nil, []string{FlagPrepare}},
		{"DISCARD ALL", "other", nil, nil},
		{"EXECUTE a", "execute", nil, unknown},
		{"PREPARE b AS SELECT 1", "select", nil, []string{FlagPrepare}},
		{"DISCARD PLANS", "other", nil, nil},
		{"EXECUTE b", "select", nil, nil},
		{"SELECT 'EXECUTE b' AS prepare", "select", nil, nil}, // words, no statement
		// A name prepared again: the server keeps the first if it has
		// it, so EXECUTE is decided as either.
		{"PREPARE m AS SELECT email FROM users", "select", []string{"users"}, []string{FlagPrepare}},
		{"PREPARE m AS SELECT 1", "select", nil, []string{FlagPrepare}},
		{"EXECUTE m", "select", []string{"users"}, nil},
		// A body prepared names Sluice cannot follow: every EXECUTE is
		// unknown until DISCARD ALL.
		{"DO $$ BEGIN EXECUTE 'PREPARE hidden AS SELECT 1'; END $$", "do", nil, []string{FlagDoBlock, FlagPrepare}},
		{"EXECUTE m", "execute", nil, unknown},
		{"EXECUTE hidden", "execute", nil, unknown},
		{"DISCARD ALL", "other", nil, nil},
		{"PREPARE m AS SELECT 1", "select", nil, []string{FlagPrepare}},
		{"EXECUTE m", "select", nil, nil},
	}
	c := NewCache(0)
	var p sqlPrepared
	for _, s := range steps {
		st, err := c.Classify(s.sql)
		if err != nil {
			t.Fatalf("%s: %v", s.sql, err)
		}
		st = p.apply(st, s.sql)
		if st.Kind != s.kind || !slices.Equal(st.Tables, s.tables) || !slices.Equal(st.Flags, s.flags) || st.Text != s.sql {
			t.Errorf("%s:\n got kind %s tables %v flags %v text %q\nwant kind %s tables %v flags %v", s.sql, st.Kind, st.Tables, st.Flags, st.Text, s.kind, s.tables, s.flags)
		}
	}
}

// TestSQLPreparedCacheUntouched: the session's substitution never reaches
// the shared classification cache, and modifying what apply returned
// does not change the cache or the session's map.
func TestSQLPreparedCacheUntouched(t *testing.T) {
	c := NewCache(0)
	var p sqlPrepared
	prep := "PREPARE d AS DELETE FROM victims"
	st, _ := c.Classify(prep)
	p.apply(st, prep)
	got := p.apply(mustClassify(t, c, "EXECUTE d"), "EXECUTE d")
	if got.Kind != "delete" {
		t.Fatalf("EXECUTE d: %+v", got)
	}
	got.Tables[0] = "scribbled"
	if again := p.apply(mustClassify(t, c, "EXECUTE d"), "EXECUTE d"); !slices.Equal(again.Tables, []string{"victims"}) {
		t.Fatalf("the session's map was modified through a result: %v", again.Tables)
	}
	if cached := mustClassify(t, c, "EXECUTE d"); cached.Kind != "execute" || cached.Tables != nil {
		t.Fatalf("the cache holds a session's substitution: %+v", cached)
	}
	var other sqlPrepared // another session never prepared d
	if st := other.apply(mustClassify(t, c, "EXECUTE d"), "EXECUTE d"); !slices.Contains(st.Flags, FlagUnknownPrepared) {
		t.Fatalf("another session's EXECUTE d: %+v", st)
	}
}

func mustClassify(t *testing.T, c *Cache, text string) ruleset.Statement {
	t.Helper()
	st, err := c.Classify(text)
	if err != nil {
		t.Fatalf("%s: %v", text, err)
	}
	return st
}

// TestSQLPreparedBounds: past maxPrepared names or maxPreparedBytes of
// text a PREPARE is not remembered, so its EXECUTE is unknown_prepared
// (refused by the default ruleset), and forgetting makes room again.
func TestSQLPreparedBounds(t *testing.T) {
	var p sqlPrepared
	run := func(text string) ruleset.Statement {
		st, err := Classify(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		return p.apply(st, text)
	}
	for i := range maxPrepared {
		run(fmt.Sprintf("PREPARE p%d AS SELECT %d", i, i))
	}
	if len(p.m) != maxPrepared {
		t.Fatalf("%d names held, want %d", len(p.m), maxPrepared)
	}
	run("PREPARE extra AS DELETE FROM victims")
	if st := run("EXECUTE extra"); !slices.Contains(st.Flags, FlagUnknownPrepared) {
		t.Fatalf("a PREPARE past the count bound: %+v", st)
	}
	if st := run("PREPARE p0 AS SELECT 0; EXECUTE p0"); st.Kind != "select" || slices.Contains(st.Flags, FlagUnknownPrepared) {
		t.Fatalf("re-preparing a held name: %+v", st)
	}
	run("DEALLOCATE ALL")
	if p.m != nil || p.bytes != 0 {
		t.Fatalf("DEALLOCATE ALL left %d names, %d bytes", len(p.m), p.bytes)
	}

	big := "PREPARE %s AS SELECT '" + strings.Repeat("x", maxPreparedBytes/3) + "'"
	for _, n := range []string{"b1", "b2", "b3"} {
		run(fmt.Sprintf(big, n))
	}
	if st := run("EXECUTE b3"); !slices.Contains(st.Flags, FlagUnknownPrepared) {
		t.Fatalf("a PREPARE past the byte bound: %+v", st)
	}
	if p.bytes > maxPreparedBytes {
		t.Fatalf("%d bytes held, bound %d", p.bytes, maxPreparedBytes)
	}
	run("DEALLOCATE b1")
	run(fmt.Sprintf(big, "b3"))
	if st := run("EXECUTE b3"); st.Kind != "select" {
		t.Fatalf("after DEALLOCATE made room: %+v", st)
	}
}

func TestContainsFold(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want bool
	}{{"EXECUTE p", true}, {"x eXeCuTe", true}, {"execut", false}, {"", false}, {"SELECT 1", false}, {"EEEXECUTE", true}} {
		if got := containsFold(tt.s, "execute"); got != tt.want {
			t.Errorf("containsFold(%q) = %v", tt.s, got)
		}
	}
	if !mayPrepare("x Execute y") || mayPrepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1") {
		t.Fatal("mayPrepare")
	}
	for text, want := range map[string]bool{
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1": false,
		"SELECT 'EXECUTE p'": false,
		"UPDATE t SET x = 1 WHERE id = 2; PREPARE p AS SELECT 1": true,
		"DELETE FROM t WHERE id = 1; EXECUTE p":                  true,
		"DEALLOCATE p":                                           true,
		"discard all":                                            true,
		"VACUUM t":                                               false,
	} {
		st, err := Classify(text)
		if err != nil {
			t.Fatal(err)
		}
		if got := mayApply(st, text); got != want {
			t.Errorf("mayApply(%q) = %v, want %v", text, got, want)
		}
	}
}

// BenchmarkSQLPreparedApply: the session hook's cost on an ordinary
// statement, which holds no PREPARE, EXECUTE, DEALLOCATE or DISCARD.
func BenchmarkSQLPreparedApply(b *testing.B) {
	const text = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
	st, err := Classify(text)
	if err != nil {
		b.Fatal(err)
	}
	var p sqlPrepared
	b.ReportAllocs()
	for b.Loop() {
		p.apply(st, text)
	}
}
