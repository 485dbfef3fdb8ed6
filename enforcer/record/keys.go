package record

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/ruleset"
)

// Key file names in the data directory. They use the ruleset key format:
// one line of standard base64 of the raw ed25519 key (64 bytes, seed then
// public key, for the private key).
const (
	PrivateKeyFile = "recording.key" // mode 0600
	PublicKeyFile  = "recording.pub" // mode 0644
)

// Keys is the daemon's recording signing key. It is safe for concurrent
// use and may be shared by every Writer.
type Keys struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   string
}

// NewKeys wraps an existing private key.
func NewKeys(priv ed25519.PrivateKey) *Keys {
	pub := priv.Public().(ed25519.PublicKey)
	return &Keys{priv: priv, pub: pub, id: KeyID(pub)}
}

// PublicKey returns the key that verifies this key's recordings.
func (k *Keys) PublicKey() ed25519.PublicKey { return k.pub }

// ID returns KeyID of the public key, as written in recording headers.
func (k *Keys) ID() string { return k.id }

func (k *Keys) sign(m []byte) []byte { return ed25519.Sign(k.priv, m) }

// KeyID is the lowercase hex SHA-256 of a public key.
func KeyID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:])
}

// MarshalPublicKey formats a public key file's content.
func MarshalPublicKey(pub ed25519.PublicKey) []byte { return ruleset.MarshalPublicKey(pub) }

// ParsePublicKey parses a public key file's content.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) { return ruleset.ParsePublicKey(data) }

// LoadPublicKey reads dataDir/PublicKeyFile.
func LoadPublicKey(dataDir string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, PublicKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load recording public key: %w", err)
	}
	pub, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("load recording public key: %w", err)
	}
	return pub, nil
}

// LoadOrCreateKeys loads the recording key from dataDir, generating it on
// first start. The private key is created atomically (a daemon killed
// while creating it leaves no partial key) and must not be readable by
// group or others. The public key file is (re)written from the private key
// when it is missing or does not match.
func LoadOrCreateKeys(dataDir string) (*Keys, error) {
	keyPath := filepath.Join(dataDir, PrivateKeyFile)
	k, err := loadKeys(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		k, err = createKeys(dataDir, keyPath)
	}
	if err != nil {
		return nil, err
	}
	pubPath := filepath.Join(dataDir, PublicKeyFile)
	want := MarshalPublicKey(k.pub)
	if have, err := os.ReadFile(pubPath); err != nil || !bytes.Equal(have, want) {
		if err := atomicfile.Write(pubPath, want, 0o644); err != nil {
			return nil, fmt.Errorf("write recording public key: %w", err)
		}
	}
	return k, nil
}

func loadKeys(path string) (*Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load recording key: %s is accessible by group or others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load recording key: %w", err)
	}
	priv, err := ruleset.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("load recording key %s: %w", path, err)
	}
	return NewKeys(priv), nil
}

func createKeys(dataDir, keyPath string) (*Keys, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create recording key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create recording key: %w", err)
	}
	tmp, err := atomicfile.WriteTemp(dataDir, ".tmp-recording-key-", ruleset.MarshalPrivateKey(priv), 0o600)
	if err != nil {
		return nil, fmt.Errorf("create recording key: %w", err)
	}
	defer os.Remove(tmp)
	// Link fails if another process created the key meanwhile: use theirs.
	if err := os.Link(tmp, keyPath); errors.Is(err, os.ErrExist) {
		return loadKeys(keyPath)
	} else if err != nil {
		return nil, fmt.Errorf("create recording key: %w", err)
	}
	if err := atomicfile.SyncDir(dataDir); err != nil {
		return nil, fmt.Errorf("create recording key: %w", err)
	}
	return NewKeys(priv), nil
}
