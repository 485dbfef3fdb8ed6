package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// File names of the CA inside the data directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 7 * 24 * time.Hour
	// leafRenew is how close to expiry a cached leaf may get before the
	// next handshake gets a fresh one.
	leafRenew = 24 * time.Hour
	// maxLeaves bounds the leaf cache; names come from clients.
	maxLeaves = 1024
	// backdate covers small clock differences between the two ends.
	backdate = time.Hour
)

// CA is the daemon's own certificate authority. It signs the leaf
// certificates the proxy presents to clients that require TLS on the
// loopback hop. A CA is safe for concurrent use; it holds the private key in
// memory for as long as it is referenced.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer

	now func() time.Time // time.Now; tests move it

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by leafKey
}

// LoadOrCreateCA loads the CA kept in dir as ca.crt and ca.key, or creates
// one there when both files are absent: an ECDSA P-256 key and a
// self-signed certificate "Sluice local CA <hostname>", valid for ten
// years, that may sign leaf certificates only (path length zero). dir is
// created (0700) if missing.
//
// It fails, with the fix in the message, when only one of the two files
// exists, when they do not belong together, when the certificate is not a
// usable CA, or when ca.key can be read by anyone but its owner. Files are
// written to temporary names and linked into place, so a crash never leaves
// a half-written file, and of two processes creating the CA at once one wins
// and the other loads the winner's.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	for attempt := 0; ; attempt++ {
		_, cerr := os.Stat(certPath)
		_, kerr := os.Stat(keyPath)
		switch {
		case cerr == nil && kerr == nil:
			return loadCA(certPath, keyPath)
		case errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist):
			ca, err := createCA(dir, certPath, keyPath)
			if errors.Is(err, fs.ErrExist) {
				continue // another process created it first: load theirs
			}
			return ca, err
		case errors.Is(cerr, fs.ErrNotExist) && kerr == nil && attempt < 20:
			// Either a creator is between writing the key and the
			// certificate, or the certificate was lost. Give a creator time.
			time.Sleep(50 * time.Millisecond)
		case cerr != nil && !errors.Is(cerr, fs.ErrNotExist):
			return nil, fmt.Errorf("load ca: %w", cerr)
		case kerr != nil && !errors.Is(kerr, fs.ErrNotExist):
			return nil, fmt.Errorf("load ca: %w", kerr)
		default:
			have, miss := certPath, keyPath
			if cerr != nil {
				have, miss = keyPath, certPath
			}
			return nil, fmt.Errorf("load ca: %s exists but %s does not: restore the missing file, or remove %s to create a new CA (clients must then trust the new %s)", have, miss, have, CertFile)
		}
	}
}

func loadCA(certPath, keyPath string) (*CA, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load ca: %s has mode %04o, readable by more than its owner: run chmod 600 %s", keyPath, perm, keyPath)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("load ca: %s holds no PEM CERTIFICATE block: remove %s and %s to create a new CA", certPath, certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load ca: parse %s: %w", certPath, err)
	}
	block, _ = pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("load ca: %s holds no PEM PRIVATE KEY (PKCS#8) block: remove %s and %s to create a new CA", keyPath, certPath, keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load ca: parse %s: %w", keyPath, err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load ca: %s: key type %T cannot sign", keyPath, k)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load ca: %s does not belong to %s: restore the matching pair, or remove both to create a new CA", keyPath, certPath)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load ca: %s is not a CA certificate: remove %s and %s to create a new CA", certPath, certPath, keyPath)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("load ca: %s expired on %s: remove %s and %s to create a new CA", certPath, cert.NotAfter.Format(time.DateOnly), certPath, keyPath)
	}
	return newCA(cert, key), nil
}

func createCA(dir, certPath, keyPath string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: strings.TrimSpace("Sluice local CA " + host), Organization: []string{"Sluice"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	// The key goes first: whoever links it into place owns the creation,
	// and a loser sees fs.ErrExist before it has written anything.
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return newCA(cert, key), nil
}

// writeNew writes data to a temporary file beside path and links it into
// place, failing with an error that wraps fs.ErrExist if path already
// exists. Unlike rename, link never replaces a file another process put
// there.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // CreateTemp makes 0600; the umask does not apply to Chmod
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newCA(cert *x509.Certificate, key crypto.Signer) *CA {
	return &CA{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		key:     key,
		now:     time.Now,
		leaves:  make(map[string]*tls.Certificate),
	}
}

// CertPEM returns the CA certificate in PEM form, as clients put it in
// sslrootcert. The caller must not modify the returned slice.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Certificate returns the parsed CA certificate. The caller must not modify
// it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool holding only the CA certificate, for verifying
// the leaves it issues.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// ServerConfig returns a new config for terminating a client's TLS on the
// proxy. It accepts TLS 1.2 and later, asks for no client certificate, and
// presents a leaf certificate issued on the fly by ca: ECDSA P-256,
// server authentication only, valid for seven days, naming
//
//   - the server name the client sent (SNI), as a DNS name, or as an IP
//     address if it parses as one;
//   - the IP address of the connection's local end, hello.Conn.LocalAddr();
//     a proxy whose accepted sockets show the proxy's own address can hand
//     tls.Server a net.Conn whose LocalAddr reports the client's original
//     destination instead, so that clients verifying an IP address succeed;
//   - "localhost".
//
// Leaves are cached per (name, address) across all configs of ca, at most
// 1024 of them, and replaced once less than a day of validity is left. The
// caller owns the returned config and may set more fields, for example
// NextProtos = []string{"postgresql"}, which PostgreSQL 17 clients offer.
func (ca *CA) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.NoClientCert,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			var local net.IP
			if hello.Conn != nil {
				local = addrIP(hello.Conn.LocalAddr())
			}
			return ca.leaf(hello.ServerName, local)
		},
	}
}

// leaf returns a cached or newly issued leaf for name and ip. Either may be
// empty.
func (ca *CA) leaf(name string, ip net.IP) (*tls.Certificate, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if !validName(name) {
		name = "" // the client will not be able to verify such a name anyway
	}
	key := name + "|" + ip.String()
	now := ca.now()
	ca.mu.Lock()
	c := ca.leaves[key]
	ca.mu.Unlock()
	if c != nil && c.Leaf.NotAfter.Sub(now) >= leafRenew {
		return c, nil
	}
	c, err := ca.issue(name, ip, now)
	if err != nil {
		return nil, err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if len(ca.leaves) >= maxLeaves {
		for k, old := range ca.leaves {
			if old.Leaf.NotAfter.Sub(now) < leafRenew {
				delete(ca.leaves, k)
			}
		}
		for k := range ca.leaves {
			if len(ca.leaves) < maxLeaves {
				break
			}
			delete(ca.leaves, k)
		}
	}
	ca.leaves[key] = c
	return c, nil
}

func (ca *CA) issue(name string, ip net.IP, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(leafValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	if name != "" {
		tmpl.Subject.CommonName = name
		if nip := net.ParseIP(name); nip != nil {
			if nip4 := nip.To4(); nip4 != nil {
				nip = nip4
			}
			tmpl.IPAddresses = append(tmpl.IPAddresses, nip)
		} else if name != "localhost" {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	if ip != nil && !containsIP(tmpl.IPAddresses, ip) {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// addrIP returns the IP address of a TCP or UDP address, IPv4 in its 4-byte
// form, or nil.
func addrIP(a net.Addr) net.IP {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return nil
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4
	}
	return ip
}

func containsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// validName reports whether s can go into a certificate: an IP address, or
// a DNS name of lower-case letters, digits, '-', '_' and '.', at most 253
// characters.
func validName(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic("tlsutil: crypto/rand failed: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1)) // never zero
}
