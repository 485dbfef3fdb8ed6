// Package tlsutil holds the TLS pieces of the proxy: the daemon's own
// certificate authority, the server configuration that terminates a
// client's TLS on the loopback hop with leaf certificates that CA issues,
// and the client configuration for the hop to the real server, built from
// a target's upstream_tls mode with libpq's meanings.
//
// The CA lives in the daemon's data directory as ca.crt (PEM, 0644) and
// ca.key (PEM PKCS#8, 0600). Clients that insist on TLS trust it through
// sslrootcert=<ca.crt> with sslmode=verify-full; `sluice ca` prints it.
// The package holds no network state: callers dial, accept and run the
// handshakes themselves.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Upstream TLS modes. The strings are the ones a ruleset target's
// upstream_tls takes, with libpq's meanings.
const (
	ModeDisable    = "disable"
	ModePrefer     = "prefer"
	ModeRequire    = "require"
	ModeVerifyCA   = "verify-ca"
	ModeVerifyFull = "verify-full"
)

// ErrUnknownMode is returned by Upstream for a mode that is not one of the
// Mode constants.
var ErrUnknownMode = errors.New("unknown upstream tls mode")

// Upstream returns how the proxy secures its connection to a target's real
// server, given the target's upstream_tls mode.
//
// attempt says whether to send SSLRequest at all; required says whether a
// server that answers 'N' (or a failed handshake) must end the session
// rather than continue in plaintext. cfg is nil when attempt is false, and
// otherwise a fresh config the caller owns and may change. serverName is
// the name the client dialed (a DNS name or an IP address in text form); it
// is sent as SNI when it is a DNS name, and it is what verify-full checks
// the certificate against. roots are the CAs verify-ca and verify-full
// trust; nil means the system pool.
//
// The modes, as in libpq:
//
//   - disable: no TLS.
//   - prefer: try TLS, fall back to plaintext when the server declines; the
//     certificate is not checked. (libpq also retries without TLS when the
//     handshake itself fails; that retry, if wanted, is the caller's.)
//   - require: TLS or nothing; the certificate is not checked. libpq's
//     require verifies the chain when a root certificate file happens to be
//     present; we never do, so require means exactly "encrypted".
//   - verify-ca: TLS or nothing; the chain must lead to roots, and the host
//     name is not checked.
//   - verify-full: as verify-ca, and the certificate must name serverName
//     (a DNS SAN, or an IP SAN when serverName is an IP address).
//
// Every config negotiates TLS 1.2 or later.
func Upstream(mode, serverName string, roots *x509.CertPool) (cfg *tls.Config, attempt bool, required bool, err error) {
	cfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	switch mode {
	case ModeDisable:
		return nil, false, false, nil
	case ModePrefer:
		cfg.InsecureSkipVerify = true
		return cfg, true, false, nil
	case ModeRequire:
		cfg.InsecureSkipVerify = true
		return cfg, true, true, nil
	case ModeVerifyCA:
		// The standard verification always checks the host name, so it is
		// switched off and the chain is verified by hand, without one.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, roots)
		}
		return cfg, true, true, nil
	case ModeVerifyFull:
		if serverName == "" {
			return nil, false, false, fmt.Errorf("configure upstream tls: verify-full needs the server's name")
		}
		cfg.RootCAs = roots
		return cfg, true, true, nil
	}
	return nil, false, false, fmt.Errorf("configure upstream tls %q: %w (want disable, prefer, require, verify-ca or verify-full)", mode, ErrUnknownMode)
}

// verifyChain checks that certs (leaf first, as the server sent them) chain
// to roots for server authentication, without looking at host names.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("verify server certificate: none presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify server certificate: %w", err)
	}
	return nil
}
