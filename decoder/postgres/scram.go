package postgres

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/enforcer/credential"
)

// scramClient is the client side of SCRAM-SHA-256 (RFC 5802, RFC 7677)
// as PostgreSQL speaks it, with tls-server-end-point channel binding
// (RFC 5929) for SCRAM-SHA-256-PLUS. The proxy uses it to authenticate
// with an injected credential; client sessions' own SCRAM exchanges are
// relayed, never terminated.
//
// pgx implements the same exchange but does not export it, and the
// maintained SCRAM libraries do not speak PostgreSQL's variant (an empty
// user name, the server's own framing), so it is written here against the
// RFCs.
type scramClient struct {
	password []byte
	// gs2 is the GS2 header: "n,," (no channel binding), "y,," (the
	// client could bind but the server did not offer PLUS) or
	// "p=tls-server-end-point,,".
	gs2         string
	cbind       []byte // channel binding data for PLUS
	clientNonce string
	firstBare   string
	serverSig   []byte
	done        bool
}

const (
	scramSHA256     = "SCRAM-SHA-256"
	minSCRAMRounds  = 4096     // PostgreSQL's default and RFC 7677's minimum
	maxSCRAMRounds  = 10000000 // a server asking for more is refused
	scramNonceBytes = 18
)

// chooseSCRAM picks the mechanism from the server's list: PLUS when the
// server offers it and the server hop's certificate gives binding data,
// else plain SCRAM-SHA-256 (announcing "y" when the hop is TLS, so a
// server that did support binding detects a downgrade).
func chooseSCRAM(mechs []string, password []byte, tlsHop bool, cert *x509.Certificate) (*scramClient, string, error) {
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	sc := &scramClient{password: password, gs2: "n,,"}
	mech := scramSHA256
	switch {
	case has(scramPlus) && cert != nil:
		cb, err := serverEndPoint(cert)
		if err == nil {
			sc.gs2, sc.cbind, mech = "p=tls-server-end-point,,", cb, scramPlus
		} else if !has(scramSHA256) {
			return nil, "", err
		}
	case !has(scramSHA256):
		return nil, "", fmt.Errorf("the server offers no SCRAM mechanism the proxy speaks (%s)", strings.Join(mechs, ", "))
	case tlsHop:
		sc.gs2 = "y,,"
	}
	var nonce [scramNonceBytes]byte
	rand.Read(nonce[:])
	sc.clientNonce = base64.StdEncoding.EncodeToString(nonce[:])
	return sc, mech, nil
}

// serverEndPoint is the tls-server-end-point binding: the hash of the
// server's certificate, with the certificate's signature hash (SHA-256
// for MD5 and SHA-1).
func serverEndPoint(cert *x509.Certificate) ([]byte, error) {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, fmt.Errorf("no tls-server-end-point hash for a certificate signed with %s", cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}

// first returns the client-first-message. PostgreSQL takes the user from
// the startup packet, so the SCRAM user name is empty.
func (sc *scramClient) first() []byte {
	sc.firstBare = "n=,r=" + sc.clientNonce
	return []byte(sc.gs2 + sc.firstBare)
}

// final answers the server-first-message with the client-final-message.
func (sc *scramClient) final(serverFirst []byte) ([]byte, error) {
	var nonce, salt string
	rounds := 0
	for _, f := range strings.Split(string(serverFirst), ",") {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "r":
			nonce = v
		case "s":
			salt = v
		case "i":
			rounds, _ = strconv.Atoi(v)
		case "m":
			return nil, errors.New("scram: the server requires an extension")
		}
	}
	if !strings.HasPrefix(nonce, sc.clientNonce) || len(nonce) == len(sc.clientNonce) {
		return nil, errors.New("scram: the server's nonce does not extend the client's")
	}
	if rounds < minSCRAMRounds || rounds > maxSCRAMRounds {
		return nil, fmt.Errorf("scram: iteration count %d outside %d..%d", rounds, minSCRAMRounds, maxSCRAMRounds)
	}
	saltBytes, err := base64.StdEncoding.DecodeString(salt)
	if err != nil || len(saltBytes) == 0 {
		return nil, errors.New("scram: invalid salt")
	}
	// Everything derived from the password (the salted password, the
	// client and server keys, the stored key, the proof) lives in byte
	// slices cleared before returning; the MACs keyed with them are
	// wiped too.
	salted := saltedPassword(sc.password, saltBytes, rounds)
	defer clear(salted)
	km := newKeyedMAC(salted)
	defer km.wipe()
	clientKey := km.sum(nil, []byte("Client Key"))
	defer clear(clientKey)
	serverKey := km.sum(nil, []byte("Server Key"))
	defer clear(serverKey)
	storedKey := sha256Wiped(clientKey)
	defer clear(storedKey)

	withoutProof := []byte("c=")
	withoutProof = base64.StdEncoding.AppendEncode(withoutProof, append([]byte(sc.gs2), sc.cbind...))
	withoutProof = append(append(withoutProof, ",r="...), nonce...)
	authMessage := make([]byte, 0, len(sc.firstBare)+len(serverFirst)+len(withoutProof)+2)
	authMessage = append(append(append(append(append(authMessage, sc.firstBare...), ','), serverFirst...), ','), withoutProof...)
	sm := newKeyedMAC(storedKey)
	proof := sm.sum(nil, authMessage)
	sm.wipe()
	defer clear(proof)
	for i := range proof {
		proof[i] ^= clientKey[i]
	}
	vm := newKeyedMAC(serverKey)
	sc.serverSig = vm.sum(nil, authMessage)
	vm.wipe()
	out := append(withoutProof, ",p="...)
	return base64.StdEncoding.AppendEncode(out, proof), nil
}

// verify checks the server-final-message: the server proves it knew the
// password too, so a server that merely accepts anything is caught.
func (sc *scramClient) verify(serverFinal []byte) error {
	s := string(serverFinal)
	if e, ok := strings.CutPrefix(s, "e="); ok {
		return fmt.Errorf("scram: the server rejected the exchange: %s", e)
	}
	v, ok := strings.CutPrefix(s, "v=")
	if !ok {
		return errors.New("scram: invalid server-final-message")
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	sig, err := base64.StdEncoding.DecodeString(v)
	if err != nil || sc.serverSig == nil || !hmac.Equal(sig, sc.serverSig) {
		return errors.New("scram: the server's signature does not match; it does not know the credential")
	}
	sc.done = true
	return nil
}

// saslMechanisms parses an AuthenticationSASL body after its code.
func saslMechanisms(b []byte) []string {
	var out []string
	for len(b) > 0 && b[0] != 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			break
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out
}

// saltedPassword is SCRAM's Hi(): PBKDF2 (RFC 8018) with HMAC-SHA-256,
// one 32-byte block. It is written out rather than taken from
// crypto/pbkdf2 (Go 1.26) or golang.org/x/crypto/pbkdf2 (v0.57, a
// wrapper that converts to a string), whose password is a string: a
// string copy of the secret could never be wiped. The MAC and the
// intermediate blocks are cleared; the caller clears the result.
func saltedPassword(password, salt []byte, rounds int) []byte {
	m := newKeyedMAC(password)
	defer m.wipe()
	u := m.sum(make([]byte, 0, sha256.Size), salt, []byte{0, 0, 0, 1})
	out := append([]byte(nil), u...)
	for i := 1; i < rounds; i++ {
		u = m.sum(u[:0], u)
		for j := range out {
			out[j] ^= u[j]
		}
	}
	clear(u)
	return out
}

// keyedMAC is HMAC-SHA-256 (RFC 2104) whose key material can be wiped.
// crypto/hmac keeps the key XORed with its pads in buffers no caller can
// reach, so a password-keyed crypto/hmac leaves the password readable in
// memory until the garbage collector's reuse overwrites it.
type keyedMAC struct {
	inner, outer hash.Hash
	ipad, opad   [sha256.BlockSize]byte
}

func newKeyedMAC(key []byte) *keyedMAC {
	m := &keyedMAC{inner: sha256.New(), outer: sha256.New()}
	var k []byte
	if len(key) > sha256.BlockSize {
		k = sha256Wiped(key)
		defer clear(k)
	} else {
		k = key
	}
	copy(m.ipad[:], k)
	copy(m.opad[:], k)
	for i := range m.ipad {
		m.ipad[i] ^= 0x36
		m.opad[i] ^= 0x5c
	}
	return m
}

// sum appends HMAC(key, the concatenation of parts) to dst. A part may
// alias dst's spare capacity: parts are read before dst is written.
func (m *keyedMAC) sum(dst []byte, parts ...[]byte) []byte {
	m.inner.Reset()
	m.inner.Write(m.ipad[:]) // a whole block: hashed in place, not buffered
	for _, p := range parts {
		m.inner.Write(p)
	}
	var ih [sha256.Size]byte
	m.inner.Sum(ih[:0])
	m.outer.Reset()
	m.outer.Write(m.opad[:])
	m.outer.Write(ih[:])
	clear(ih[:])
	return m.outer.Sum(dst)
}

// wipe clears the pads and both digests' state.
func (m *keyedMAC) wipe() {
	clear(m.ipad[:])
	clear(m.opad[:])
	credential.ScrubHash(m.inner)
	credential.ScrubHash(m.outer)
}

// sha256Wiped returns SHA-256(b), scrubbing the digest that held b.
func sha256Wiped(b []byte) []byte {
	h := sha256.New()
	h.Write(b)
	out := h.Sum(make([]byte, 0, sha256.Size))
	credential.ScrubHash(h)
	return out
}
