package postgres

import (
	"bufio"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/ruleset"
)

// codeInvalidPassword is the SQLSTATE for a refused credential.
const codeInvalidPassword = "28P01"

// Credential injection, in the session's sequence: after the client's
// StartupMessage, the session asks the enforcer how it authenticates. A
// target without credentials relays the client's own authentication. A
// granted flow has its user rewritten to the credential's, the server's
// challenge answered by the proxy with the credential's secret (cleartext,
// MD5, SCRAM-SHA-256 or SCRAM-SHA-256-PLUS on a TLS hop), and the client
// told only the outcome: AuthenticationOk, then the server's own
// ParameterStatus, BackendKeyData and ReadyForQuery, so cancel requests
// and everything after work as usual. The client is never asked for a
// password; whatever it holds is never used. A flow the ruleset grants no
// credential gets a FATAL 28000 naming why.

// injection decides how the session authenticates. It returns nil when
// the client authenticates itself, and refuses the client (returning the
// error) when the target injects credentials and this flow has none.
func (s *session) injection() (*enforcer.Injection, error) {
	inj, err := s.p.Session.Injection()
	if err == nil {
		return inj, nil
	}
	var ge *ruleset.GrantError
	w := bufio.NewWriter(s.cconn)
	if errors.As(err, &ge) {
		writeMsg(w, 'E', errorBody("FATAL", codeInvalidAuthorization,
			fmt.Sprintf("sluice: no database credential for this job on target %q", ge.Target), ge.Reason,
			"This database's credentials are held by Sluice and injected only for jobs the runner's security ruleset grants them to; `sluice rules explain` shows the grants."))
	} else {
		writeMsg(w, 'E', errorBody("FATAL", codeInvalidAuthorization, "sluice: credential injection failed", err.Error(), ""))
	}
	w.Flush()
	return nil, err
}

// rewriteStartup returns the StartupMessage body with user replaced, and
// the message it encodes. When the client named no database, PostgreSQL
// would use the user name; the database is then set to the client's user
// name, so the session goes to the database the client meant.
func rewriteStartup(pkt []byte, user string) ([]byte, *pgproto3.StartupMessage, error) {
	var sm pgproto3.StartupMessage
	if err := sm.Decode(pkt); err != nil {
		return nil, nil, fmt.Errorf("decode startup: %w", err)
	}
	params := make(map[string]string, len(sm.Parameters)+1)
	for k, v := range sm.Parameters {
		params[k] = v
	}
	if params["database"] == "" {
		params["database"] = params["user"]
	}
	params["user"] = user
	sm.Parameters = params
	b, err := sm.Encode(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("encode startup: %w", err)
	}
	return b[4:], &sm, nil
}

// injectAuth authenticates to the server with the injected credential and
// then passes the server's session parameters, key data and first
// ReadyForQuery to the client. secret is the credential's password; the
// caller wipes it. It returns the transaction status.
func (s *session) injectAuth(inj *enforcer.Injection, secret []byte, cr *frameReader, cw *bufio.Writer, sr *frameReader, sw *bufio.Writer) (byte, error) {
	var sc *scramClient
	method := "trust"
	refused := func(reason string) error {
		if err := s.openTap(cr, cw); err != nil {
			return err
		}
		fatalDetail(cw, codeInvalidPassword, fmt.Sprintf("sluice: the database refused the injected credential %q (user %s)", inj.Name, inj.User), reason)
		return fmt.Errorf("injected credential %s refused: %s", inj.Name, reason)
	}
	return s.authLoop(cw, sr, authExchange{
		request: func(code uint32, b []byte) error {
			var answer []byte
			var err error
			switch code {
			case authOK:
				if sc != nil && !sc.done {
					return refused("the server skipped SCRAM's final message, so it never proved it knows the credential")
				}
				if err := s.openTap(cr, cw); err != nil {
					return err
				}
				if err := writeMsg(cw, 'R', b); err != nil {
					return err
				}
				s.p.Log.Info("authenticated with an injected credential", "credential", inj.Name, "db_user", inj.User, "rule", inj.Rule, "method", method, "upstream_tls", s.upstreamTLS)
				return nil
			case authCleartext:
				method = "password"
				if !s.upstreamTLS {
					s.p.Log.Warn("the server asks for a cleartext password on a hop without TLS; set the target's upstream_tls to require", "credential", inj.Name)
				}
				answer = append(append([]byte(nil), secret...), 0)
			case authMD5:
				if len(b) < 8 {
					return s.upstreamErr(cw, &ProtocolError{Msg: "short MD5 authentication request"})
				}
				answer, method = md5Password(secret, inj.User, b[4:8]), "md5"
			case authSASL:
				sc, answer, method, err = s.scramStart(secret, b[4:])
				if err != nil {
					return refused(err.Error())
				}
			case authSASLContinue:
				if sc == nil {
					return s.upstreamErr(cw, &ProtocolError{Msg: "SASL continue without SASL"})
				}
				if answer, err = sc.final(b[4:]); err != nil {
					return refused(err.Error())
				}
			case authSASLFinal:
				if sc == nil {
					return s.upstreamErr(cw, &ProtocolError{Msg: "SASL final without SASL"})
				}
				if err := sc.verify(b[4:]); err != nil {
					return refused(err.Error())
				}
				return nil
			default:
				return refused(fmt.Sprintf("the server asks for authentication method %d, which credential injection does not support (use scram-sha-256 or md5 in pg_hba.conf)", code))
			}
			err = s.sendSecret(sw, answer)
			clear(answer)
			return err
		},
		refused: func(n int) error {
			b, err := sr.body(n)
			if err != nil {
				return err
			}
			var e pgproto3.ErrorResponse
			if err := e.Decode(b); err != nil {
				return s.upstreamErr(cw, &ProtocolError{Msg: "invalid ErrorResponse"})
			}
			if e.Code == codeInvalidPassword || e.Code == codeInvalidAuthorization {
				return refused(e.Message)
			}
			// Anything else (no such database, too many connections) is
			// the server's own answer, as the client would have seen it.
			if err := s.openTap(cr, cw); err != nil {
				return err
			}
			writeMsg(cw, 'E', b)
			cw.Flush()
			return errors.New("the server refused the session")
		},
	})
}

// scramStart picks the SCRAM mechanism and returns the SASLInitialResponse
// body.
func (s *session) scramStart(secret, mechList []byte) (*scramClient, []byte, string, error) {
	var cert *x509.Certificate
	if tc, ok := s.up.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			cert = certs[0]
		}
	}
	sc, mech, err := chooseSCRAM(saslMechanisms(mechList), secret, s.upstreamTLS, cert)
	if err != nil {
		return nil, nil, "", err
	}
	first := sc.first()
	body := append([]byte(mech), 0)
	body = binary.BigEndian.AppendUint32(body, uint32(len(first)))
	return sc, append(body, first...), mech, nil
}

// md5Password is PostgreSQL's MD5 answer: "md5" followed by
// hex(md5(hex(md5(password || user)) || salt)), NUL-terminated. The
// inner hash is what the server stores, as good as the password: it and
// every copy of the password are cleared before returning. The caller
// clears the answer.
func md5Password(password []byte, user string, salt []byte) []byte {
	h := md5.New()
	h.Write(password)
	h.Write([]byte(user))
	var inner [md5.Size]byte
	var innerHex [2 * md5.Size]byte
	h.Sum(inner[:0])
	credential.ScrubHash(h)
	hex.Encode(innerHex[:], inner[:])
	clear(inner[:])
	h.Write(innerHex[:])
	h.Write(salt)
	clear(innerHex[:])
	var outer [md5.Size]byte
	h.Sum(outer[:0])
	credential.ScrubHash(h)
	out := make([]byte, 0, 3+2*md5.Size+1)
	out = append(out, "md5"...)
	out = hex.AppendEncode(out, outer[:])
	return append(out, 0)
}

// backendKey registers the server's BackendKeyData body b for cancel
// requests and returns the body the client gets: b itself, or on a pooled
// target a key of Sluice's own (the same length) that maps to b while the
// session lives, so that the key cancels nothing once the connection
// serves another session.
func (s *session) backendKey(b []byte) []byte {
	if len(b) < 8 {
		return b
	}
	cr := pgproto3.CancelRequest{ProcessID: binary.BigEndian.Uint32(b), SecretKey: append([]byte(nil), b[4:]...)}
	s.cancelPacket, _ = cr.Encode(nil)
	if !s.pooling {
		s.registerCancelKey(cancelKey(cr.ProcessID, cr.SecretKey))
		return b
	}
	s.backend = append([]byte(nil), b...)
	own := make([]byte, len(b))
	rand.Read(own)
	own[0] &= 0x7f // a positive process ID, as the server's are
	s.registerCancelKey(cancelKey(binary.BigEndian.Uint32(own), own[4:]))
	return own
}

// fatalDetail writes a FATAL ErrorResponse with a detail and flushes.
func fatalDetail(w *bufio.Writer, code, msg, detail string) error {
	if err := writeMsg(w, 'E', errorBody("FATAL", code, msg, detail, "")); err != nil {
		return err
	}
	return w.Flush()
}

// fetchSecret reads the injected credential's secret; a failure refuses
// the client without the details, which go to the daemon's log.
func (s *session) fetchSecret(ctx context.Context, inj *enforcer.Injection) ([]byte, func(), error) {
	sec, err := inj.Secret(ctx)
	if err != nil {
		s.p.Log.Error("cannot read the injected credential", "credential", inj.Name, "error", err)
		w := bufio.NewWriter(s.cconn)
		fatalDetail(w, codeInvalidAuthorization, fmt.Sprintf("sluice: the credential %q for this database cannot be read", inj.Name),
			"The runner's Sluice daemon could not read the secret; its log says why.")
		return nil, nil, err
	}
	return sec.Bytes(), sec.Wipe, nil
}
