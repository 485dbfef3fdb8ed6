package runners

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestFind: runner units directly under the root and in template slices
// are found with their kind; other services are not; a missing root is an
// error.
func TestFind(t *testing.T) {
	mount := t.TempDir()
	for _, d := range []string{
		"system.slice/actions.runner.acme-api.r1.service",
		"system.slice/gitlab-runner.service",
		"system.slice/jenkins-agent.service",
		"system.slice/ssh.service",
		"system.slice/actions.runner.acme-api.r1.service/child",
		`system.slice/system-buildkite\x2dagent.slice/buildkite-agent@1.service`,
		"system.slice/system-getty.slice/getty@tty1.service",
	} {
		if err := os.MkdirAll(filepath.Join(mount, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Find(mount, "/system.slice")
	if err != nil {
		t.Fatal(err)
	}
	want := []Runner{
		{GitHub, "actions.runner.acme-api.r1.service", "system.slice/actions.runner.acme-api.r1.service"},
		{GitLab, "gitlab-runner.service", "system.slice/gitlab-runner.service"},
		{Jenkins, "jenkins-agent.service", "system.slice/jenkins-agent.service"},
		{Buildkite, "buildkite-agent@1.service", `system.slice/system-buildkite\x2dagent.slice/buildkite-agent@1.service`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Find =\n%v\nwant\n%v", got, want)
	}
	if _, err := Find(mount, "nope.slice"); err == nil {
		t.Error("Find on a missing root succeeded")
	}
	if got, err := Find(mount, "system.slice/system-getty.slice"); err != nil || len(got) != 0 {
		t.Errorf("Find without runners = %v, %v; want none and no error", got, err)
	}
}
