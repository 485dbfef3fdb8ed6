package mysql

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"time"

	"filippo.io/edwards25519"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// Credential injection, in the login's sequence (session.go): the
// server's greeting goes to the client as in a relayed login (its
// scramble, its connection id); the client's handshake response is read,
// its user name kept as the client's, and then the session asks the
// enforcer how it authenticates. A target without credentials relays the
// client's own login. A flow granted a credential never forwards what
// the client sent: the proxy writes its own handshake response with the
// credential's user and the client's capabilities, character set and
// database, answers the server's authentication itself with the
// credential's secret (mysql_native_password, caching_sha2_password with
// its fast path and full authentication, client_ed25519,
// sha256_password, mysql_clear_password over TLS only; an auth switch
// between them), and tells the client only the outcome: the server's OK,
// or an ERR. The client is never asked anything after its handshake
// response, so it has no more rounds to send and never waits for a
// question that will not come; whatever password it used is never
// checked. A flow the ruleset grants no credential gets an ERR 1045
// (28000) naming why in place of the login's outcome, and nothing but
// the server's greeting has crossed the server hop: the proxy sent it
// nothing.
//
// The client gets the server's own greeting, not a scramble of the
// proxy's: its answer is discarded unread whatever it was computed from,
// and the greeting stays what the recording and a relayed login show.
//
// The scrambles are written here rather than taken from vitess's
// exported ones: each is a few lines, and the vitess module would bring
// its gRPC and protobuf dependency tree into the daemon (the tests use
// it, as a stand-in MySQL 8 server).
//
// Secrets: the credential's secret is read once per login and wiped when
// the login ends; every answer derived from it is cleared once written,
// and written straight to the connection rather than through a buffer
// that would keep a copy. Neither the secret nor an answer is logged or
// recorded: the recording's tap is on the client hop, which never carries
// them.

// Authentication plugins the proxy answers with an injected credential.
const (
	pluginNative      = "mysql_native_password"
	pluginCachingSha2 = "caching_sha2_password"
	pluginSha256      = "sha256_password"
	pluginEd25519     = "client_ed25519"
	pluginClear       = "mysql_clear_password"
)

// codeAccessDenied is ER_ACCESS_DENIED_ERROR, what a server sends for a
// wrong password, and what a client of an injected target gets when it
// has no credential or the server refused the injected one. SQLSTATE
// 28000.
const (
	codeAccessDenied  = 1045
	stateAccessDenied = "28000"
)

// scrambleLen is the length of the scramble (nonce) of
// mysql_native_password, caching_sha2_password and sha256_password.
const scrambleLen = 20

// injection decides how the session authenticates. It returns nil when
// the client authenticates itself, and refuses the client (returning the
// error) with an ERR 1045 of sequence id seq when the target injects
// credentials and this flow has none.
func (s *session) injection(cw *packetWriter, seq byte) (*enforcer.Injection, error) {
	inj, err := s.p.Session.Injection()
	if err == nil {
		return inj, nil
	}
	var ge *ruleset.GrantError
	if errors.As(err, &ge) {
		s.refuseLogin(cw, seq, fmt.Sprintf("sluice: no database credential for this job on target %q: %s. Sluice holds this database's credentials and injects them only for jobs the runner's ruleset grants them to (`sluice rules explain` shows the grants).", ge.Target, ge.Reason))
	} else {
		s.refuseLogin(cw, seq, "sluice: credential injection failed: "+err.Error())
	}
	return nil, err
}

// fetchSecret reads the injected credential's secret; a failure refuses
// the client without the details, which go to the daemon's log. The
// caller calls wipe once the login is over.
func (s *session) fetchSecret(ctx context.Context, inj *enforcer.Injection, cw *packetWriter, seq byte) (secret []byte, wipe func(), err error) {
	sec, err := inj.Secret(ctx)
	if err != nil {
		s.p.Log.Error("cannot read the injected credential", "credential", inj.Name, "error", err)
		s.refuseLogin(cw, seq, fmt.Sprintf("sluice: the credential %q for this database cannot be read; the runner's Sluice daemon log says why.", inj.Name))
		return nil, nil, err
	}
	return sec.Bytes(), sec.Wipe, nil
}

// refuseLogin ends the login with an ERR 1045 (28000) of sequence id seq.
// A recording starts here, as at a server's ERR.
func (s *session) refuseLogin(cw *packetWriter, seq byte, msg string) {
	if s.openTap(cw, seq) != nil {
		return // the client was told the session cannot be recorded
	}
	s.loginErr(cw, seq, codeAccessDenied, stateAccessDenied, msg)
}

// greetingAuth returns the greeting's scramble (its first 20 bytes, the
// nonce every SHA-based plugin uses) and the server's default
// authentication plugin ("" when it names none).
func greetingAuth(g greeting) (scramble []byte, plugin string, err error) {
	b := g.raw
	// HandshakeV10 after the capabilities' low half: character set (1),
	// status (2), capabilities' high half (2), auth data length (1),
	// reserved (10), then the scramble's second part and the plugin.
	if g.capHigh == 0 || len(b) < g.capLow+18 {
		return nil, "", &ProtocolError{Msg: "a greeting without the scramble's second part"}
	}
	part1 := b[g.capLow-9 : g.capLow-1] // before the filler byte
	n2 := max(13, int(b[g.capLow+7])-8)
	rest := b[g.capLow+18:]
	if len(rest) < n2 {
		n2 = len(rest)
	}
	scramble = append(append(make([]byte, 0, 8+n2), part1...), rest[:n2]...)
	if len(scramble) < scrambleLen {
		return nil, "", &ProtocolError{Msg: "a greeting with a scramble shorter than 20 bytes"}
	}
	rest = rest[n2:]
	if p, _, err := cstring(rest); err == nil {
		plugin = string(p)
	} else {
		plugin = string(rest) // some servers end the packet with the name
	}
	return scramble[:scrambleLen], plugin, nil
}

// injectedCaps are the capabilities of the proxy's own handshake
// response: the ones agreed with the client (caps), with plugin
// authentication, without connection attributes (not passed on), and
// CLIENT_CONNECT_WITH_DB as the client named a database, among those the
// server offers (serverCaps).
func injectedCaps(caps, serverCaps uint32, database string) uint32 {
	caps = (caps | capProtocol41 | capSecureConnection | capPluginAuth) &^ capConnectAttrs
	if database != "" {
		caps |= capConnectWithDB
	} else {
		caps &^= capConnectWithDB
	}
	return caps & serverCaps
}

// injectedResponse is the HandshakeResponse41 the proxy sends in place
// of the client's: capabilities caps, the client's maximum packet size
// and character set (from its response cr), the credential's user, the
// answer to the server's plugin, and the client's database. Connection
// attributes are not passed on (caps has CLIENT_CONNECT_ATTRS cleared).
func injectedResponse(caps uint32, cr []byte, user, database, plugin string, auth []byte) []byte {
	b := make([]byte, 32, 32+len(user)+1+9+len(auth)+len(database)+1+len(plugin)+1)
	put32(b, caps)
	copy(b[4:9], cr[4:9])
	b = append(append(b, user...), 0)
	if caps&capPluginAuthLenenc != 0 {
		b = appendLenencString(b, auth)
	} else {
		b = append(append(b, byte(len(auth))), auth...)
	}
	if caps&capConnectWithDB != 0 {
		b = append(append(b, database...), 0)
	}
	return append(append(b, plugin...), 0)
}

// injectAuth logs in to the server with the injected credential: it
// sends the proxy's own handshake response (sequence id sseq), answers
// the server's authentication, and passes the outcome to the client as
// the answer to its handshake response (sequence id cseq+1). secret is
// the credential's password; the caller wipes it.
func (s *session) injectAuth(inj *enforcer.Injection, secret []byte, g greeting, caps uint32, clientResp []byte, database string,
	cw *packetWriter, sr *packetReader, sw *packetWriter, sseq, cseq byte) error {
	cseq++ // the client's answer
	cantLogin := func(reason string) error {
		s.refuseLogin(cw, cseq, fmt.Sprintf("sluice: cannot log in to the database with the injected credential %q (user %s): %s", inj.Name, inj.User, reason))
		return fmt.Errorf("injected credential %s: %s", inj.Name, reason)
	}
	scramble, plugin, err := greetingAuth(g)
	if err != nil {
		return cantLogin(err.Error())
	}
	if g.caps&capPluginAuth == 0 {
		return cantLogin("the server does not support authentication plugins (CLIENT_PLUGIN_AUTH)")
	}
	if s.upstreamTLS {
		caps |= capSSL
	}
	switch plugin {
	case pluginNative, pluginCachingSha2:
	default:
		// A plugin the first answer cannot be computed for (ed25519
		// needs its own nonce): answer as mysql_native_password, and the
		// server switches to the account's plugin.
		plugin = pluginNative
	}
	method := plugin
	auth := s.answer(plugin, secret, scramble)
	resp := injectedResponse(caps, clientResp, inj.User, database, plugin, auth)
	clear(auth)
	err = s.sendSecret(sw, sseq, resp)
	clear(resp)
	if err != nil {
		return err
	}

	keyRequested := false // full authentication without TLS: the server's RSA key was asked for
	for round := 0; ; round++ {
		if round > maxAuthRoundTrips {
			return cantLogin("too many authentication round trips")
		}
		s.up.SetReadDeadline(time.Now().Add(loginTimeout))
		b, seq, err := sr.next()
		if err != nil {
			s.loginErr(cw, cseq, codeConnKilled, stateConnKilled, "sluice: lost the connection to the database during login")
			return fmt.Errorf("read authentication: %w", err)
		}
		if len(b) == 0 {
			return cantLogin("an empty authentication packet from the server")
		}
		var answer []byte
		switch b[0] {
		case 0x00:
			// Recording starts with the server's OK, as in a relayed
			// login; the relay records what the client sends from here
			// on, packet by packet.
			if err := s.openTap(cw, cseq); err != nil {
				return err
			}
			s.p.Session.Record(record.Metadata, record.Event{Type: record.TypeNote, Verdict: "allow", Rule: inj.Rule,
				Reason: "logged in with injected credential " + inj.Name,
				Fields: map[string]string{"credential": inj.Name, "db_user": inj.User, "client_user": s.clientUser, "method": method}})
			if st, err := okStatus(b); err == nil {
				s.dialect.NoBackslashEscapes = st&statusNoBackslashEscapes != 0
			}
			cw.seq = cseq
			if err := cw.write(b); err != nil {
				return err
			}
			if err := cw.flush(); err != nil {
				return err
			}
			s.p.Log.Info("authenticated with an injected credential", "credential", inj.Name, "db_user", inj.User,
				"client_user", s.clientUser, "rule", inj.Rule, "method", method, "upstream_tls", s.upstreamTLS)
			return nil
		case 0xff:
			e := parseErr(b)
			if e.code == codeAccessDenied {
				return cantLogin("the server refused it: " + string(e.msg))
			}
			// Anything else (no such database, too many connections) is
			// the server's own answer, as the client would have had it.
			if err := s.openTap(cw, cseq); err != nil {
				return err
			}
			cw.seq = cseq
			cw.write(b)
			cw.flush()
			return fmt.Errorf("the server refused the login: %s", e.msg)
		case 0xfe:
			// AuthSwitchRequest: the account's plugin and a new nonce.
			if len(b) == 1 {
				return cantLogin("the server asks for the pre-4.1 password scheme")
			}
			p, data, cerr := cstring(b[1:])
			if cerr != nil {
				p, data = b[1:], nil
			}
			plugin, method, keyRequested = string(p), string(p), false
			switch plugin {
			case pluginNative, pluginCachingSha2, pluginSha256:
				if len(data) < scrambleLen {
					return cantLogin("an auth switch with a short scramble")
				}
				scramble = append(scramble[:0], data[:scrambleLen]...)
				if plugin == pluginSha256 {
					answer, keyRequested = s.fullAuth(secret, []byte{0x01})
				} else {
					answer = s.answer(plugin, secret, scramble)
				}
			case pluginEd25519:
				if len(data) < 32 {
					return cantLogin("an ed25519 auth switch with a short nonce")
				}
				answer = ed25519Answer(secret, data[:32])
			case pluginClear:
				if !s.upstreamTLS {
					return cantLogin("the server asks for the password in clear text on a hop without TLS; set the target's upstream_tls to \"require\" or \"verify-full\"")
				}
				answer = append(append([]byte(nil), secret...), 0)
			default:
				return cantLogin(fmt.Sprintf("the server asks for authentication plugin %q, which credential injection does not support (use mysql_native_password, caching_sha2_password or ed25519 for this account)", plugin))
			}
		case 0x01:
			// AuthMoreData: caching_sha2_password's fast authentication
			// result or its request for full authentication, or the RSA
			// public key asked for.
			switch {
			case plugin == pluginCachingSha2 && len(b) == 2 && b[1] == 0x03:
				continue // fast authentication succeeded: the OK follows
			case plugin == pluginCachingSha2 && len(b) == 2 && b[1] == 0x04:
				method = pluginCachingSha2 + " (full)"
				answer, keyRequested = s.fullAuth(secret, []byte{0x02})
			case keyRequested:
				if answer, err = rsaAnswer(secret, scramble, b[1:]); err != nil {
					return cantLogin(err.Error())
				}
				keyRequested = false
				s.p.Log.Warn("the password went to the server encrypted with an RSA key the server sent on a hop without TLS, which nothing authenticates; set the target's upstream_tls to \"verify-full\"", "credential", inj.Name)
			default:
				return cantLogin(fmt.Sprintf("an authentication packet the proxy cannot answer for plugin %q", plugin))
			}
		default:
			return cantLogin(fmt.Sprintf("an authentication packet of type 0x%02x", b[0]))
		}
		err = s.sendSecret(sw, seq+1, answer)
		clear(answer)
		if err != nil {
			return err
		}
	}
}

// fullAuth answers a request for the password itself (caching_sha2's
// full authentication, sha256_password): in clear text over a TLS hop;
// otherwise askKey (the request for the server's RSA public key, which
// the password is then encrypted with), and keyRequested set.
// Without TLS the key comes unauthenticated: a machine in the middle
// could send its own and read the password, so rsaAnswer's caller warns.
func (s *session) fullAuth(secret, askKey []byte) (answer []byte, keyRequested bool) {
	if s.upstreamTLS {
		return append(append([]byte(nil), secret...), 0), false
	}
	return append([]byte(nil), askKey...), true
}

// answer is the first answer of plugin (mysql_native_password or
// caching_sha2_password's fast path) to scramble.
func (s *session) answer(plugin string, secret, scramble []byte) []byte {
	if plugin == pluginCachingSha2 {
		return sha2Scramble(secret, scramble)
	}
	return nativeAnswer(secret, scramble)
}

// sendSecret writes one authentication packet with sequence id seq
// straight to the server hop (after what sw holds), so that no buffer
// keeps a copy of it; the caller clears payload.
func (s *session) sendSecret(sw *packetWriter, seq byte, payload []byte) error {
	if err := sw.flush(); err != nil {
		return err
	}
	if len(payload) >= maxPiece {
		return errors.New("an authentication packet too large to send")
	}
	n := len(payload)
	frame := make([]byte, 4+n)
	frame[0], frame[1], frame[2], frame[3] = byte(n), byte(n>>8), byte(n>>16), seq
	copy(frame[4:], payload)
	_, err := s.up.Write(frame)
	clear(frame)
	sw.seq = seq + 1
	return err
}

// nativeAnswer is mysql_native_password's answer:
// SHA1(password) XOR SHA1(scramble || SHA1(SHA1(password))). An empty
// password answers empty.
func nativeAnswer(password, scramble []byte) []byte {
	return xorAnswer(sha1.New(), password, scramble, true)
}

// sha2Scramble is caching_sha2_password's fast-path answer:
// SHA256(password) XOR SHA256(SHA256(SHA256(password)) || scramble).
func sha2Scramble(password, scramble []byte) []byte {
	return xorAnswer(sha256.New(), password, scramble, false)
}

// xorAnswer is the scheme both plugins share, with h's hash H:
// H(password) XOR H(scramble || H(H(password))) when scrambleFirst, else
// H(password) XOR H(H(H(password)) || scramble). An empty password
// answers empty. The intermediate hashes are cleared and h scrubbed.
func xorAnswer(h hash.Hash, password, scramble []byte, scrambleFirst bool) []byte {
	if len(password) == 0 {
		return []byte{}
	}
	h.Write(password)
	stage1 := h.Sum(nil)
	h.Reset()
	h.Write(stage1)
	stage2 := h.Sum(nil)
	h.Reset()
	if scrambleFirst {
		h.Write(scramble)
		h.Write(stage2)
	} else {
		h.Write(stage2)
		h.Write(scramble)
	}
	out := h.Sum(nil)
	credential.ScrubHash(h)
	for i := range out {
		out[i] ^= stage1[i]
	}
	clear(stage1)
	clear(stage2)
	return out
}

// rsaAnswer is the full-authentication answer without TLS: the password
// with its NUL terminator, XORed with the scramble (repeated), encrypted
// with the server's RSA public key (keyPEM, a PKIX or PKCS#1 PEM block)
// under RSA-OAEP with SHA-1, as MySQL's RSA_PKCS1_OAEP_PADDING.
func rsaAnswer(password, scramble, keyPEM []byte) ([]byte, error) {
	blk, _ := pem.Decode(keyPEM)
	if blk == nil {
		return nil, errors.New("the server's RSA public key is not PEM")
	}
	var pub *rsa.PublicKey
	if k, err := x509.ParsePKIXPublicKey(blk.Bytes); err == nil {
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("the server's public key is not an RSA key")
		}
		pub = rk
	} else if rk, err := x509.ParsePKCS1PublicKey(blk.Bytes); err == nil {
		pub = rk
	} else {
		return nil, fmt.Errorf("parse the server's RSA public key: %w", err)
	}
	plain := make([]byte, len(password)+1)
	copy(plain, password)
	for i := range plain {
		plain[i] ^= scramble[i%len(scramble)]
	}
	out, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, plain, nil)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("encrypt the password with the server's RSA key: %w", err)
	}
	return out, nil
}

// ed25519Answer is MariaDB's client_ed25519 answer: an Ed25519 signature
// of the server's 32-byte nonce, with the key derived from the password
// as MariaDB's auth_ed25519 plugin derives it (SHA-512 of the password of
// any length, where standard Ed25519 hashes a 32-byte seed).
func ed25519Answer(password, nonce []byte) []byte {
	az := sha512.Sum512(password)
	defer clear(az[:])
	a, err := edwards25519.NewScalar().SetBytesWithClamping(az[:32])
	if err != nil {
		panic(err) // 32 bytes never fail
	}
	defer a.Set(edwards25519.NewScalar())
	pubA := new(edwards25519.Point).ScalarBaseMult(a).Bytes()

	h := sha512.New()
	h.Write(az[32:])
	h.Write(nonce)
	var digest [sha512.Size]byte
	h.Sum(digest[:0])
	credential.ScrubHash(h)
	r, err := edwards25519.NewScalar().SetUniformBytes(digest[:])
	clear(digest[:])
	if err != nil {
		panic(err) // 64 bytes never fail
	}
	defer r.Set(edwards25519.NewScalar())
	R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()

	h.Write(R)
	h.Write(pubA)
	h.Write(nonce)
	h.Sum(digest[:0])
	k, err := edwards25519.NewScalar().SetUniformBytes(digest[:])
	if err != nil {
		panic(err)
	}
	S := edwards25519.NewScalar().MultiplyAdd(k, a, r)
	return append(R, S.Bytes()...)
}
