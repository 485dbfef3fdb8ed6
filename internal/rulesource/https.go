package rulesource

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// httpsSource polls a bundle over HTTPS with If-None-Match, so an
// unchanged bundle costs a 304 and no body.
type httpsSource struct {
	url string
	c   *http.Client

	mu   sync.Mutex
	etag string
}

func httpClient(o Options) (*http.Client, error) {
	tc, err := tlsConfig(o.CAFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func newHTTPS(raw string, o Options) (*httpsSource, error) {
	c, err := httpClient(o)
	if err != nil {
		return nil, err
	}
	return &httpsSource{url: raw, c: c}, nil
}

func (s *httpsSource) Fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.etag != "" {
		req.Header.Set("If-None-Match", s.etag)
	}
	s.mu.Unlock()
	resp, err := s.c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, nil
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("fetch bundle %s: %w (HTTP 404; publish one with sluice rules publish)", s.url, ErrNotFound)
	default:
		return nil, fmt.Errorf("fetch bundle %s: HTTP %s", s.url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.url, err)
	}
	if len(data) > MaxBundle {
		return nil, fmt.Errorf("fetch bundle %s: larger than %d bytes", s.url, MaxBundle)
	}
	s.mu.Lock()
	s.etag = resp.Header.Get("ETag")
	s.mu.Unlock()
	return data, nil
}

func (s *httpsSource) Changed() <-chan struct{} { return nil }
func (s *httpsSource) String() string           { return s.url }
func (s *httpsSource) Close() error {
	s.c.CloseIdleConnections()
	return nil
}

func publishHTTPS(ctx context.Context, raw string, o Options, data []byte) error {
	c, err := httpClient(o)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, raw, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("publish bundle: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("publish bundle to %s: HTTP %s (the server must accept PUT; or write the bundle to a file with --to FILE and serve it)", raw, resp.Status)
	}
	return nil
}
