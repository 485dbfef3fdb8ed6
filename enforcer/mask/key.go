package mask

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile is the name of the hash key in the daemon's data directory.
const KeyFile = "mask.key"

// KeySize is the length of the hash key in bytes.
const KeySize = 32

// LoadOrCreateKey returns the key the hash, email and digits functions
// are keyed with: the KeySize raw bytes of dataDir/KeyFile, created with
// fresh random bytes and mode 0600 when it does not exist. A key file
// that group or others may read or write, that is not a regular file
// (a symlink, say) or that has the wrong length is refused: a leaked key
// lets anyone confirm guesses of masked values.
//
// Creation is atomic (a temporary file linked into place), so two
// daemons starting at once agree on one key. Keep the file: a new key
// changes every hashed value.
func LoadOrCreateKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, KeyFile)
	key, err := readKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate mask key: %w", err)
	}
	tmp, err := os.CreateTemp(dataDir, KeyFile+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("create mask key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create mask key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write mask key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write mask key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write mask key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readKey(path) // another process won the race
		}
		return nil, fmt.Errorf("create mask key: %w", err)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read mask key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("read mask key %s: mode %04o lets other users read or change it; chmod 0600", path, perm)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mask key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("read mask key %s: %d bytes, want %d", path, len(key), KeySize)
	}
	return key, nil
}
