package decoder

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// fakeProtocol is a protocol whose commands are "VERB arg": the verb is
// the kind, digits are literals its normaliser replaces, and a verb
// starting with "LIT" looks at its literal (not literalFree).
type fakeProtocol struct {
	mu    sync.Mutex
	calls map[string]int
}

var digits = regexp.MustCompile(`[0-9]+`)

func (f *fakeProtocol) classify(text string) (ruleset.Statement, bool, error) {
	f.mu.Lock()
	f.calls[text]++
	f.mu.Unlock()
	verb, _, _ := strings.Cut(text, " ")
	if verb == "BAD" {
		return ruleset.Statement{}, false, fmt.Errorf("does not parse")
	}
	return ruleset.Statement{Kind: strings.ToLower(verb), Tables: []string{"t"}}, !strings.HasPrefix(verb, "LIT"), nil
}

func (f *fakeProtocol) normalize(text string) (string, error) {
	return digits.ReplaceAllLiteralString(text, "?"), nil
}

func newFake(max int) (*Cache, *fakeProtocol) {
	f := &fakeProtocol{calls: map[string]int{}}
	return NewCache(max, f.classify, f.normalize), f
}

// TestCacheShared: exact texts and normalised forms are classified once;
// a classification that read a literal is shared by its exact text only;
// errors are cached too; Text is always the caller's text.
func TestCacheShared(t *testing.T) {
	c, f := newFake(16)
	for _, text := range []string{"SELECT 1", "SELECT 1", "SELECT 2", "LITSET 1", "LITSET 2", "BAD 1", "BAD 1"} {
		st, err := c.Classify(text)
		if strings.HasPrefix(text, "BAD") != (err != nil) {
			t.Errorf("%s: err %v", text, err)
		}
		if err == nil && st.Text != text {
			t.Errorf("%s: Text %q", text, st.Text)
		}
	}
	want := map[string]int{"SELECT 1": 1, "LITSET 1": 1, "LITSET 2": 1, "BAD 1": 1}
	for text, n := range want {
		if f.calls[text] != n {
			t.Errorf("%s classified %d times, want %d", text, f.calls[text], n)
		}
	}
	if f.calls["SELECT 2"] != 0 {
		t.Errorf("SELECT 2 was classified although SELECT 1 shares its normalised form")
	}
	c.Forget("SELECT 1")
	c.Forget("SELECT ?")
	c.Classify("SELECT 1")
	if f.calls["SELECT 1"] != 2 {
		t.Errorf("a forgotten text was not classified again")
	}
}

// TestCacheBounds: many distinct texts keep the cache within its entry
// and byte bounds; a text over MaxCachedText is never stored.
func TestCacheBounds(t *testing.T) {
	c, _ := newFake(10000)
	pad := strings.Repeat("x", 40<<10)
	for i := range 1000 { // 40 MiB of distinct texts through a 32 MiB cache
		c.Classify(fmt.Sprintf("LITSEL %d %s", i, pad))
	}
	if n, bytes := c.Size(); n >= 1000 || bytes > CacheBytes {
		t.Errorf("cache holds %d texts and %d bytes; the byte bound is %d", n, bytes, CacheBytes)
	}
	c1, _ := newFake(100)
	for i := range 1000 {
		c1.Classify(fmt.Sprintf("LITSEL %d", i))
	}
	if n, _ := c1.Size(); n > 200 {
		t.Errorf("cache of 100 entries a generation holds %d texts", n)
	}
	c2, f := newFake(100)
	big := "SELECT " + strings.Repeat("y", MaxCachedText)
	c2.Classify(big)
	c2.Classify(big)
	if n, _ := c2.Size(); n != 0 || f.calls[big] != 2 {
		t.Errorf("a text over MaxCachedText: %d entries stored, classified %d times (want 0 and 2)", n, f.calls[big])
	}
}

// TestCacheConcurrent: sessions share one cache (run under -race).
func TestCacheConcurrent(t *testing.T) {
	c, _ := newFake(8)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if st, err := c.Classify(fmt.Sprintf("SELECT %d", (g*7+i)%40)); err != nil || st.Kind != "select" {
					t.Errorf("got %+v, %v", st, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
