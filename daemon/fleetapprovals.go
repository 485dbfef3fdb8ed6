package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/approve/fleet"
	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/internal/api"
)

// validateFleet checks the approvals block's fleet settings (nats_url and
// what goes with it) and fills their defaults.
func (ac *approvalsConfig) validateFleet() hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail})
	}
	if ac.NATSURL == "" {
		for k, v := range map[string]string{"bucket": ac.Bucket, "vm": ac.VM, "nats_creds": ac.NATSCreds, "nats_ca_file": ac.NATSCAFile,
			"issuer": ac.Issuer, "audience": ac.Audience, "issuer_ca_file": ac.IssuerCAFile} {
			if v != "" {
				bad("approvals "+k+" without nats_url", fmt.Sprintf("%s only applies to approvals across the fleet: set nats_url too, or remove %s.", k, k))
			}
		}
		if len(ac.AllowClaims) > 0 {
			bad("approvals allow_claims without nats_url", "allow_claims only applies to approvals across the fleet: set nats_url too, or remove allow_claims.")
		}
		return diags
	}
	for _, u := range strings.Split(ac.NATSURL, ",") {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			bad("Invalid approvals nats_url", fmt.Sprintf("nats_url %q: give one or more nats://HOST:PORT (or tls://) URLs separated by commas.", ac.NATSURL))
			break
		}
	}
	if ac.Bucket == "" {
		ac.Bucket = fleet.DefaultBucket
	} else if !subjectToken.MatchString(ac.Bucket) {
		bad("Invalid approvals bucket", fmt.Sprintf("bucket %q: use letters, digits, '-' and '_' only.", ac.Bucket))
	}
	if ac.VM == "" {
		h, _ := os.Hostname()
		ac.VM = events.SubjectToken(h)
	} else if !subjectToken.MatchString(ac.VM) {
		bad("Invalid approvals vm", fmt.Sprintf("vm %q: use letters, digits, '-' and '_' only, or leave it out for the host name.", ac.VM))
	}
	if u, err := url.Parse(ac.Issuer); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("Invalid approvals issuer", fmt.Sprintf("issuer %q: approvals with nats_url need the https URL of the OIDC issuer whose ID tokens approvers present.", ac.Issuer))
	}
	if len(ac.AllowClaims) == 0 {
		bad("approvals nats_url without allow_claims",
			"Name at least one claim an approver's token must carry (for example allow_claims = { groups = \"security\" }): any valid token of the issuer would otherwise be heard.")
	}
	if ac.Audience == "" {
		ac.Audience = "sluice"
	}
	for k, f := range map[string]string{"nats_creds": ac.NATSCreds, "nats_ca_file": ac.NATSCAFile, "issuer_ca_file": ac.IssuerCAFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			bad("Invalid approvals "+k, fmt.Sprintf("%s %q: %v.", k, f, err))
		}
	}
	return diags
}

// fleetApprovals shares the broker's holds through the bucket.
type fleetApprovals struct {
	f      *fleet.Fleet
	cfg    approvalsConfig
	log    hclog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// fleetOnStop bounds how long a stopping daemon tries to write the final
// state of its holds.
const fleetOnStop = 2 * time.Second

// newFleetApprovals returns nil without approvals nats_url.
func newFleetApprovals(cfg *Config, log hclog.Logger) (*fleetApprovals, error) {
	ac := cfg.Approvals
	if ac.NATSURL == "" {
		return nil, nil
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if ac.IssuerCAFile != "" {
		pem, err := os.ReadFile(ac.IssuerCAFile)
		pool, _ := x509.SystemCertPool()
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("approvals issuer_ca_file %s: no PEM certificates (%v)", ac.IssuerCAFile, err)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	v := &fleet.Verifier{Issuer: ac.Issuer, Audience: ac.Audience, AllowClaims: ac.AllowClaims, Client: client, RetryDiscovery: 5 * time.Second}
	f, err := fleet.New(fleet.Config{Conn: fleet.Conn{URL: ac.NATSURL, Bucket: ac.Bucket, CredsFile: ac.NATSCreds, CAFile: ac.NATSCAFile},
		VM: ac.VM, Verify: v.Verify, Log: log})
	if err != nil {
		return nil, err
	}
	return &fleetApprovals{f: f, cfg: ac, log: log}, nil
}

// start runs the fleet approvals for b until stop.
func (fa *fleetApprovals) start(b *approve.Broker) {
	if fa == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	fa.cancel, fa.done = cancel, make(chan struct{})
	go func() {
		defer close(fa.done)
		fa.f.Run(ctx, b, fleetOnStop)
	}()
	fa.log.Info("approvals shared with the fleet", "nats_url", fa.cfg.NATSURL, "bucket", fa.cfg.Bucket, "vm", fa.cfg.VM, "issuer", fa.cfg.Issuer)
}

// stop writes what it can of the holds' final states and stops. Calls
// after the first do nothing.
func (fa *fleetApprovals) stop() {
	if fa == nil || fa.cancel == nil {
		return
	}
	fa.cancel()
	<-fa.done
	fa.cancel = nil
}

// status reports the fleet approvals for sluice status; nil without.
func (fa *fleetApprovals) status() *api.FleetApprovals {
	if fa == nil {
		return nil
	}
	st := fa.f.Stats()
	return &api.FleetApprovals{URL: fa.cfg.NATSURL, Bucket: fa.cfg.Bucket, VM: fa.cfg.VM, Connected: st.Connected,
		Pending: st.Pending, Accepted: st.Accepted, Refused: st.Refused, LastError: st.LastError}
}
