package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/tlsutil"
)

func ca(t *testing.T, root bool, args ...string) (int, string, string) {
	t.Helper()
	was := isRoot
	isRoot = func() bool { return root }
	defer func() { isRoot = was }()
	return sluice(t, append([]string{"ca"}, args...)...)
}

// TestCACmd runs `sluice ca` as a non-root user before and after the CA
// exists, and as root creating it.
func TestCACmd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")

	code, out, errOut := ca(t, false, "--data-dir", dir)
	if code != 1 || out != "" || !strings.Contains(errOut, "start sluiced") || !strings.Contains(errOut, "as root") {
		t.Errorf("no CA, not root: exit %d, stdout %q, stderr %q; want exit 1 saying to start sluiced or run as root", code, out, errOut)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a non-root run created the data directory")
	}

	code, out, errOut = ca(t, true, "--data-dir", dir)
	if code != 0 {
		t.Fatalf("root: exit %d: %s", code, errOut)
	}
	block, rest := pem.Decode([]byte(out))
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("stdout is not one PEM certificate:\n%s", out)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		t.Fatalf("printed certificate: %v (IsCA %v)", err, cert != nil && cert.IsCA)
	}
	if !strings.Contains(errOut, "sslrootcert=") || !strings.Contains(errOut, "PGSSLROOTCERT=") || !strings.Contains(errOut, "verify-full") {
		t.Errorf("stderr does not say how clients trust the CA: %q", errOut)
	}
	loaded, err := tlsutil.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(loaded.CertPEM()) != out {
		t.Error("printed certificate is not the one in the data directory")
	}

	// Once the CA exists anyone who can read ca.crt gets the same output.
	code, out2, errOut := ca(t, false, "--data-dir", dir)
	if code != 0 || out2 != out {
		t.Errorf("not root, CA present: exit %d, same output %v: %s", code, out2 == out, errOut)
	}

	if code, _, _ := ca(t, false, "--data-dir", dir, "extra"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}
