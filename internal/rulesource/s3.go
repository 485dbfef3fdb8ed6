package rulesource

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Source polls a bundle in S3-compatible storage: a HEAD per poll, a
// GET when the ETag changed.
type s3Source struct {
	raw          string
	c            *minio.Client
	bucket, name string

	mu   sync.Mutex
	etag string
}

func s3Client(o Options) (*minio.Client, error) {
	mo := &minio.Options{Creds: credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""), Secure: !o.Insecure, Region: o.Region}
	tc, err := tlsConfig(o.CAFile)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		mo.Transport = tr
	}
	ep := o.Endpoint
	if ep == "" {
		ep = "s3.amazonaws.com"
	}
	return minio.New(ep, mo)
}

func newS3(raw string, p *parsed, o Options) (*s3Source, error) {
	c, err := s3Client(o)
	if err != nil {
		return nil, fmt.Errorf("rules source %s: %w", raw, err)
	}
	return &s3Source{raw: raw, c: c, bucket: p.bucket, name: p.name}, nil
}

func (s *s3Source) Fetch(ctx context.Context) ([]byte, error) {
	info, err := s.c.StatObject(ctx, s.bucket, s.name, minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, ErrNotFound)
		}
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, err)
	}
	s.mu.Lock()
	same := info.ETag != "" && info.ETag == s.etag
	s.mu.Unlock()
	if same {
		return nil, nil
	}
	if info.Size > MaxBundle {
		return nil, fmt.Errorf("fetch bundle %s: %d bytes, more than %d", s.raw, info.Size, MaxBundle)
	}
	obj, err := s.c.GetObject(ctx, s.bucket, s.name, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(io.LimitReader(obj, MaxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, err)
	}
	if len(data) > MaxBundle {
		return nil, fmt.Errorf("fetch bundle %s: larger than %d bytes", s.raw, MaxBundle)
	}
	s.mu.Lock()
	s.etag = info.ETag
	s.mu.Unlock()
	return data, nil
}

func (s *s3Source) Changed() <-chan struct{} { return nil }
func (s *s3Source) String() string           { return s.raw }
func (s *s3Source) Close() error             { return nil }

func publishS3(ctx context.Context, p *parsed, o Options, data []byte) error {
	c, err := s3Client(o)
	if err != nil {
		return err
	}
	_, err = c.PutObject(ctx, p.bucket, p.name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: "application/json"})
	if err != nil {
		return fmt.Errorf("publish bundle to s3://%s/%s: %w", p.bucket, p.name, err)
	}
	return nil
}
