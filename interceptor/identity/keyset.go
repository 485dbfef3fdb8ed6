package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// errRefetchLimited reports a token signed with a key the cached key set
// does not hold while the key set was fetched too recently to fetch again.
var errRefetchLimited = errors.New("signing key not in the issuer's key set, and the key set was fetched too recently to fetch again")

// maxJWKS bounds a key set document.
const maxJWKS = 1 << 20

// keySet is an oidc.KeySet over an issuer's jwks_uri. It exists because
// go-oidc's RemoteKeySet fetches the key set again for every token with an
// unknown key id, with no lower bound on the interval: a job can hand us
// tokens with made-up key ids (the GitLab and generic token variables are
// the job's own), and each would become a request to the issuer. Here a
// fetch starts at most once per minGap; concurrent callers share one fetch.
// A token whose key is still unknown after that is refused (fail closed) and
// its job retried later.
type keySet struct {
	url    string
	client *http.Client
	algs   []jose.SignatureAlgorithm
	minGap time.Duration
	now    func() time.Time

	mu       sync.Mutex
	keys     []jose.JSONWebKey
	last     time.Time     // when the last fetch started; zero before the first
	lastErr  error         // how the last fetch ended
	inflight chan struct{} // closed when the running fetch ends; nil when none runs
	fetches  int           // fetches started, for tests
}

// VerifySignature implements oidc.KeySet. The algorithm allowlist is checked
// here as well as by the verifier.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("parse token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("parse token: %d signatures", len(jws.Signatures))
	}
	k.mu.Lock()
	keys := k.keys
	k.mu.Unlock()
	if payload, ok := verifyWith(jws, keys); ok {
		return payload, nil
	}
	keys, err = k.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if payload, ok := verifyWith(jws, keys); ok {
		return payload, nil
	}
	return nil, errors.New("signature does not verify with any key of the issuer")
}

// verifyWith tries the keys whose id, algorithm and use fit the signature.
func verifyWith(jws *jose.JSONWebSignature, keys []jose.JSONWebKey) ([]byte, bool) {
	h := jws.Signatures[0].Header
	for i := range keys {
		key := &keys[i]
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if payload, err := jws.Verify(key); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// refresh fetches the key set unless a fetch started less than minGap ago,
// and returns the keys. Callers arriving during a fetch wait for it.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	if ch := k.inflight; ch != nil {
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.keys, k.lastErr
	}
	if !k.last.IsZero() && k.now().Sub(k.last) < k.minGap {
		err := errRefetchLimited
		if k.lastErr != nil {
			err = fmt.Errorf("%w (last fetch: %v)", errRefetchLimited, k.lastErr)
		}
		k.mu.Unlock()
		return nil, err
	}
	ch := make(chan struct{})
	k.inflight, k.last = ch, k.now()
	k.fetches++
	k.mu.Unlock()

	keys, err := k.fetch(ctx)

	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		k.keys = keys
	}
	k.lastErr = err
	k.inflight = nil
	close(ch)
	return k.keys, err
}

// fetch GETs and parses the key set. Keys of types or algorithms we do not
// accept are skipped rather than failing the whole set.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch key set: %s answered %s", k.url, resp.Status)
	}
	if len(body) > maxJWKS {
		return nil, fmt.Errorf("fetch key set: larger than %d bytes", maxJWKS)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("fetch key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(r); err != nil || !key.Valid() || !key.IsPublic() {
			continue
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("fetch key set: %s holds no usable public key", k.url)
	}
	return keys, nil
}
