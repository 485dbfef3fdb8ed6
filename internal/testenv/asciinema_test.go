package testenv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestAsciinemaCat: asciinema cat plays an asciicast v2 file's output
// events without the test having a terminal, and refuses a file that is
// not one. It needs asciinema (scripts/install-deps.sh), not root.
func TestAsciinemaCat(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.cast")
	os.WriteFile(good, []byte(`{"version": 2, "width": 80, "height": 24, "timestamp": 1767225600}
[0.1, "o", "$ echo hi\r\n"]
[0.2, "i", "typed, not shown\r"]
[0.3, "o", "hi\r\n"]
`), 0o644)
	out, err := testenv.AsciinemaCat(t, good)
	if err != nil || out != "$ echo hi\r\nhi\r\n" {
		t.Errorf("asciinema cat: %v %q", err, out)
	}
	bad := filepath.Join(dir, "bad.cast")
	os.WriteFile(bad, []byte("not a recording\n"), 0o644)
	if out, err := testenv.AsciinemaCat(t, bad); err == nil || !strings.Contains(err.Error(), "asciinema cat") {
		t.Errorf("asciinema cat of a file that is no asciicast: %v %q", err, out)
	}
}
