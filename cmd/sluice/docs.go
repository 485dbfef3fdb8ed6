package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/sluicehq/sluice/internal/version"
)

// Where __gen-docs writes, below its DIR argument; packaging.Build reads
// them from there.
const (
	genManDir   = "man" // sluice.1, sluice-rules-check.1, ...
	genBashFile = "completion/sluice.bash"
	genZshFile  = "completion/_sluice"
	genFishFile = "completion/sluice.fish"
)

// newGenDocsCmd is the hidden `sluice __gen-docs DIR` that the package
// build runs on the built binary: man pages for every command under
// DIR/man, and the bash, zsh and fish completion scripts under
// DIR/completion. The man pages' date is $SOURCE_DATE_EPOCH when set, so
// a package build can be reproducible.
func newGenDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "__gen-docs DIR",
		Short:  "Write man pages and shell completions into DIR (for packaging)",
		Hidden: true,
		Args:   argsNamed("DIR"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return genDocs(cmd.Root(), args[0])
		}),
	}
}

func genDocs(root *cobra.Command, dir string) error {
	man := filepath.Join(dir, genManDir)
	if err := os.MkdirAll(man, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", man, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(genBashFile)), 0o755); err != nil {
		return fmt.Errorf("create completion directory: %w", err)
	}
	root.DisableAutoGenTag = true
	hdr := &doc.GenManHeader{Title: "SLUICE", Section: "1", Source: "Sluice " + version.String(), Manual: "Sluice Manual"}
	if err := doc.GenManTree(root, hdr, man); err != nil {
		return fmt.Errorf("write man pages: %w", err)
	}
	for _, c := range []struct {
		file string
		gen  func(f *os.File) error
	}{
		{genBashFile, func(f *os.File) error { return root.GenBashCompletionV2(f, true) }},
		{genZshFile, func(f *os.File) error { return root.GenZshCompletion(f) }},
		{genFishFile, func(f *os.File) error { return root.GenFishCompletion(f, true) }},
	} {
		path := filepath.Join(dir, c.file)
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		err = c.gen(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
