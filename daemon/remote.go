package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/tlsutil"
)

// remoteConfig is the remote_api block: HTTPS for responders, who present
// an OIDC bearer token from the configured issuer.
type remoteConfig struct {
	Listen      string            `hcl:"listen"`
	Issuer      string            `hcl:"issuer"`
	Audience    string            `hcl:"audience,optional"`
	AllowClaims map[string]string `hcl:"allow_claims"`
	CAFile      string            `hcl:"ca_file,optional"`
}

// remoteAuth verifies bearer tokens against one issuer and requires the
// configured claims. Discovery is lazy and retried, so a daemon starts
// while the issuer is down; until it is reachable every request is
// refused.
type remoteAuth struct {
	cfg    remoteConfig
	client *http.Client
	log    hclog.Logger

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	next     time.Time
}

func (a *remoteAuth) verifierFor(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.verifier != nil {
		return a.verifier, nil
	}
	if time.Now().Before(a.next) {
		return nil, errors.New("the token issuer is unavailable; retrying shortly")
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, a.client), a.cfg.Issuer)
	if err != nil {
		a.next = time.Now().Add(30 * time.Second)
		return nil, fmt.Errorf("discover token issuer: %w", err)
	}
	a.verifier = p.VerifierContext(oidc.ClientContext(context.Background(), a.client),
		&oidc.Config{ClientID: a.cfg.Audience, SupportedSigningAlgs: []string{oidc.RS256, oidc.ES256}})
	return a.verifier, nil
}

// check returns the token's approver identity when the request may
// proceed.
func (a *remoteAuth) check(r *http.Request) (approve.Approver, int, error) {
	var who approve.Approver
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return who, http.StatusUnauthorized, errors.New("a bearer token is required")
	}
	v, err := a.verifierFor(r.Context())
	if err != nil {
		return who, http.StatusServiceUnavailable, err
	}
	idt, err := v.Verify(r.Context(), tok)
	if err != nil {
		return who, http.StatusUnauthorized, fmt.Errorf("invalid token: %w", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return who, http.StatusUnauthorized, err
	}
	who = approve.OIDCApprover(idt.Subject, claims)
	if k, want, ok := approve.MissingClaim(claims, a.cfg.AllowClaims); !ok {
		return who, http.StatusForbidden, fmt.Errorf("token claim %q does not include %q", k, want)
	}
	return who, 0, nil
}

type approverKey struct{}

// startRemote serves the read-only recording API over HTTPS with the
// daemon CA's certificate. Rules pushes and approvals stay local.
func startRemote(cfg *Config, ca *tlsutil.CA, rec *recorder, status func() api.Status, log hclog.Logger) (*http.Server, error) {
	// Read-only endpoints, plus approval decisions by the token's holder.
	rc := cfg.Remote
	client := &http.Client{Timeout: 10 * time.Second}
	if rc.CAFile != "" {
		pem, err := os.ReadFile(rc.CAFile)
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("remote_api ca_file %s: no PEM certificates (%v)", rc.CAFile, err)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	auth := &remoteAuth{cfg: *rc, client: client, log: log}
	inner := http.NewServeMux()
	rec.routes(inner)
	inner.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { api.WriteJSON(w, http.StatusOK, status()) })
	approvalRoutes(inner, rec.broker, func(r *http.Request) (approve.Approver, error) {
		who, _ := r.Context().Value(approverKey{}).(approve.Approver)
		return who, nil
	})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, code, err := auth.check(r)
		if err != nil {
			log.Warn("remote request refused", "path", r.URL.Path, "subject", who.Subject, "remote", r.RemoteAddr, "error", err)
			api.WriteError(w, code, err)
			return
		}
		if r.Method != http.MethodGet && !strings.HasPrefix(r.URL.Path, "/v1/approvals/") {
			api.WriteError(w, http.StatusMethodNotAllowed, errors.New("the remote API only reads, and decides approvals"))
			return
		}
		log.Info("remote request", "method", r.Method, "path", r.URL.Path, "subject", who.Subject, "remote", r.RemoteAddr)
		inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), approverKey{}, who)))
	})
	ln, err := net.Listen("tcp", rc.Listen)
	if err != nil {
		return nil, fmt.Errorf("remote_api listen: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, TLSConfig: ca.ServerConfig()}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("remote api failed", "error", err)
		}
	}()
	log.Info("remote api listening", "addr", ln.Addr().String(), "issuer", rc.Issuer)
	return srv, nil
}
