// Package version says which build of Sluice is running. `make build` (and
// so `make package`) stamps Describe with `git describe --tags --always
// --dirty`; the Debian version of the package and the version the binaries
// print are both derived from it by Debian, so they always agree.
package version

import (
	"regexp"
	"runtime/debug"
	"strings"
)

// Describe is the `git describe --tags --always --dirty` output the build
// was made from, set with -ldflags "-X .../internal/version.Describe=...".
// Empty in a plain `go build`; String then falls back to the VCS
// revision the Go toolchain recorded, if any.
var Describe string

var (
	semverTag = regexp.MustCompile(`^v?([0-9]+(?:\.[0-9]+)*)(.*)$`)
	notDeb    = regexp.MustCompile(`[^A-Za-z0-9.+~]+`)
)

// Debian turns `git describe --tags --always --dirty` output into a
// Debian version: "v1.2.0" is 1.2.0, "v1.2.0-3-gabc1234" is
// 1.2.0+git3.gabc1234, and a bare commit "abc1234" (no tag yet) is
// 0.0.0+gitabc1234; "-dirty" stays as ".dirty" after "+git". An empty
// describe is 0.0.0.
func Debian(describe string) string {
	d := strings.TrimSpace(describe)
	if d == "" {
		return "0.0.0"
	}
	clean := func(s string) string { return strings.Trim(notDeb.ReplaceAllString(s, "."), ".") }
	m := semverTag.FindStringSubmatch(d)
	if m == nil || !strings.HasPrefix(d, "v") && !strings.Contains(m[1], ".") {
		return "0.0.0+git" + clean(d) // a bare commit hash
	}
	if rest := clean(m[2]); rest != "" {
		return m[1] + "+git" + rest
	}
	return m[1]
}

// String is the running build's version in the form the package carries
// (Debian of Describe). Without a stamp it is "0.0.0+dev", followed by the
// VCS revision when the toolchain recorded one.
func String() string {
	if Describe != "" {
		return Debian(Describe)
	}
	v := "0.0.0+dev"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 7 {
				v += "." + s.Value[:7]
			}
		}
	}
	return v
}
