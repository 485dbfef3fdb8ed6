package credential

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"hash"
	"testing"
)

// TestScrubHash: after ScrubHash, the state a digest could be asked to
// give away (its marshaled form: chaining values and partial block) holds
// nothing of a secret it hashed.
func TestScrubHash(t *testing.T) {
	secret := []byte("Scrub-Me-S3cret-0123456789") // under one block: buffered whole
	for name, h := range map[string]hash.Hash{"sha256": sha256.New(), "md5": md5.New(), "sha1": sha1.New(), "sha512": sha512.New()} {
		h.Write(secret)
		before, err := h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(before, secret) {
			t.Fatalf("%s: the marshaled digest does not show its input; the test proves nothing", name)
		}
		ScrubHash(h)
		after, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
		if bytes.Contains(after, secret[:8]) {
			t.Fatalf("%s: the digest still holds the secret after ScrubHash", name)
		}
	}
}
