package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// cachedBuild returns what a scripts/build-*.sh script built: the path in
// environment variable env when set, or else what the script prints with
// --cached (its cache entry for the versions its tools module pins). It
// never builds: scripts/install-deps.sh does. what names the programs in
// errors.
func cachedBuild(env, script, what string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	out, err := exec.Command("bash", filepath.Join(repoRoot(), "scripts", script), "--cached").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s not built: %s", what, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("run scripts/%s --cached: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}
