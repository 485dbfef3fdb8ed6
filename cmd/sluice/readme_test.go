package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/decoder/postgres"
	"github.com/sluicehq/sluice/ruleset"
)

// readmeSection returns the README from the heading line to the next
// heading of any level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	if i := strings.Index(sec, "\n#"); i >= 0 {
		sec = sec[:i]
	}
	return sec
}

// TestReadmeDefaultRuleset: every row of the README's table of what the
// embedded default ruleset does to a CI job's PostgreSQL statements is
// what it does: the statement, classified by the PostgreSQL decoder's
// classifier, gets that verdict from that rule.
func TestReadmeDefaultRuleset(t *testing.T) {
	row := regexp.MustCompile("(?m)^\\| `(.+)` \\| (allow|mask|hold|deny) \\| `([^`]+)` \\|$")
	rows := row.FindAllStringSubmatch(readmeSection(t, "### The embedded default ruleset"), -1)
	if len(rows) < 10 {
		t.Fatalf("the README's default ruleset table has %d rows; want the table of statements, verdicts and rules", len(rows))
	}
	rs := ruleset.Default()
	for _, r := range rows {
		text, want, rule := r[1], r[2], r[3]
		st, err := postgres.Classify(text)
		if err != nil {
			t.Errorf("%s: %v", text, err)
			continue
		}
		in := &ruleset.Input{Statement: st}
		in.Identity = ruleset.Identity{Level: ruleset.LevelNone}
		in.Process = ruleset.Process{UID: 1001}
		in.Target = ruleset.Endpoint{Name: "postgres", Protocol: ruleset.ProtoPostgres}
		d := rs.Evaluate(in)
		if d.Action.String() != want || d.Rule == nil || d.Rule.ID != rule {
			id := "<none>"
			if d.Rule != nil {
				id = d.Rule.ID
			}
			t.Errorf("README says %q gets %s by %s under the default ruleset; it gets %s by %s", text, want, rule, d.Action, id)
		}
	}
}
