package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/sluicehq/sluice/enforcer/approve"
)

// Verifier verifies approvers' OIDC ID tokens against one issuer, the
// audience and the required claims, the way the remote API does. Discovery
// is lazy and retried (at most every RetryDiscovery), so a daemon starts
// while the issuer is down; until it is reachable every token is refused.
type Verifier struct {
	Issuer   string
	Audience string
	// AllowClaims are claims every token must carry (a string claim equal
	// to the value, or a list claim containing it).
	AllowClaims map[string]string
	// Client fetches discovery and keys (nil: http.DefaultClient).
	Client *http.Client
	// RetryDiscovery is the wait after a failed discovery (default 30 s).
	RetryDiscovery time.Duration

	mu       sync.Mutex
	verifier *oidc.IDTokenVerifier
	next     time.Time
}

func (v *Verifier) client() *http.Client {
	if v.Client == nil {
		return http.DefaultClient
	}
	return v.Client
}

func (v *Verifier) verifierFor(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.verifier != nil {
		return v.verifier, nil
	}
	if time.Now().Before(v.next) {
		return nil, errors.New("the token issuer is unavailable; retrying shortly")
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client()), v.Issuer)
	if err != nil {
		retry := v.RetryDiscovery
		if retry <= 0 {
			retry = 30 * time.Second
		}
		v.next = time.Now().Add(retry)
		return nil, fmt.Errorf("discover token issuer: %w", err)
	}
	v.verifier = p.VerifierContext(oidc.ClientContext(context.Background(), v.client()),
		&oidc.Config{ClientID: v.Audience, SupportedSigningAlgs: []string{oidc.RS256, oidc.ES256}})
	return v.verifier, nil
}

// Verify checks token and returns the approver it names (KindOIDC, the
// subject, the email only when not marked unverified, the groups) and the
// token's expiry. It is a VerifyFunc.
func (v *Verifier) Verify(ctx context.Context, token string) (approve.Approver, time.Time, error) {
	var who approve.Approver
	if token == "" {
		return who, time.Time{}, errors.New("the decision carries no token")
	}
	ver, err := v.verifierFor(ctx)
	if err != nil {
		return who, time.Time{}, err
	}
	idt, err := ver.Verify(ctx, token)
	if err != nil {
		return who, time.Time{}, fmt.Errorf("invalid token: %w", err)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return who, time.Time{}, err
	}
	who = approve.OIDCApprover(idt.Subject, claims)
	if k, want, ok := approve.MissingClaim(claims, v.AllowClaims); !ok {
		return who, time.Time{}, fmt.Errorf("token claim %q does not include %q", k, want)
	}
	return who, idt.Expiry, nil
}
