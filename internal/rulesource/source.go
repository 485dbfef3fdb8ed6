package rulesource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Options say how a source is reached. Credentials are values here; the
// daemon reads them from the environment variables its config names.
type Options struct {
	// CAFile, when set, holds the only CAs trusted for the server (https,
	// s3, nats with TLS).
	CAFile string
	// Creds is a NATS credentials file.
	Creds string
	// Endpoint, Region, AccessKey, SecretKey and Insecure are for s3://:
	// Endpoint is HOST:PORT of the S3-compatible server (default AWS),
	// Insecure uses plain HTTP.
	Endpoint, Region     string
	AccessKey, SecretKey string
	Insecure             bool
	// Name is this client's name where the server shows one (NATS).
	Name string
}

// Source is where a fleet's bundle is published. Methods are safe for
// concurrent use.
type Source interface {
	// Fetch returns the encoded bundle, or nil and no error when it has
	// not changed since the last successful Fetch (ETag, object digest).
	// A source without a bundle yet returns an error wrapping
	// ErrNotFound.
	Fetch(ctx context.Context) ([]byte, error)
	// Changed is signalled when the source saw the bundle change (a NATS
	// watch); nil for sources that are only polled.
	Changed() <-chan struct{}
	// String is the source's URL.
	String() string
	// Close releases the connection.
	Close() error
}

// Check validates a rules_source URL without connecting.
func Check(raw string) error {
	_, err := parse(raw)
	return err
}

type parsed struct {
	scheme, host, bucket, name string
	u                          *url.URL
}

func parse(raw string) (*parsed, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("rules source %q: %w", raw, err)
	}
	p := &parsed{scheme: u.Scheme, host: u.Host, u: u}
	path := strings.Trim(u.Path, "/")
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return nil, fmt.Errorf("rules source %q: no host; give https://HOST/PATH/bundle.json", raw)
		}
	case "s3":
		p.bucket, p.name = u.Host, path
		if p.bucket == "" || p.name == "" {
			return nil, fmt.Errorf("rules source %q: give s3://BUCKET/KEY, such as s3://sluice-rules/fleet.json", raw)
		}
	case "nats", "tls":
		b, n, ok := strings.Cut(path, "/")
		if u.Host == "" || !ok || b == "" || n == "" || strings.Contains(n, "/") {
			return nil, fmt.Errorf("rules source %q: give nats://HOST:PORT/BUCKET/NAME (a JetStream object store and an object in it)", raw)
		}
		p.bucket, p.name = b, n
	case "http":
		return nil, fmt.Errorf("rules source %q: plain http is not accepted; serve the bundle over https", raw)
	default:
		return nil, fmt.Errorf("rules source %q: scheme %q is not one of https, s3, nats", raw, u.Scheme)
	}
	return p, nil
}

// Open returns the source at raw. It does not connect: Fetch does, and
// reconnects after failures.
func Open(raw string, o Options) (Source, error) {
	p, err := parse(raw)
	if err != nil {
		return nil, err
	}
	switch p.scheme {
	case "https":
		return newHTTPS(raw, o)
	case "s3":
		return newS3(raw, p, o)
	default:
		return newNATS(raw, p, o), nil
	}
}

// Publish uploads an encoded bundle to the source at raw: an object put
// for nats:// (the object store is created when missing) and s3://, an
// HTTP PUT for https://.
func Publish(ctx context.Context, raw string, o Options, data []byte) error {
	p, err := parse(raw)
	if err != nil {
		return err
	}
	switch p.scheme {
	case "https":
		return publishHTTPS(ctx, raw, o, data)
	case "s3":
		return publishS3(ctx, p, o, data)
	default:
		return publishNATS(ctx, raw, p, o, data)
	}
}

func tlsConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read ca_file %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
