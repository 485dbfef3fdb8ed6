package deptest

import (
	"bufio"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestReadmeLayout: every Go package of the module is in the README's
// Layout table, and every package the table names exists.
func TestReadmeLayout(t *testing.T) {
	out, err := exec.Command("go", "list", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []string
	for _, p := range strings.Fields(string(out)) {
		if rel := strings.TrimPrefix(strings.TrimPrefix(p, mod), "/"); rel != "" {
			pkgs = append(pkgs, rel)
		}
	}
	listed := map[string]bool{}
	name := regexp.MustCompile("`([a-z0-9/_-]+)/?`")
	sc := bufio.NewScanner(strings.NewReader(testenv.ReadmeSection(t, "## Layout")))
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 3 {
			continue
		}
		for _, m := range name.FindAllStringSubmatch(cells[1], -1) {
			listed[m[1]] = true
		}
	}
	for _, p := range pkgs {
		if !listed[p] {
			t.Errorf("package %s is not in the README's Layout table: add a row saying what it owns", p)
		}
	}
	for p := range listed {
		if !slices.Contains(pkgs, p) {
			t.Errorf("the README's Layout table names %s, which is not a package of the module", p)
		}
	}
}

// TestReadmeDemoClaims: the demo's numbered steps are the README's
// numbered claims: the same numbers, in order, and each step's title
// shares its key words with its claim.
func TestReadmeDemoClaims(t *testing.T) {
	two := testenv.ReadmeSection(t, "## The two commands")
	_, list, ok := strings.Cut(two, "The demo's numbered steps are these claims")
	if !ok {
		t.Fatal(`README's "The two commands" lost the sentence introducing the demo's numbered claims`)
	}
	claims := map[int]string{}
	item := regexp.MustCompile(`(?m)^(\d+)\. `)
	idx := item.FindAllStringSubmatchIndex(list, -1)
	for i, m := range idx {
		n, _ := strconv.Atoi(list[m[2]:m[3]])
		end := len(list)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		claims[n] = strings.ToLower(list[m[1]:end])
	}
	steps := map[int]string{}
	step := regexp.MustCompile(`(?m)^step "(\d+)\. ([^"]*)"`)
	for _, m := range step.FindAllStringSubmatch(testenv.RepoFile(t, "scripts/demo.sh"), -1) {
		n, _ := strconv.Atoi(m[1])
		if _, dup := steps[n]; dup {
			t.Errorf("demo step %d appears twice", n)
		}
		steps[n] = strings.ToLower(m[2])
	}
	if len(claims) == 0 || len(claims) != len(steps) {
		t.Fatalf("README lists %d numbered claims, the demo has %d numbered steps", len(claims), len(steps))
	}
	word := regexp.MustCompile(`[a-z][a-z-]{4,}`)
	common := map[string]bool{"sluice": true, "inside": true, "outside": true, "their": true, "which": true, "where": true, "every": true, "while": true, "after": true, "being": true, "still": true, "statements": false}
	for n := 1; n <= len(claims); n++ {
		c, s := claims[n], steps[n]
		if c == "" || s == "" {
			t.Errorf("claim or step %d is missing (README %q, demo %q)", n, c, s)
			continue
		}
		shared := 0
		for _, w := range word.FindAllString(s, -1) {
			if !common[w] && strings.Contains(c, w) {
				shared++
			}
		}
		if shared < 2 {
			t.Errorf("demo step %d %q does not look like README claim %d %q: renumbered one without the other?", n, s, n, strings.Join(strings.Fields(c), " "))
		}
	}
}
