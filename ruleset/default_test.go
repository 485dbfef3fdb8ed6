package ruleset_test

import (
	"testing"

	"github.com/sluicehq/sluice/decoder"
	_ "github.com/sluicehq/sluice/decoder/all"
	"github.com/sluicehq/sluice/ruleset"
)

// TestDefaultRuleset runs the default ruleset's test blocks, the ones
// with a query through the target protocol's classifier from the
// registry (as sluice rules test does).
func TestDefaultRuleset(t *testing.T) {
	rs := ruleset.Default()
	if got := len(rs.Targets()); got != 4 {
		t.Fatalf("default has %d targets, want 4", got)
	}
	classify := func(protocol, text string) (ruleset.Statement, error) {
		p, _ := decoder.Lookup(protocol)
		if p.Classify == nil {
			t.Fatalf("no classifier for %s", protocol)
		}
		return p.Classify(text)
	}
	for _, r := range rs.RunTests(classify) {
		if !r.Passed {
			t.Errorf("%s: %s", r.Name, r.Message)
		}
	}
	if rs.Tests() == 0 {
		t.Fatal("default ruleset has no tests")
	}
}
