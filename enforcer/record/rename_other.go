//go:build !linux

package record

import "os"

// renameNoReplace renames from to to, failing with fs.ErrExist when to
// exists: a hard link, which never replaces, then the old name removed.
func renameNoReplace(from, to string) error {
	if err := os.Link(from, to); err != nil {
		return err
	}
	return os.Remove(from)
}
