package rulesource

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

func key(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func signed(t *testing.T, priv ed25519.PrivateKey, version int64, body string) []byte {
	t.Helper()
	b := New(map[string][]byte{"main.hcl": []byte(body), "more.hcl": []byte("# more\n")}, version)
	b.Sign(priv)
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestBundleVerify: a signed bundle verifies after a round trip; a
// changed file, an added file, a changed version, another key and an
// older version are refused with the error a user sees.
func TestBundleVerify(t *testing.T) {
	pub, priv := key(t)
	otherPub, otherPriv := key(t)
	data := signed(t, priv, 200, "mode = \"enforce\"\n")
	decode := func() *Bundle {
		b, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := decode().Verify(pub, 0); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	if err := decode().Verify(pub, 200); err != nil {
		t.Fatalf("good bundle at its own version: %v", err)
	}
	for _, c := range []struct {
		name   string
		change func(b *Bundle)
		pub    ed25519.PublicKey
		last   int64
		want   error
	}{
		{"changed file", func(b *Bundle) { b.Files["main.hcl"] = []byte("mode = \"monitor\"\n") }, pub, 0, ErrBadSignature},
		{"added file", func(b *Bundle) { b.Files["extra.hcl"] = []byte("") }, pub, 0, ErrBadSignature},
		{"removed file", func(b *Bundle) { delete(b.Files, "more.hcl") }, pub, 0, ErrBadSignature},
		{"changed version", func(b *Bundle) { b.Version = 300 }, pub, 0, ErrBadSignature},
		{"wrong key", func(*Bundle) {}, otherPub, 0, ErrBadSignature},
		{"signed by another key", func(b *Bundle) { b.Sign(otherPriv) }, pub, 0, ErrBadSignature},
		{"no signature", func(b *Bundle) { b.Signature = nil }, pub, 0, ErrBadSignature},
		{"rollback", func(*Bundle) {}, pub, 201, ErrRollback},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := decode()
			c.change(b)
			// Through the wire form, as a VM receives it.
			enc, err := b.Encode()
			if err != nil {
				t.Fatal(err)
			}
			b2, err := Decode(enc)
			if err != nil {
				t.Fatal(err)
			}
			if err := b2.Verify(c.pub, c.last); !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, c := range []struct{ name, data, want string }{
		{"not json", "hello", "decode bundle"},
		{"format", `{"format":"x","version":1,"files":{"a.hcl":""}}`, `format "x"`},
		{"version", `{"format":"sluice-ruleset-bundle-v1","version":0,"files":{"a.hcl":""}}`, "version 0"},
		{"no files", `{"format":"sluice-ruleset-bundle-v1","version":1,"files":{}}`, "0 files"},
		{"path", `{"format":"sluice-ruleset-bundle-v1","version":1,"files":{"../a.hcl":""}}`, "plain name"},
		{"dot", `{"format":"sluice-ruleset-bundle-v1","version":1,"files":{".a.hcl":""}}`, "plain name"},
	} {
		if _, err := Decode([]byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Decode = %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://rules.example/fleet.json", true},
		{"s3://bucket/fleet.json", true},
		{"nats://127.0.0.1:4222/RULES/fleet", true},
		{"http://rules.example/fleet.json", false},
		{"s3://bucket", false},
		{"nats://127.0.0.1:4222/RULES", false},
		{"nats://127.0.0.1:4222/RULES/a/b", false},
		{"ftp://x/y", false},
	} {
		if err := Check(c.url); (err == nil) != c.ok {
			t.Errorf("Check(%q) = %v, want ok %t", c.url, err, c.ok)
		}
	}
}

func TestLastGood(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rules-pulled")
	if data, err := LoadLastGood(dir); err != nil || data != nil {
		t.Fatalf("empty cache: %q, %v", data, err)
	}
	if err := SaveLastGood(dir, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := SaveLastGood(dir, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if data, err := LoadLastGood(dir); err != nil || string(data) != "two" {
		t.Fatalf("cache: %q, %v", data, err)
	}
}

// fetchAll checks a source against a bundle published with Publish:
// first fetch returns it, the next one reports no change, a new publish
// is fetched.
func fetchAll(t *testing.T, src Source, publish func([]byte)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, priv := key(t)
	if _, err := src.Fetch(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch before any publish: %v, want ErrNotFound", err)
	}
	one := signed(t, priv, 1, "# one\n")
	publish(one)
	got, err := src.Fetch(ctx)
	if err != nil || string(got) != string(one) {
		t.Fatalf("first fetch: %d bytes, %v", len(got), err)
	}
	got, err = src.Fetch(ctx)
	if err != nil || got != nil {
		t.Fatalf("fetch of an unchanged bundle: %d bytes, %v; want nil, nil", len(got), err)
	}
	two := signed(t, priv, 2, "# two\n")
	publish(two)
	got, err = src.Fetch(ctx)
	if err != nil || string(got) != string(two) {
		t.Fatalf("fetch after a new publish: %d bytes, %v", len(got), err)
	}
}

// TestHTTPS: a real TLS server on loopback, trusted through ca_file;
// polls of an unchanged bundle send If-None-Match and get 304; publish
// is a PUT.
func TestHTTPS(t *testing.T) {
	var mu sync.Mutex
	var body []byte
	var notModified atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.Method {
		case http.MethodPut:
			body, _ = io.ReadAll(r.Body)
			w.WriteHeader(http.StatusNoContent)
		case http.MethodGet:
			if body == nil {
				http.NotFound(w, r)
				return
			}
			h := Hash(body)
			etag := `"` + string(hexOf(h[:8])) + `"`
			w.Header().Set("ETag", etag)
			if r.Header.Get("If-None-Match") == etag {
				notModified.Add(1)
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Write(body)
		}
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/fleet.json"
	o := Options{CAFile: ca}
	src, err := Open(url, o)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fetchAll(t, src, func(data []byte) {
		if err := Publish(context.Background(), url, o, data); err != nil {
			t.Fatal(err)
		}
	})
	if notModified.Load() == 0 {
		t.Fatal("the unchanged poll was not a 304")
	}
	// Without ca_file the server's certificate is not trusted.
	plain, err := Open(url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("fetch without ca_file: %v, want a certificate error", err)
	}
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return out
}

// TestNATS: a real nats-server with JetStream; publish creates the
// object store; the watch signals a new version at once.
func TestNATS(t *testing.T) {
	n := testenv.StartNATS(t)
	url := n.URL + "/RULES/fleet"
	src, err := Open(url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	// Before any publish the bucket does not exist.
	if _, err := src.Fetch(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch before the bucket exists: %v, want ErrNotFound", err)
	}
	_, priv := key(t)
	one := signed(t, priv, 1, "# one\n")
	if err := Publish(ctx, url, Options{}, one); err != nil {
		t.Fatal(err)
	}
	got, err := src.Fetch(ctx)
	if err != nil || string(got) != string(one) {
		t.Fatalf("first fetch: %d bytes, %v", len(got), err)
	}
	if got, err := src.Fetch(ctx); err != nil || got != nil {
		t.Fatalf("unchanged: %d bytes, %v", len(got), err)
	}
	testenv.WaitFor(t, 5*time.Second, "the watch to start", func() bool { return src.(*natsSource).Watching() })
	// Another object in the bucket does not signal.
	if err := Publish(ctx, n.URL+"/RULES/other", Options{}, one); err != nil {
		t.Fatal(err)
	}
	two := signed(t, priv, 2, "# two\n")
	start := time.Now()
	if err := Publish(ctx, url, Options{}, two); err != nil {
		t.Fatal(err)
	}
	select {
	case <-src.Changed():
		t.Logf("watch signalled %v after the publish", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not signal the new version within 10s")
	}
	got, err = src.Fetch(ctx)
	if err != nil || string(got) != string(two) {
		t.Fatalf("fetch after the watch: %d bytes, %v", len(got), err)
	}
	// The server going away is an error, not a stale success.
	n.Stop(t)
	if _, err := src.Fetch(ctx); err == nil {
		t.Fatal("fetch with the server stopped succeeded")
	}
}

// TestS3: a real S3-compatible server (versitygw) over TLS.
func TestS3(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{TLS: true})
	s.MakeBucket(t, "rules", false)
	o := Options{CAFile: s.CAFile, Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey}
	url := "s3://rules/fleet/bundle.json"
	src, err := Open(url, o)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fetchAll(t, src, func(data []byte) {
		if err := Publish(context.Background(), url, o, data); err != nil {
			t.Fatal(err)
		}
	})
	bad, err := Open(url, Options{CAFile: s.CAFile, Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Fetch(context.Background()); err == nil {
		t.Fatal("fetch with a wrong secret key succeeded")
	}
}
