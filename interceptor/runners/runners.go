// Package runners finds the CI runner services of a host in its cgroup2
// tree: systemd gives every service a cgroup named after its unit, so a
// GitHub Actions runner lives in system.slice/actions.runner.*.service, a
// GitLab runner in system.slice/gitlab-runner.service, and so on. The
// interceptor hooks those cgroups; this package only reads directory names.
package runners

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Kind is a CI system whose runner services are recognised.
type Kind string

// The recognised runner kinds.
const (
	GitHub    Kind = "github-actions"
	GitLab    Kind = "gitlab"
	Buildkite Kind = "buildkite"
	Jenkins   Kind = "jenkins"
)

// DefaultRoot is where systemd puts services, relative to the cgroup2
// mount.
const DefaultRoot = "system.slice"

// patterns map unit names (path.Match globs) to their kind, in the order
// they are tried.
var patterns = []struct {
	glob string
	kind Kind
}{
	{"actions.runner.*.service", GitHub},
	{"gitlab-runner.service", GitLab},
	{"gitlab-runner@*.service", GitLab},
	{"buildkite-agent*.service", Buildkite},
	{"jenkins-agent*.service", Jenkins},
	{"jenkins*.service", Jenkins},
}

// Patterns returns the unit name globs Find looks for, for messages.
func Patterns() []string {
	out := make([]string, len(patterns))
	for i, p := range patterns {
		out[i] = p.glob
	}
	return out
}

// Runner is one runner service found in the cgroup tree.
type Runner struct {
	Kind Kind
	// Unit is the systemd unit name, e.g. actions.runner.acme-api.r1.service.
	Unit string
	// Cgroup is the service's cgroup relative to the cgroup2 mount,
	// without a leading slash, as sluiced's config takes it.
	Cgroup string
}

// Classify returns the kind of a unit name, or "" when it is no runner.
func Classify(unit string) Kind {
	for _, p := range patterns {
		if ok, _ := path.Match(p.glob, unit); ok {
			return p.kind
		}
	}
	return ""
}

// Find lists the runner services under root (relative to mount): services
// directly in root, and in the slices directly below it (systemd puts the
// instances of a template unit such as buildkite-agent@1.service in
// system-buildkite\x2dagent.slice). The result is sorted by cgroup. A root
// that does not exist is an error; a root with no runner is not.
func Find(mount, root string) ([]Runner, error) {
	rootRel := strings.TrimPrefix(filepath.Clean("/"+root), "/")
	dir := filepath.Join(mount, rootRel)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("find runners: %s does not exist: %w", dir, err)
		}
		return nil, fmt.Errorf("find runners: %w", err)
	}
	var out []Runner
	scan := func(rel string, ents []os.DirEntry) {
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			if k := Classify(e.Name()); k != "" {
				out = append(out, Runner{Kind: k, Unit: e.Name(), Cgroup: path.Join(rel, e.Name())})
			}
		}
	}
	scan(rootRel, ents)
	for _, e := range ents {
		if !e.IsDir() || !strings.HasSuffix(e.Name(), ".slice") {
			continue
		}
		sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // removed meanwhile
		}
		scan(path.Join(rootRel, e.Name()), sub)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cgroup < out[j].Cgroup })
	return out, nil
}
