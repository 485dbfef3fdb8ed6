package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/internal/tlsutil"
)

const defaultDataDir = "/var/lib/sluice"

// isRoot reports whether the CLI runs as root; tests replace it.
var isRoot = func() bool { return os.Geteuid() == 0 }

// caCmd prints the daemon's CA certificate, the one the proxy signs its
// client-side TLS certificates with, so that clients that require TLS can
// trust it. Run as root it creates the CA when the data directory has none
// (as sluiced would on start); otherwise it only reads ca.crt.
func caCmd(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("ca", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("data-dir", defaultDataDir, "the daemon's data directory")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: sluice ca [--data-dir DIR]")
		return 2
	}
	pemBytes, err := readCA(*dir)
	if err != nil {
		fmt.Fprintln(stderr, "sluice ca:", err)
		return 1
	}
	stdout.Write(pemBytes)
	fmt.Fprintln(stderr, "sluice ca: clients that require TLS trust this CA: save it (sluice ca > sluice-ca.crt) and connect with "+
		"sslmode=verify-full sslrootcert=sluice-ca.crt, or PGSSLMODE=verify-full PGSSLROOTCERT=sluice-ca.crt")
	return 0
}

// readCA returns the CA certificate in dir as PEM. Root loads (and checks,
// or creates) the whole CA; anyone else can only read the certificate.
func readCA(dir string) ([]byte, error) {
	if isRoot() {
		ca, err := tlsutil.LoadOrCreateCA(dir)
		if err != nil {
			return nil, err
		}
		return ca.CertPEM(), nil
	}
	path := filepath.Join(dir, tlsutil.CertFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read ca: no CA in %s yet: start sluiced (it creates one) or run sluice ca as root", dir)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read ca: %s is not readable by this user: run sluice ca as root", path)
	case err != nil:
		return nil, fmt.Errorf("read ca: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("read ca: %s holds no PEM certificate: run sluice ca as root to check the CA", path)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("read ca: parse %s: %w", path, err)
	}
	return pem.EncodeToMemory(block), nil
}
