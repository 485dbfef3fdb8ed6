package enforcer

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// Injection is a credential a session authenticates to the server with,
// in place of the client's own.
type Injection struct {
	// Name is the credential's name on its target, User the user name it
	// authenticates as, and Rule the policy block that granted it; none of
	// them is secret.
	Name, User, Rule string

	cred    *ruleset.Credential
	secrets *credential.Store
}

// Secret reads the credential's secret now. The caller must Wipe it as
// soon as authentication is done.
func (in *Injection) Secret(ctx context.Context) (*credential.Secret, error) {
	return in.secrets.Fetch(ctx, in.cred)
}

// ErrNoSecrets is returned when a flow is granted a credential but the
// session has no Store to read it with.
var ErrNoSecrets = errors.New("credential injection is not configured in this daemon")

// Injection says how the session authenticates upstream. It returns nil,
// nil when the target injects no credentials (the client authenticates
// itself), an Injection when the flow was granted one, and an error
// naming why when the target injects credentials and this flow gets none:
// the decoder must then refuse the connection in its protocol's terms. In
// monitor mode a refusal is logged and recorded but the flow goes on with
// the client's own credentials.
func (s *Session) Injection() (*Injection, error) {
	g, err := s.match.Grant()
	if err != nil {
		var ge *ruleset.GrantError
		if errors.As(err, &ge) && s.match.Ruleset().Mode() == ruleset.Monitor {
			s.log.Warn("flow would be refused a credential (monitor mode); the client authenticates itself", "reason", ge.Reason)
			s.Record(record.Metadata, record.Event{Type: record.TypeNote, Verdict: "deny", Reason: "monitor mode: " + err.Error()})
			return nil, nil
		}
		s.log.Warn("flow refused: no credential granted", "error", err)
		s.Record(record.Metadata, record.Event{Type: record.TypeNote, Verdict: "deny", Reason: err.Error()})
		return nil, err
	}
	if g == nil {
		return nil, nil
	}
	if s.Secrets == nil {
		return nil, ErrNoSecrets
	}
	c := g.Credential
	s.Record(record.Metadata, record.Event{Type: record.TypeNote, Verdict: "allow", Rule: g.Rule,
		Reason: "credential " + c.Name + " injected", Fields: map[string]string{"credential": c.Name, "user": c.User, "source": c.Source.Kind()}})
	return &Injection{Name: c.Name, User: c.User, Rule: g.Rule, cred: c, secrets: s.Secrets}, nil
}

// SSHAuth is how an ssh target's credential logs in: ruleset.SSHPassword,
// SSHPrivateKey or SSHCertificate (empty on other protocols).
func (in *Injection) SSHAuth() string { return in.cred.SSHAuth }

// K8sAuth is how a k8s target's credential authenticates to the API
// server: ruleset.K8sToken (Secret is a bearer token) or
// K8sClientCertificate (Secret is a PEM bundle of the client certificate,
// its chain and its private key). Empty on other protocols.
func (in *Injection) K8sAuth() string { return in.cred.K8sAuth }

// CertTTL is how long a certificate minted for an SSHCertificate
// credential is valid.
func (in *Injection) CertTTL() time.Duration {
	if in.cred.CertTTL > 0 {
		return in.cred.CertTTL
	}
	return ruleset.DefaultCertTTL
}
