package ruleset

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

var wantLine = regexp.MustCompile(`^# want (\d+):(\d+) "([^"]+)"`)

// TestInvalidRulesets loads every file under testdata/rulesets/invalid,
// each broken in one way its first line names ("# want LINE:COL
// "Summary""), and checks that exactly one error points there.
func TestInvalidRulesets(t *testing.T) {
	files, err := filepath.Glob("../testdata/rulesets/invalid/*.hcl")
	if err != nil || len(files) < 15 {
		t.Fatalf("found %d invalid rulesets (err %v), want at least 15", len(files), err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m := wantLine.FindSubmatch(src)
			if m == nil {
				t.Fatalf("%s does not start with # want LINE:COL \"Summary\"", f)
			}
			line, _ := strconv.Atoi(string(m[1]))
			col, _ := strconv.Atoi(string(m[2]))
			rs, _, diags := Load(f)
			if rs != nil {
				t.Fatal("Load returned a ruleset despite errors")
			}
			var errs hcl.Diagnostics
			for _, d := range diags {
				if d.Severity == hcl.DiagError {
					errs = append(errs, d)
				}
			}
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want exactly 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Subject == nil {
				t.Fatalf("error has no source range: %v", d)
			}
			if d.Subject.Filename != f || d.Subject.Start.Line != line || d.Subject.Start.Column != col || d.Summary != string(m[3]) {
				t.Errorf("got %s:%d:%d %q, want %s:%d:%d %q (%s)", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column,
					d.Summary, f, line, col, m[3], d.Detail)
			}
		})
	}
}
