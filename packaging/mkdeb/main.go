// Command mkdeb builds Sluice's .deb (make package): it packs the built
// binaries with the unit, slice, default config and maintainer scripts
// from packaging/, and the man pages and shell completions the built
// sluice generates, and prints the package's path. It refuses binaries
// whose --version is not the package's version.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/sluicehq/sluice/packaging"
)

func main() {
	o := packaging.Options{}
	describe := flag.String("describe", "", "output of git describe --tags --always --dirty; becomes the Debian version")
	flag.StringVar(&o.Version, "version", "", "Debian version (overrides --describe)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "Debian architecture")
	flag.StringVar(&o.Dir, "dir", "packaging", "directory holding the unit, config and scripts")
	flag.StringVar(&o.BinDir, "bin", "bin", "directory holding the built sluiced and sluice")
	flag.StringVar(&o.Readme, "readme", "README.md", "README installed under /usr/share/doc/sluice (\"\" for none)")
	flag.StringVar(&o.OutDir, "out", "dist", "output directory")
	flag.Parse()
	if o.Version == "" {
		o.Version = packaging.DebVersion(*describe)
	}
	path, err := packaging.Build(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
