package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/decoder/postgres"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// TestReadmeDefaultRuleset: every row of the README's table of what the
// embedded default ruleset does to a CI job's PostgreSQL statements is
// what it does: the statement, classified by the PostgreSQL decoder's
// classifier, gets that verdict from that rule.
func TestReadmeDefaultRuleset(t *testing.T) {
	row := regexp.MustCompile("(?m)^\\| `(.+)` \\| (allow|mask|hold|deny) \\| `([^`]+)` \\|$")
	rows := row.FindAllStringSubmatch(testenv.ReadmeSection(t, "### The embedded default ruleset"), -1)
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

// TestReadmeCommands: the README's CLI section lists every command and
// subcommand of the command tree, and names none that does not exist.
func TestReadmeCommands(t *testing.T) {
	sec := testenv.ReadmeSection(t, "## CLI")
	_, block, ok := strings.Cut(sec, "```\n")
	if !ok {
		t.Fatal("the README's CLI section has no command block")
	}
	block, _, _ = strings.Cut(block, "```")
	documented := map[string]bool{}
	for _, line := range strings.Split(block, "\n") {
		line, _, _ = strings.Cut(line, "  ") // the description follows two spaces
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "sluice" {
			continue
		}
		path := "sluice"
		for _, w := range f[1:] {
			if !regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(w) {
				break
			}
			path += " " + w
		}
		documented[path] = true
	}
	root := newRootCmd()
	var walk func(c *cobra.Command)
	real := map[string]bool{}
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			if c.Name() == "completion" {
				continue // its shells are arguments in the README's line
			}
			real[sub.CommandPath()] = true
			walk(sub)
		}
	}
	walk(root)
	for p := range real {
		if documented[p] {
			continue
		}
		// A command with subcommands is documented by them.
		hasSub := false
		for q := range documented {
			if strings.HasPrefix(q, p+" ") {
				hasSub = true
			}
		}
		if !hasSub {
			t.Errorf("%q is not in the README's CLI section", p)
		}
	}
	for p := range documented {
		if real[p] {
			continue
		}
		// "sluice completion bash|zsh|..." ends in an argument.
		if i := strings.LastIndex(p, " "); i > 0 && real[p[:i]] {
			continue
		}
		t.Errorf("the README's CLI section names %q, which is not a command", p)
	}
}
