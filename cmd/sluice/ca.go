package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/tlsutil"
)

const defaultDataDir = "/var/lib/sluice"

// isRoot reports whether the CLI runs as root; tests replace it.
var isRoot = func() bool { return os.Geteuid() == 0 }

// newCACmd is `sluice ca`: it prints the daemon's CA certificate, the one
// the proxy signs its client-side TLS certificates with, so that clients
// that require TLS can trust it. Run as root it creates the CA when the
// data directory has none (as sluiced would on start); otherwise it only
// reads ca.crt.
func newCACmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Print the daemon's CA certificate (clients that verify TLS trust it)",
		Long: `Print the daemon's CA certificate (PEM) on standard output. The proxy signs
the TLS certificates it shows clients with it, so clients that verify TLS
trust it: save it (sluice ca > sluice-ca.crt) and connect with
sslmode=verify-full sslrootcert=sluice-ca.crt. Run as root, it creates the
CA if the data directory has none yet, as sluiced does on start.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			pemBytes, err := readCA(dir)
			if err != nil {
				return err
			}
			cmd.OutOrStdout().Write(pemBytes)
			fmt.Fprintln(cmd.ErrOrStderr(), "sluice ca: clients that require TLS trust this CA: save it (sluice ca > sluice-ca.crt) and connect with "+
				"sslmode=verify-full sslrootcert=sluice-ca.crt, or PGSSLMODE=verify-full PGSSLROOTCERT=sluice-ca.crt")
			return nil
		}),
	}
	cmd.Flags().StringVar(&dir, "data-dir", defaultDataDir, "the daemon's data `DIR`")
	return cmd
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
