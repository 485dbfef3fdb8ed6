// Package packaging builds Sluice's Debian package: the daemon and the
// CLI, the systemd unit and slice that keep the daemon outside every
// runner cgroup with only the capabilities it needs, the default config (a
// conffile) and an empty rules directory. The files it packs live beside
// this file; the .deb is written with goreleaser's nfpm.
package packaging

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"github.com/sluicehq/sluice/internal/version"
)

// Where the package puts things. The unit's ExecStart names DaemonPath.
const (
	DaemonPath = "/usr/sbin/sluiced"
	CLIPath    = "/usr/bin/sluice"
	UnitPath   = "/usr/lib/systemd/system/sluiced.service"
	SlicePath  = "/usr/lib/systemd/system/sluice.slice"
	SocketPath = "/usr/lib/systemd/system/sluiced.socket"
	ConfigPath = "/etc/sluice/sluiced.hcl"
	RulesDir   = "/etc/sluice/rules.d"
	DocPath    = "/usr/share/doc/sluice/README.md"
)

// Options say what to package.
type Options struct {
	// Dir is this package's directory: the unit, slice, default config
	// and maintainer scripts are read from it.
	Dir string
	// BinDir holds the built sluiced and sluice binaries.
	BinDir string
	// Readme, when set, is installed as the package's documentation.
	Readme string
	// Version is a Debian version (see DebVersion).
	Version string
	// Arch is the Debian architecture (amd64, arm64); Go's GOARCH names
	// match for those.
	Arch string
	// OutDir receives sluice_<version>_<arch>.deb.
	OutDir string
	// MTime stamps every file, for reproducible packages; zero is now.
	MTime time.Time
}

// Build writes the .deb and returns its path.
func Build(o Options) (string, error) {
	if o.Version == "" || o.Arch == "" {
		return "", errors.New("build package: version and arch are required")
	}
	for _, b := range []string{"sluiced", "sluice"} {
		if fi, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("build package: %s is not an executable in %s (run make build): %v", b, o.BinDir, err)
		}
	}
	if o.MTime.IsZero() {
		o.MTime = time.Now()
	}
	src := func(p string) string { return filepath.Join(o.Dir, p) }
	info := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: o.MTime}
	}
	contents := files.Contents{
		{Source: filepath.Join(o.BinDir, "sluiced"), Destination: DaemonPath, FileInfo: info(0o755)},
		{Source: filepath.Join(o.BinDir, "sluice"), Destination: CLIPath, FileInfo: info(0o755)},
		{Source: src("sluiced.service"), Destination: UnitPath, FileInfo: info(0o644)},
		{Source: src("sluice.slice"), Destination: SlicePath, FileInfo: info(0o644)},
		{Source: src("sluiced.socket"), Destination: SocketPath, FileInfo: info(0o644)},
		// The config may come to hold webhook URLs and tokens' paths:
		// root only. noreplace: an upgrade never overwrites local edits.
		{Source: src("sluiced.hcl"), Destination: ConfigPath, Type: files.TypeConfigNoReplace, FileInfo: info(0o600)},
		// Empty: the embedded default ruleset applies until rules are
		// put here and rules_dir is set.
		{Destination: RulesDir, Type: files.TypeDir, FileInfo: info(0o755)},
	}
	if o.Readme != "" {
		contents = append(contents, &files.Content{Source: o.Readme, Destination: DocPath, FileInfo: info(0o644)})
	}
	pkg := &nfpm.Info{
		Name:          "sluice",
		Arch:          o.Arch,
		Platform:      "linux",
		Version:       o.Version,
		VersionSchema: "none",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "Sluice maintainers <sluice@sluicehq.dev>",
		Description: "data-path guard for self-hosted CI runners\n" +
			"eBPF programs on the runner's cgroup send the jobs' connections to\n" +
			"databases into a local proxy that ties each flow to the CI job's\n" +
			"identity, applies the security team's ruleset and records the session.",
		Vendor:   "Sluice",
		Homepage: "https://github.com/sluicehq/sluice",
		License:  "Apache-2.0",
		MTime:    o.MTime,
		Overridables: nfpm.Overridables{
			Depends:  []string{"libc6"},
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: src("scripts/postinst"),
				PreRemove:   src("scripts/prerm"),
				PostRemove:  src("scripts/postrm"),
			},
		},
	}
	pkg = nfpm.WithDefaults(pkg)
	if err := nfpm.PrepareForPackager(pkg, "deb"); err != nil {
		return "", fmt.Errorf("build package: %w", err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("build package: %w", err)
	}
	out := filepath.Join(o.OutDir, fmt.Sprintf("sluice_%s_%s.deb", o.Version, o.Arch))
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", fmt.Errorf("build package: %w", err)
	}
	if err := deb.Default.Package(pkg, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("build package: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build package: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("build package: %w", err)
	}
	return out, nil
}

// DebVersion turns `git describe --tags --always --dirty` output into a
// Debian version (version.Debian: the binaries print the same).
func DebVersion(describe string) string { return version.Debian(describe) }
