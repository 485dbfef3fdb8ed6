package ruleset

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// SignatureFile is the name of a signed ruleset directory's detached
// signature: one line holding the standard base64 of the ed25519
// signature over Digest of the directory's *.hcl files (by base name).
// Files other than *.hcl, including this one, are not covered and not
// loaded.
const SignatureFile = "ruleset.sig"

// Key files hold one line: the standard base64 of a raw ed25519 key, 32
// bytes for a public key ("NAME.pub") and 64 bytes (seed followed by
// public key, as crypto/ed25519 stores it) for a private key ("NAME.key",
// mode 0600).

var (
	// ErrNoSignature means a signature was required but none was found.
	ErrNoSignature = errors.New("ruleset is not signed")
	// ErrBadSignature means the signature does not match the files and key.
	ErrBadSignature = errors.New("ruleset signature does not verify")
)

// Bundle is a ruleset as it travels: its *.hcl files by base name and
// its detached signature, if any. rules push sends one; the daemon checks
// it with Verify and compiles it with Parse(b.Files).
type Bundle struct {
	Files     map[string][]byte
	Signature []byte // raw 64 bytes; nil when unsigned
}

// ReadBundle reads dir's *.hcl files and, if present, its SignatureFile.
func ReadBundle(dir string) (*Bundle, error) {
	names, err := hclNames(dir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("read bundle: no *.hcl files in %s", dir)
	}
	b := &Bundle{Files: make(map[string][]byte, len(names))}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("read bundle: %w", err)
		}
		b.Files[n] = data
	}
	sig, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read bundle: %w", err)
	default:
		if b.Signature, err = decodeB64(sig, ed25519.SignatureSize); err != nil {
			return nil, fmt.Errorf("read bundle: %s: %w", SignatureFile, err)
		}
	}
	return b, nil
}

// Verify checks the bundle's signature with pub.
func (b *Bundle) Verify(pub ed25519.PublicKey) error {
	return VerifyFiles(b.Files, b.Signature, pub)
}

// SignFiles signs the Digest of files, which are keyed by base name.
func SignFiles(files map[string][]byte, priv ed25519.PrivateKey) []byte {
	d := Digest(files)
	return ed25519.Sign(priv, d[:])
}

// VerifyFiles checks sig over the Digest of files with pub. It returns
// ErrNoSignature for an empty sig and ErrBadSignature for one that does
// not verify; file names must be base names ending in .hcl.
func VerifyFiles(files map[string][]byte, sig []byte, pub ed25519.PublicKey) error {
	for n := range files {
		if n != filepath.Base(n) || !strings.HasSuffix(n, ".hcl") {
			return fmt.Errorf("verify ruleset: file name %q is not a base name ending in .hcl", n)
		}
	}
	if len(sig) == 0 {
		return ErrNoSignature
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verify ruleset: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	d := Digest(files)
	if !ed25519.Verify(pub, d[:], sig) {
		return ErrBadSignature
	}
	return nil
}

// SignDir signs dir's *.hcl files and writes the signature to
// dir/SignatureFile, replacing any old one. It returns the signature.
func SignDir(dir string, priv ed25519.PrivateKey) ([]byte, error) {
	b, err := ReadBundle(dir)
	if err != nil {
		return nil, fmt.Errorf("sign ruleset: %w", err)
	}
	sig := SignFiles(b.Files, priv)
	line := base64.StdEncoding.EncodeToString(sig) + "\n"
	if err := os.WriteFile(filepath.Join(dir, SignatureFile), []byte(line), 0o644); err != nil {
		return nil, fmt.Errorf("sign ruleset: %w", err)
	}
	return sig, nil
}

// VerifyDir checks dir's SignatureFile against its *.hcl files.
func VerifyDir(dir string, pub ed25519.PublicKey) error {
	b, err := ReadBundle(dir)
	if err != nil {
		return fmt.Errorf("verify ruleset: %w", err)
	}
	return b.Verify(pub)
}

// MarshalPublicKey formats a public key file's content.
func MarshalPublicKey(pub ed25519.PublicKey) []byte {
	return []byte(base64.StdEncoding.EncodeToString(pub) + "\n")
}

// MarshalPrivateKey formats a private key file's content.
func MarshalPrivateKey(priv ed25519.PrivateKey) []byte {
	return []byte(base64.StdEncoding.EncodeToString(priv) + "\n")
}

// ParsePublicKey parses a public key file's content.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	b, err := decodeB64(data, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

// ParsePrivateKey parses a private key file's content.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	b, err := decodeB64(data, ed25519.PrivateKeySize)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	priv := ed25519.PrivateKey(b)
	if !bytes.Equal(ed25519.NewKeyFromSeed(priv.Seed()), priv) {
		return nil, errors.New("parse private key: public half does not match the seed")
	}
	return priv, nil
}

func decodeB64(data []byte, size int) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("decode base64: %w", err)
	}
	if len(b) != size {
		return nil, fmt.Errorf("decoded %d bytes, want %d", len(b), size)
	}
	return b, nil
}
