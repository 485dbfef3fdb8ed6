package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// RepoFile reads a file of the repository by its path from the root,
// for tests that check the README and scripts against the code.
func RepoFile(t testing.TB, name string) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0) // internal/testenv/readme.go
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ReadmeSection returns the README from the line after heading (a whole
// heading line, such as "## CLI") to the next heading of the same or a
// higher level; deeper headings stay in it. It fails t when the README
// has no such heading.
func ReadmeSection(t testing.TB, heading string) string {
	t.Helper()
	readme := RepoFile(t, "README.md")
	_, rest, ok := strings.Cut(readme, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	level, _, _ := strings.Cut(heading, " ")
	for off := 0; ; {
		i := strings.Index(rest[off:], "\n#")
		if i < 0 {
			return rest
		}
		line := rest[off+i+1:]
		if h, _, _ := strings.Cut(line, " "); strings.Trim(h, "#") == "" && len(h) <= len(level) {
			return rest[:off+i+1]
		}
		off += i + 1
	}
}
