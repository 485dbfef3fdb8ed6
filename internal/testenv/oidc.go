package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer is a real OIDC issuer on 127.0.0.1 for tests: discovery, a JWKS
// with one RSA key, and a GitHub Actions-shaped token endpoint. It stands
// in for a CI provider's issuer, which is outside this machine.
type Issuer struct {
	URL    string // https://127.0.0.1:PORT
	CAFile string // PEM of the server's certificate, for clients to trust
	// RequestToken is what the token endpoint demands as a bearer token
	// (ACTIONS_ID_TOKEN_REQUEST_TOKEN).
	RequestToken string

	srv *httptest.Server
	key *rsa.PrivateKey

	mu     sync.Mutex
	claims map[string]any // claims the token endpoint issues
}

// NewIssuer starts an issuer and stops it at cleanup.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	is, err := StartIssuer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(is.Close)
	return is
}

// StartIssuer starts an issuer whose CA file is written into dir. Close
// stops it. Programs use it (the demo's stand-in for a CI provider);
// tests use NewIssuer.
func StartIssuer(dir string) (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	is := &Issuer{key: key, RequestToken: RandName("req-")}
	mux := http.NewServeMux()
	is.srv = httptest.NewUnstartedServer(mux)
	is.srv.StartTLS()
	is.URL = is.srv.URL
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	// GitHub's shape: GET with ?audience=, bearer request token, answers
	// {"value": "<jwt>"}.
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+is.RequestToken && r.Header.Get("Authorization") != "bearer "+is.RequestToken {
			http.Error(w, "bad request token", http.StatusUnauthorized)
			return
		}
		is.mu.Lock()
		claims := map[string]any{}
		for k, v := range is.claims {
			claims[k] = v
		}
		is.mu.Unlock()
		claims["aud"] = r.URL.Query().Get("audience")
		tok, err := is.sign(claims)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"value": tok})
	})
	der := is.srv.Certificate().Raw
	is.CAFile = filepath.Join(dir, "issuer-ca.pem")
	if err := os.WriteFile(is.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		is.Close()
		return nil, err
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		is.Close()
		return nil, err
	}
	return is, nil
}

// Close stops the issuer's server.
func (is *Issuer) Close() { is.srv.Close() }

// SetClaims sets the claims the token endpoint puts in the tokens it
// issues (iss, iat and exp are added).
func (is *Issuer) SetClaims(c map[string]any) {
	is.mu.Lock()
	is.claims = c
	is.mu.Unlock()
}

// Sign returns a signed JWT with claims, adding iss, iat and exp (one hour)
// unless set.
func (is *Issuer) Sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	s, err := is.sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (is *Issuer) sign(claims map[string]any) (string, error) {
	c := map[string]any{"iss": is.URL, "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: is.key, KeyID: "k1"}}, nil)
	if err != nil {
		return "", err
	}
	payload, _ := json.Marshal(c)
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// TokenURL is the ACTIONS_ID_TOKEN_REQUEST_URL a job would be given.
func (is *Issuer) TokenURL() string { return is.URL + "/token?api-version=2.0" }
