package ssh

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/ruleset"
)

// Both hops of a decoded SSH flow. Towards the job, Sluice is the server:
// it presents a host key with a certificate from the runner's Sluice host
// CA (which sluice install makes every ssh client of the runner trust) and
// accepts the job's login whatever it offers, since who the job is comes
// from the kernel and its OIDC token, not from SSH. Towards the host,
// Sluice is the client: it checks the host's key against the target's
// known_hosts and logs in with the credential the ruleset grants the flow
// (a password, a private key, or a certificate it mints for the session
// from an SSH user CA, naming the job in its key id). The job's own key
// never reaches the host: its signature covers the job's hop only.

// version is what both hops see of Sluice's SSH implementation.
const version = "SSH-2.0-Sluice"

// loginTimeout bounds the upstream login and the job's handshake.
const loginTimeout = 30 * time.Second

// hostCertValidity is how long a host certificate minted for one session
// is valid: the job's client checks it once, during the handshake.
const hostCertValidity = 10 * time.Minute

// clockSkew backdates certificates, for hosts whose clocks run behind.
const clockSkew = 2 * time.Minute

// hostKeys are the host keys Sluice presents to a job for one session:
// the daemon's ephemeral host key with a certificate from the host CA,
// and the same key plain, so that a job running ssh-keyscan before a
// strict login gets a key (the certificate is what a client that trusts
// the CA checks; see the README's notes on known_hosts).
func hostKeys(ca crypto.Signer, host ssh.Signer, dest string) ([]ssh.Signer, error) {
	caSigner, err := ssh.NewSignerFromSigner(ca)
	if err != nil {
		return nil, fmt.Errorf("ssh host CA: %w", err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:      host.PublicKey(),
		Serial:   randomSerial(),
		CertType: ssh.HostCert,
		KeyId:    "sluice host certificate for " + dest,
		// No principals: the job may name the host any way it likes (an
		// alias, an IP, a name from /etc/hosts), and OpenSSH accepts a
		// host certificate without principals for any name. Only this
		// runner's daemon holds the CA key.
		ValidAfter:  uint64(now.Add(-clockSkew).Unix()),
		ValidBefore: uint64(now.Add(hostCertValidity).Unix()),
	}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		return nil, fmt.Errorf("sign host certificate: %w", err)
	}
	certSigner, err := ssh.NewCertSigner(cert, host)
	if err != nil {
		return nil, err
	}
	return []ssh.Signer{certSigner, host}, nil
}

func randomSerial() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// upstreamLogin is the host's side of a session once logged in.
type upstreamLogin struct {
	conn  ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
	// hostKey is the host key the host proved, as known_hosts shows it.
	hostKey string
	// certID is the key id of the certificate minted for the login, if any.
	certID string
}

// loginError is an upstream login that failed, with the sentence the job
// is told.
type loginError struct {
	msg string
	err error
}

func (e *loginError) Error() string { return e.msg + ": " + e.err.Error() }
func (e *loginError) Unwrap() error { return e.err }

// login dials the host and logs in with the granted credential.
func login(ctx context.Context, f *decoder.Flow, dial decoder.DialFunc, inj *enforcer.Injection) (*upstreamLogin, error) {
	t := f.Target
	hk, err := knownhosts.New(t.KnownHosts)
	if err != nil {
		return nil, &loginError{fmt.Sprintf("cannot read target %s's known_hosts %s", t.Name, t.KnownHosts), err}
	}
	addr := f.Dest.String()
	secret, err := inj.Secret(ctx)
	if err != nil {
		return nil, &loginError{"cannot read credential " + inj.Name, err}
	}
	defer secret.Wipe()
	auth, certID, err := authMethod(inj, secret.Bytes(), f)
	if err != nil {
		return nil, &loginError{"credential " + inj.Name + " is not usable", err}
	}
	var proved string
	cfg := &ssh.ClientConfig{
		User: inj.User,
		Auth: []ssh.AuthMethod{auth},
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := hk(host, remote, key); err != nil {
				return err
			}
			proved = key.Type() + " " + ssh.FingerprintSHA256(key)
			return nil
		},
		HostKeyAlgorithms: knownAlgorithms(hk, addr),
		ClientVersion:     version,
		Timeout:           loginTimeout,
	}
	up, err := dial(ctx)
	if err != nil {
		return nil, &loginError{"cannot reach the host", err}
	}
	up = quickAck(up)
	up.SetDeadline(time.Now().Add(loginTimeout))
	conn, chans, reqs, err := ssh.NewClientConn(up, addr, cfg)
	if err != nil {
		up.Close()
		var ke *knownhosts.KeyError
		switch {
		case errors.As(err, &ke) && len(ke.Want) > 0:
			return nil, &loginError{"the host's key does not match target " + t.Name + "'s known_hosts (" + t.KnownHosts + ")", err}
		case errors.As(err, &ke):
			return nil, &loginError{"the host is not in target " + t.Name + "'s known_hosts (" + t.KnownHosts + ")", err}
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, &loginError{"the host refused the login as " + inj.User + " with credential " + inj.Name, err}
		}
		return nil, &loginError{"the login to the host failed", err}
	}
	up.SetDeadline(time.Time{})
	return &upstreamLogin{conn: conn, chans: chans, reqs: reqs, hostKey: proved, certID: certID}, nil
}

// knownAlgorithms returns the host key algorithms to ask the host for:
// those of the keys known_hosts holds for it, so that a host with several
// keys proves the one on file. Nil (the default list) when it holds none
// (a host trusted through @cert-authority, or an unknown one, which the
// callback refuses).
func knownAlgorithms(hk ssh.HostKeyCallback, addr string) []string {
	probe := probeKey()
	if probe == nil {
		return nil
	}
	tcp, _ := net.ResolveTCPAddr("tcp", addr)
	var ke *knownhosts.KeyError
	if err := hk(addr, tcp, probe); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range ke.Want {
		algs := []string{k.Key.Type()}
		if k.Key.Type() == ssh.KeyAlgoRSA {
			algs = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, a := range algs {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}

// probeKey is a key no known_hosts holds: shown to the callback, it makes
// it list the keys it has for a host. Made once per daemon.
var probeKey = sync.OnceValue(func() ssh.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil
	}
	return k
})

// authMethod turns a credential's secret into how Sluice logs in.
func authMethod(inj *enforcer.Injection, secret []byte, f *decoder.Flow) (ssh.AuthMethod, string, error) {
	switch inj.SSHAuth() {
	case ruleset.SSHPassword:
		pw := string(secret)
		return ssh.Password(pw), "", nil
	case ruleset.SSHPrivateKey:
		s, err := ssh.ParsePrivateKey(secret)
		if err != nil {
			return nil, "", fmt.Errorf("parse private key: %w", err)
		}
		return ssh.PublicKeys(s), "", nil
	case ruleset.SSHCertificate:
		s, id, err := sessionCert(secret, inj, f)
		if err != nil {
			return nil, "", err
		}
		return ssh.PublicKeys(s), id, nil
	}
	return nil, "", fmt.Errorf("unknown ssh_auth %q", inj.SSHAuth())
}

// sessionCert mints a new key and a certificate for it from the user CA
// in caKey: valid for the credential's user, for the credential's TTL,
// with the job's identity in the key id so that the host's log names the
// job.
func sessionCert(caKey []byte, inj *enforcer.Injection, f *decoder.Flow) (ssh.Signer, string, error) {
	ca, err := ssh.ParsePrivateKey(caKey)
	if err != nil {
		return nil, "", fmt.Errorf("parse the user CA's private key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	key, err := ssh.NewSignerFromSigner(priv)
	if err != nil {
		return nil, "", err
	}
	now := time.Now()
	id := KeyID(f, inj.Name)
	cert := &ssh.Certificate{
		Key:             key.PublicKey(),
		Serial:          randomSerial(),
		CertType:        ssh.UserCert,
		KeyId:           id,
		ValidPrincipals: []string{inj.User},
		ValidAfter:      uint64(now.Add(-clockSkew).Unix()),
		ValidBefore:     uint64(now.Add(inj.CertTTL()).Unix()),
		// What the host lets the session do is what the ruleset lets
		// through Sluice; ~/.ssh/rc (permit-user-rc) is not needed.
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "", "permit-agent-forwarding": "", "permit-X11-forwarding": "",
		}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, "", fmt.Errorf("sign the session certificate: %w", err)
	}
	s, err := ssh.NewCertSigner(cert, key)
	if err != nil {
		return nil, "", err
	}
	return s, id, nil
}

// KeyID is the key id of a session certificate: "sluice" and the job's
// identity as key=value words (the job, its repository, ref, run and
// actor when its identity has them, the identity level), the flow and
// the credential. sshd logs it with every login.
func KeyID(f *decoder.Flow, credential string) string {
	words := []string{"sluice"}
	add := func(k, v string) {
		if v != "" {
			words = append(words, k+"="+strings.Map(keyIDRune, v))
		}
	}
	add("job", f.Identity.Job)
	claims := f.Identity.Claims
	for _, k := range []string{"repository", "ref", "run_id", "actor"} {
		add(k, claims[k])
	}
	level := f.Identity.Level
	if level == "" {
		level = ruleset.LevelNone
	}
	add("identity", level)
	add("flow", fmt.Sprint(f.ID))
	add("credential", credential)
	return strings.Join(words, " ")
}

// keyIDRune keeps a key id on one line of printable words: sshd logs it
// unquoted at INFO.
func keyIDRune(r rune) rune {
	if r <= ' ' || r == 0x7f || r == '"' {
		return '_'
	}
	return r
}
