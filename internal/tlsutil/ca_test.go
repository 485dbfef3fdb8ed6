package tlsutil

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // created by LoadOrCreateCA
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	host, _ := os.Hostname()
	if !strings.HasPrefix(c.Subject.CommonName, "Sluice local CA") || !strings.Contains(c.Subject.CommonName, host) {
		t.Errorf("subject %q, want Sluice local CA %s", c.Subject.CommonName, host)
	}
	if !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("IsCA %v, MaxPathLen %d (zero %v), KeyUsage %v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero, c.KeyUsage)
	}
	if c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", c.PublicKeyAlgorithm)
	}
	if d := c.NotAfter.Sub(time.Now()); d < 9*365*24*time.Hour {
		t.Errorf("valid for %s more, want about 10 years", d)
	}
	for name, want := range map[string]os.FileMode{CertFile: 0o644, KeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %04o, want %04o", name, fi.Mode().Perm(), want)
		}
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir, CertFile))
	if !bytes.Equal(onDisk, ca.CertPEM()) {
		t.Error("CertPEM differs from ca.crt")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	again, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Error("second call made a new CA, want the saved one")
	}
	// A leaf from the reloaded CA verifies against the first one's pool.
	leaf, err := again.leaf("db.internal", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "db.internal"}); err != nil {
		t.Errorf("leaf from reloaded CA: %v", err)
	}
}

// TestLoadOrCreateCAConcurrent starts several creators on one empty
// directory: all must end up with the same CA.
func TestLoadOrCreateCAConcurrent(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	pems := make([][]byte, 4)
	for i := range pems {
		wg.Go(func() {
			ca, err := LoadOrCreateCA(dir)
			if err != nil {
				t.Error(err)
				return
			}
			pems[i] = ca.CertPEM()
		})
	}
	wg.Wait()
	for i := range pems {
		if !bytes.Equal(pems[i], pems[0]) {
			t.Fatalf("creator %d got a different CA", i)
		}
	}
}

func TestLoadOrCreateCABroken(t *testing.T) {
	// A second, valid CA to take mismatching files from.
	otherDir := t.TempDir()
	if _, err := LoadOrCreateCA(otherDir); err != nil {
		t.Fatal(err)
	}
	copyFrom := func(t *testing.T, dir, name string) {
		b, err := os.ReadFile(filepath.Join(otherDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		spoil func(t *testing.T, dir string)
		want  string
	}{
		{"certificate missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CertFile))
		}, "ca.key exists but"},
		{"key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, KeyFile))
		}, "ca.crt exists but"},
		{"key from another CA", func(t *testing.T, dir string) {
			copyFrom(t, dir, KeyFile)
		}, "does not belong to"},
		{"certificate from another CA", func(t *testing.T, dir string) {
			copyFrom(t, dir, CertFile)
		}, "does not belong to"},
		{"key readable by group", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, KeyFile), 0o640)
		}, "chmod 600"},
		{"key readable by all", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, KeyFile), 0o644)
		}, "chmod 600"},
		{"certificate not PEM", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, CertFile), []byte("hello"), 0o644)
		}, "no PEM CERTIFICATE"},
		{"key not PEM", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, KeyFile), []byte("hello"), 0o600)
		}, "no PEM PRIVATE KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreateCA(dir); err != nil {
				t.Fatal(err)
			}
			tt.spoil(t, dir)
			ca, err := LoadOrCreateCA(dir)
			if err == nil {
				t.Fatalf("loaded %v, want an error", ca.Certificate().Subject)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "load ca: ") {
				t.Errorf("error %q, want it to start with \"load ca: \" and say %q", err, tt.want)
			}
		})
	}
}
