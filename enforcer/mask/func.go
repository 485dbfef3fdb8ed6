package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
	"unicode/utf8"

	"github.com/sluicehq/sluice/ruleset"
)

// Func masks one value. It appends the masked form of v to dst and
// returns the extended slice, or reports null when the value must be sent
// as SQL NULL (out is then dst unchanged). v is not retained or modified.
// Every Func here is safe for concurrent use.
type Func func(dst, v []byte) (out []byte, null bool)

// HashPrefix starts every value the hash function produces.
const HashPrefix = "h:"

// hashHexLen is how many hex digits of the HMAC the hash function keeps:
// 64 bits, plenty to keep distinct test values distinct.
const hashHexLen = 16

// Domain-separation tags, so the functions' keyed outputs are unrelated
// to one another.
const (
	tagHash   = 'h'
	tagEmail  = 'e'
	tagDigits = 'd'
)

// keyed computes HMAC-SHA256 under one key without allocating per call.
type keyed struct{ pool sync.Pool }

// hstate is one pooled HMAC with buffers that would otherwise escape to
// the heap through the hash.Hash interface.
type hstate struct {
	h   hash.Hash
	pre [2]byte
	sum [sha256.Size]byte
}

func newKeyed(key []byte) *keyed {
	k := &keyed{}
	key = append([]byte(nil), key...)
	k.pool.New = func() any { return &hstate{h: hmac.New(sha256.New, key)} }
	return k
}

// sum writes HMAC(key, tag || counter || v) into out.
func (k *keyed) sum(out *[sha256.Size]byte, tag byte, counter byte, v []byte) {
	st := k.pool.Get().(*hstate)
	st.h.Reset()
	st.pre = [2]byte{tag, counter}
	st.h.Write(st.pre[:])
	st.h.Write(v)
	*out = [sha256.Size]byte(st.h.Sum(st.sum[:0]))
	k.pool.Put(st)
}

// Redact replaces every value with replacement.
func Redact(replacement string) Func {
	return func(dst, _ []byte) ([]byte, bool) { return append(dst, replacement...), false }
}

// Null sends every value as SQL NULL.
func Null() Func { return func(dst, _ []byte) ([]byte, bool) { return dst, true } }

// Partial keeps the last keep characters (runes; bytes of invalid UTF-8
// count one each) and replaces every other character with '*'. A value
// of keep characters or fewer is starred entirely, so partial never
// reveals a whole short value.
func Partial(keep int) Func {
	return func(dst, v []byte) ([]byte, bool) {
		n := utf8.RuneCount(v)
		if n <= keep {
			for range n {
				dst = append(dst, '*')
			}
			return dst, false
		}
		// Find where the kept tail starts.
		tail := len(v)
		for range keep {
			_, w := utf8.DecodeLastRune(v[:tail])
			tail -= w
		}
		for range n - keep {
			dst = append(dst, '*')
		}
		return append(dst, v[tail:]...), false
	}
}

// Hash replaces a value with HashPrefix and the first 16 hex digits of
// HMAC-SHA256 under key of the value's bytes: "h:3f9a0c2e5b7d1148". The
// same value gives the same output for as long as the key is kept, in
// every session and column, so joins and equality in test data still
// line up; without the key the output cannot be reversed or confirmed by
// guessing.
func Hash(key []byte) Func { return newKeyed(key).hash }

func (k *keyed) hash(dst, v []byte) ([]byte, bool) {
	var sum [sha256.Size]byte
	k.sum(&sum, tagHash, 0, v)
	dst = append(dst, HashPrefix...)
	return hex.AppendEncode(dst, sum[:hashHexLen/2]), false
}

// Email keeps the domain of an address and replaces its local part with
// 8 hex digits of a keyed HMAC of the whole address:
// "alice@example.com" becomes "5c1e09ab@example.com". The output is still
// an address, stable for the same input and key. A value without a local
// part and domain around its last '@' is hashed as by Hash.
func Email(key []byte) Func { return newKeyed(key).email }

func (k *keyed) email(dst, v []byte) ([]byte, bool) {
	at := -1
	for i := len(v) - 1; i >= 0; i-- {
		if v[i] == '@' {
			at = i
			break
		}
	}
	if at <= 0 || at == len(v)-1 {
		return k.hash(dst, v)
	}
	var sum [sha256.Size]byte
	k.sum(&sum, tagEmail, 0, v)
	dst = hex.AppendEncode(dst, sum[:4])
	return append(dst, v[at:]...), false
}

// Digits replaces each ASCII digit with a digit, and each ASCII letter
// with a letter of the same case, drawn from a keyed HMAC of the whole
// value; every other ASCII byte (separators, spaces, punctuation) is kept
// and every other character becomes '*'. The output has the value's
// length in characters and its format ("4111-1111-1111-1111" stays
// dddd-dddd-dddd-dddd), and is stable for the same input and key. It is
// not Luhn-valid or otherwise checksummed.
func Digits(key []byte) Func { return newKeyed(key).digits }

func (k *keyed) digits(dst, v []byte) ([]byte, bool) {
	var sum [sha256.Size]byte
	used := len(sum) // force the first block
	block := byte(0)
	next := func() byte {
		if used == len(sum) {
			k.sum(&sum, tagDigits, block, v)
			block++
			used = 0
		}
		b := sum[used]
		used++
		return b
	}
	for i := 0; i < len(v); {
		c := v[i]
		switch {
		case c >= '0' && c <= '9':
			dst = append(dst, '0'+next()%10)
		case c >= 'a' && c <= 'z':
			dst = append(dst, 'a'+next()%26)
		case c >= 'A' && c <= 'Z':
			dst = append(dst, 'A'+next()%26)
		case c < utf8.RuneSelf:
			dst = append(dst, c)
		default:
			_, w := utf8.DecodeRune(v[i:])
			dst = append(dst, '*')
			i += w
			continue
		}
		i++
	}
	return dst, false
}

// FuncFor returns the function a mask spec names, keyed with key where
// the function needs one.
func FuncFor(spec *ruleset.MaskSpec, key []byte) (Func, error) {
	return funcFor(spec, func() *keyed { return newKeyed(key) })
}

func funcFor(spec *ruleset.MaskSpec, k func() *keyed) (Func, error) {
	switch spec.Using {
	case "redact", "":
		return Redact(spec.Replacement), nil
	case "partial":
		return Partial(spec.Keep), nil
	case "hash":
		return k().hash, nil
	case "email":
		return k().email, nil
	case "null":
		return Null(), nil
	case "digits":
		return k().digits, nil
	}
	return nil, fmt.Errorf("mask function %q: %w", spec.Using, ErrUnknown)
}
