package rulesource

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/internal/atomicfile"
)

// CacheFile is the last good bundle's file name in the cache directory
// (data_dir/rules-pulled by default).
const CacheFile = "bundle.json"

// SaveLastGood replaces dir/CacheFile with data, whole or not at all.
func SaveLastGood(dir string, data []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save last good bundle: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, CacheFile), data, 0o600); err != nil {
		return fmt.Errorf("save last good bundle: %w", err)
	}
	return nil
}

// LoadLastGood reads dir/CacheFile; it returns nil and no error when
// there is none.
func LoadLastGood(dir string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, CacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read last good bundle: %w", err)
	}
	return data, nil
}
