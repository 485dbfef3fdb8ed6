// Package atomicfile writes files so that a crash or a concurrent reader
// sees the old content or the new, never part of it: the data goes to a
// synced temporary file in the same directory, which is then renamed (or
// linked) into place, and the directory is synced.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteTemp writes data to a new synced temporary file in dir, named after
// pattern (as os.CreateTemp takes it), with mode perm set by chmod so the
// umask does not apply, and returns its name. Nothing is left behind on
// error.
func WriteTemp(dir, pattern string, data []byte, perm os.FileMode) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// Write replaces path with data, mode perm, through a temporary file
// renamed into place, and syncs the directory.
func Write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := WriteTemp(dir, "."+filepath.Base(path)+".*", data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes a directory's entries durable (a rename or link into it).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
