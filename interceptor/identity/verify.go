package identity

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// maxToken bounds a JWT we are willing to parse.
const maxToken = 64 << 10

// issuer is one configured OIDC issuer: its provider is discovered on first
// use and, after a failure, again no sooner than discoveryRetry later.
type issuer struct {
	cfg    IssuerConfig
	client *http.Client
	skew   time.Duration
	now    func() time.Time
	retry  time.Duration
	minGap time.Duration

	mu       sync.Mutex // held during discovery: callers for this issuer wait for it
	verifier *oidc.IDTokenVerifier
	keys     *keySet
	failedAt time.Time
	failErr  error
}

// errIssuerUnavailable wraps a discovery failure.
var errIssuerUnavailable = errors.New("issuer unavailable")

// tokenVerifier returns the issuer's verifier, discovering the provider
// when that has not succeeded yet.
func (is *issuer) tokenVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.verifier != nil {
		return is.verifier, nil
	}
	if !is.failedAt.IsZero() && is.now().Sub(is.failedAt) < is.retry {
		return nil, is.failErr
	}
	v, ks, err := is.discover(ctx)
	if err != nil {
		is.failedAt, is.failErr = is.now(), fmt.Errorf("%w: %s: %v", errIssuerUnavailable, is.cfg.URL, err)
		return nil, is.failErr
	}
	is.verifier, is.keys = v, ks
	return v, nil
}

// discover reads the issuer's discovery document (go-oidc checks that the
// document names the same issuer) and builds a verifier over our
// rate-limited key set.
func (is *issuer) discover(ctx context.Context) (*oidc.IDTokenVerifier, *keySet, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, is.client), is.cfg.URL)
	if err != nil {
		return nil, nil, err
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return nil, nil, err
	}
	if doc.JWKSURI == "" {
		return nil, nil, errors.New("discovery document has no jwks_uri")
	}
	algs := make([]jose.SignatureAlgorithm, len(is.cfg.Algorithms))
	for i, a := range is.cfg.Algorithms {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	ks := &keySet{url: doc.JWKSURI, client: is.client, algs: algs, minGap: is.minGap, now: is.now}
	skew := is.skew
	v := oidc.NewVerifier(is.cfg.URL, ks, &oidc.Config{
		ClientID:             is.cfg.Audience,
		SupportedSigningAlgs: is.cfg.Algorithms,
		// go-oidc refuses a token whose exp is before Now(); moving Now back
		// by the skew accepts a token up to skew past its expiry. The nbf
		// and iat bounds are checked by verify, since go-oidc's own nbf
		// leeway is a fixed five minutes.
		Now: func() time.Time { return is.now().Add(-skew) },
	})
	return v, ks, nil
}

// verified is the outcome of a successful verification.
type verified struct {
	claims map[string]string
	expiry time.Time
}

// refusal is a token that did not verify, with the reason for the log.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return r.reason }
func (r *refusal) Unwrap() error { return r.err }

func refuse(err error, format string, args ...any) error {
	return &refusal{reason: fmt.Sprintf(format, args...), err: err}
}

// verify checks raw against the configured issuer it names. The issuer is
// read from the unverified payload only to pick the verifier; everything
// returned comes from a verified token.
func (r *Resolver) verify(ctx context.Context, raw string) (verified, error) {
	if len(raw) > maxToken {
		return verified{}, refuse(nil, "token larger than %d bytes", maxToken)
	}
	peek, err := peekClaims(raw)
	if err != nil {
		return verified{}, refuse(err, "token is not a JWT")
	}
	is := r.issuers[peek.Issuer]
	if is == nil {
		return verified{}, refuse(nil, "token issuer %q is not a configured issuer", peek.Issuer)
	}
	v, err := is.tokenVerifier(ctx)
	if err != nil {
		return verified{}, refuse(err, "cannot verify token: %v", err)
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		switch {
		case errors.As(err, &exp):
			return verified{}, refuse(err, "token expired at %s", exp.Expiry.UTC().Format(time.RFC3339))
		case !slices.Contains(peek.Audience, is.cfg.Audience):
			return verified{}, refuse(err, "token audience mismatch: token is for %q, this host accepts %q", []string(peek.Audience), is.cfg.Audience)
		default:
			return verified{}, refuse(err, "token refused: %v", err)
		}
	}
	var all map[string]json.RawMessage
	if err := tok.Claims(&all); err != nil {
		return verified{}, refuse(err, "token claims: %v", err)
	}
	now := r.now()
	for _, c := range []string{"nbf", "iat"} {
		if t, ok := numericTime(all[c]); ok && t.After(now.Add(r.skew)) {
			return verified{}, refuse(nil, "token %s is %s, in the future beyond the allowed clock skew of %s", c, t.UTC().Format(time.RFC3339), r.skew)
		}
	}
	claims := flatten(all)
	for _, name := range sortedKeys(is.cfg.BoundClaims) {
		want := is.cfg.BoundClaims[name]
		got, ok := claims[name]
		if !ok {
			return verified{}, refuse(nil, "token lacks bound claim %s (want %q)", name, want)
		}
		if got != want {
			return verified{}, refuse(nil, "token claim %s is %q, bound to %q", name, got, want)
		}
	}
	return verified{claims: claims, expiry: tok.Expiry}, nil
}

// peeked is the part of an unverified payload used to pick the issuer and
// to explain a refusal.
type peeked struct {
	Issuer   string   `json:"iss"`
	Audience audience `json:"aud"`
}

// audience is aud, which is a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	*a = l
	return nil
}

// peekClaims decodes a compact JWS payload without verifying it.
func peekClaims(raw string) (peeked, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return peeked{}, errors.New("not three dot-separated parts")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return peeked{}, err
	}
	var p peeked
	return p, json.Unmarshal(b, &p)
}

// numericTime reads a NumericDate claim.
func numericTime(b json.RawMessage) (time.Time, bool) {
	if len(b) == 0 {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

// flatten turns verified claims into identity.* strings: a string is
// itself; a number, boolean or null is its JSON text (1700000000, true,
// null); an array or object is its compact JSON text (["a","b"]). Numbers
// keep their exact JSON spelling, so a large run_id is never rounded.
func flatten(all map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(all))
	for k, v := range all {
		var s string
		if len(v) > 0 && v[0] == '"' && json.Unmarshal(v, &s) == nil {
			out[k] = s
			continue
		}
		var buf bytes.Buffer
		if json.Compact(&buf, v) == nil {
			out[k] = buf.String()
		} else {
			out[k] = string(v)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
