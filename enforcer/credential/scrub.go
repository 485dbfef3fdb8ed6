package credential

import "hash"

// ScrubHash overwrites what a standard-library MD5, SHA-1 or SHA-2 digest
// holds of its input, once a secret went through it: Reset overwrites the
// chaining state, and a zero block written as one byte and then the rest
// goes through (and so overwrites) the partial-block buffer, which Reset
// leaves as it was. It relies on those digests buffering a partial block
// in one array. Copies that Sum makes of the state on its own stack are
// out of reach. Every decoder that answers a login with a secret (SCRAM,
// MD5, MySQL's scrambles) uses it.
func ScrubHash(h hash.Hash) {
	var zero [128]byte
	n := min(h.BlockSize(), len(zero))
	h.Reset()
	h.Write(zero[:1])
	h.Write(zero[1:n])
	h.Reset()
}
