package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a real S3-compatible server the test started: versitygw on its
// POSIX backend (built by scripts/build-s3.sh), listening on 127.0.0.1
// with plain HTTP (or HTTPS, S3Options.TLS) and one root account. Its data stays in Dir across Stop
// and Start, so a test can take the server away and bring it back on the
// same port. Everything is stopped and removed at cleanup. An S3 belongs
// to the test that started it.
type S3 struct {
	// Endpoint is 127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the root account's.
	AccessKey, SecretKey string
	// Dir holds the buckets (one directory each) and the log.
	Dir string
	// CAFile, with S3Options.TLS, holds the server's self-signed
	// certificate (for 127.0.0.1): the one root that verifies it.
	CAFile string

	bin     string
	process *exec.Cmd
	done    chan struct{}
}

// S3Bin returns the versitygw program: SLUICE_S3_BIN when set, or else
// scripts/build-s3.sh's cache entry for the version
// internal/testenv/s3tools pins. It never builds it: scripts/install-deps.sh
// does (about 1.5 minutes on 2 cores).
func S3Bin() (string, error) {
	bin, err := cachedBuild("SLUICE_S3_BIN", "build-s3.sh", "versitygw is")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no versitygw at %s: run scripts/build-s3.sh", bin)
	}
	return bin, nil
}

// S3Options tune StartS3. The zero value is plain HTTP.
type S3Options struct {
	// TLS serves HTTPS with a self-signed certificate (S3.CAFile).
	TLS bool
}

// StartS3 starts versitygw and returns once it answers. It skips under
// go test -short and when versitygw is not built (S3Bin), unless
// SLUICE_E2E=required, which fails instead.
func StartS3(t testing.TB, o S3Options) *S3 {
	t.Helper()
	if testing.Short() {
		t.Skip("starts versitygw: not run under -short")
	}
	bin, err := S3Bin()
	Need(t, err == nil, fmt.Sprint(err))
	dir, err := os.MkdirTemp("", "sluice-s3-")
	if err != nil {
		t.Fatal(err)
	}
	s := &S3{
		Endpoint:  net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t, "127.0.0.1"))),
		AccessKey: RandName("ak"), SecretKey: RandName("sk") + RandName(""),
		Dir: dir, bin: bin,
	}
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	t.Cleanup(func() {
		s.Stop(t)
		os.RemoveAll(dir)
	})
	if o.TLS {
		s.CAFile = filepath.Join(dir, "cert.pem")
		if err := writeSelfSigned(s.CAFile, filepath.Join(dir, "key.pem"), "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	s.Start(t)
	return s
}

// Start starts the server (again) on its port and data, and waits until
// it answers.
func (s *S3) Start(t testing.TB) {
	t.Helper()
	if s.process != nil {
		t.Fatal("versitygw is already running")
	}
	args := []string{"--port", s.Endpoint, "--quiet"}
	if s.CAFile != "" {
		args = append(args, "--cert", s.CAFile, "--key", filepath.Join(s.Dir, "key.pem"))
	}
	cmd := exec.Command(s.bin, append(args, "posix", filepath.Join(s.Dir, "data"))...)
	// The credentials go through the environment, not the command line
	// other users can read.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	s.done = startServer(t, "versitygw", cmd, filepath.Join(s.Dir, "versitygw.log"), s.Endpoint)
	s.process = cmd
}

// Stop stops the server (SIGTERM, SIGKILL after 5 s), keeping its data.
// Stopping a stopped server does nothing.
func (s *S3) Stop(t testing.TB) {
	if s.process == nil {
		return
	}
	stopGroup(s.process, s.done, syscall.SIGTERM, 5*time.Second)
	s.process = nil
}

// Client returns a minio-go client authenticated as the root account.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	opts := &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		opts.Secure, opts.Transport = true, tr
	}
	c, err := minio.New(s.Endpoint, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MakeBucket creates a bucket, with object lock enabled when lock is
// true.
func (s *S3) MakeBucket(t testing.TB, name string, lock bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, name, minio.MakeBucketOptions{ObjectLocking: lock}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
}
