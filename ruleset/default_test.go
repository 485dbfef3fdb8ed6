package ruleset

import "testing"

func TestDefaultRuleset(t *testing.T) {
	rs := Default()
	if got := len(rs.Targets()); got != 4 {
		t.Fatalf("default has %d targets, want 4", got)
	}
	for _, r := range rs.RunTests(nil) {
		if !r.Passed {
			t.Errorf("%s: %s", r.Name, r.Message)
		}
	}
	if rs.Tests() == 0 {
		t.Fatal("default ruleset has no tests")
	}
}
