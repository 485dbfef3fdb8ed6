// Package rulesource pulls signed ruleset bundles from a central source
// (HTTPS, S3-compatible storage or a NATS JetStream object store) and
// publishes them there. A bundle is one JSON object holding the *.hcl
// files of a ruleset, an increasing version and an ed25519 signature over
// both, so a VM can refuse a tampered bundle and an older one replayed.
// The package does no policy: it fetches, verifies and keeps the last
// good bundle on disk; the daemon compiles and applies it.
package rulesource

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ruleset"
)

// Format is the bundle format written in every bundle's "format" field.
const Format = "sluice-ruleset-bundle-v1"

// MaxBundle bounds a bundle's encoded size; larger ones are refused
// before they are read whole.
const MaxBundle = 16 << 20

// maxFiles bounds the files of one bundle.
const maxFiles = 1000

var (
	// ErrBadSignature means the bundle's signature does not verify with
	// the configured key: the files, the version or the signature were
	// changed after signing, or another key signed it.
	ErrBadSignature = errors.New("bundle signature does not verify with rules_public_key")
	// ErrRollback means the bundle's version is older than the one the
	// VM already applied: an old bundle replayed.
	ErrRollback = errors.New("bundle version is older than the version already applied")
	// ErrNotFound means the source holds no bundle at that address.
	ErrNotFound = errors.New("no bundle at the source")
)

// Bundle is a signed ruleset as it travels between the publisher and the
// VMs.
type Bundle struct {
	// Version increases with every publish (the publish time in
	// nanoseconds since the Unix epoch).
	Version int64
	// Files are the ruleset's *.hcl files by base name.
	Files map[string][]byte
	// Signature is the raw ed25519 signature of SignedMessage.
	Signature []byte
}

type wire struct {
	Format    string            `json:"format"`
	Version   int64             `json:"version"`
	Files     map[string][]byte `json:"files"`
	Signature []byte            `json:"signature"`
}

// SignedMessage is what a bundle's signature covers: the line
// "sluice-ruleset-bundle-v1\n", the version as a big-endian uint64, and
// ruleset.Digest of the files. Changing a file, adding or removing one,
// or changing the version breaks the signature.
func (b *Bundle) SignedMessage() []byte {
	d := ruleset.Digest(b.Files)
	m := make([]byte, 0, len(Format)+1+8+len(d))
	m = append(m, Format+"\n"...)
	m = binary.BigEndian.AppendUint64(m, uint64(b.Version))
	return append(m, d[:]...)
}

// Digest is ruleset.Digest of the bundle's files, in hex.
func (b *Bundle) Digest() string {
	d := ruleset.Digest(b.Files)
	return fmt.Sprintf("%x", d)
}

// Published is the time the version stands for.
func (b *Bundle) Published() time.Time { return time.Unix(0, b.Version) }

// Sign sets the bundle's signature with priv.
func (b *Bundle) Sign(priv ed25519.PrivateKey) {
	b.Signature = ed25519.Sign(priv, b.SignedMessage())
}

// Verify checks the signature with pub, then that the version is newer
// than last (the version last applied; 0 for none). Equal versions pass:
// the caller compares contents to tell "unchanged" from a forgery, which
// the signature already rules out.
func (b *Bundle) Verify(pub ed25519.PublicKey, last int64) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("verify bundle: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if len(b.Signature) != ed25519.SignatureSize || !ed25519.Verify(pub, b.SignedMessage(), b.Signature) {
		return ErrBadSignature
	}
	if b.Version < last {
		return fmt.Errorf("%w: bundle version %d, applied %d", ErrRollback, b.Version, last)
	}
	return nil
}

// Encode returns the bundle as JSON.
func (b *Bundle) Encode() ([]byte, error) {
	return json.MarshalIndent(wire{Format: Format, Version: b.Version, Files: b.Files, Signature: b.Signature}, "", " ")
}

// Decode parses an encoded bundle and checks its shape (not its
// signature: see Verify).
func Decode(data []byte) (*Bundle, error) {
	if len(data) > MaxBundle {
		return nil, fmt.Errorf("decode bundle: %d bytes, more than the %d allowed", len(data), MaxBundle)
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("decode bundle: %w", err)
	}
	if w.Format != Format {
		return nil, fmt.Errorf("decode bundle: format %q, want %q", w.Format, Format)
	}
	if w.Version <= 0 {
		return nil, fmt.Errorf("decode bundle: version %d is not positive", w.Version)
	}
	if len(w.Files) == 0 || len(w.Files) > maxFiles {
		return nil, fmt.Errorf("decode bundle: %d files, want 1 to %d", len(w.Files), maxFiles)
	}
	for n := range w.Files {
		if !ValidName(n) {
			return nil, fmt.Errorf("decode bundle: file name %q: want a plain name ending in .hcl", n)
		}
	}
	return &Bundle{Version: w.Version, Files: w.Files, Signature: w.Signature}, nil
}

// ValidName reports whether n is a rule file's name as bundles carry it:
// a base name ending in .hcl that does not start with a dot.
func ValidName(n string) bool {
	return n == filepath.Base(n) && strings.HasSuffix(n, ".hcl") && !strings.HasPrefix(n, ".") && !strings.ContainsAny(n, `/\`)
}

// New builds an unsigned bundle of files at version (the current time in
// nanoseconds when version is 0).
func New(files map[string][]byte, version int64) *Bundle {
	if version == 0 {
		version = time.Now().UnixNano()
	}
	return &Bundle{Version: version, Files: files}
}

// Hash is the SHA-256 of an encoded bundle, to recognise one seen before.
func Hash(data []byte) [32]byte { return sha256.Sum256(data) }
