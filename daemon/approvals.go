package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/user"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
)

// approvalsConfig is the approvals block.
type approvalsConfig struct {
	// Webhook receives every request and decision as JSON (the schema in
	// enforcer/approve), or in Slack's incoming-webhook shape.
	Webhook       string `hcl:"webhook,optional"`
	WebhookFormat string `hcl:"webhook_format,optional"`
	// AdminGroup is a local group whose members may list and decide
	// approvals over the local socket (root always may).
	AdminGroup string `hcl:"admin_group,optional"`

	// NATSURL, when set, shares holds with the fleet through a JetStream
	// key-value bucket (see fleetapprovals.go); decisions from there carry
	// an approver's ID token of Issuer.
	NATSURL      string            `hcl:"nats_url,optional"`
	Bucket       string            `hcl:"bucket,optional"`
	VM           string            `hcl:"vm,optional"`
	NATSCreds    string            `hcl:"nats_creds,optional"`
	NATSCAFile   string            `hcl:"nats_ca_file,optional"`
	Issuer       string            `hcl:"issuer,optional"`
	Audience     string            `hcl:"audience,optional"`
	AllowClaims  map[string]string `hcl:"allow_claims,optional"`
	IssuerCAFile string            `hcl:"issuer_ca_file,optional"`
}

// newBroker returns the daemon's approval broker and, with approvals
// nats_url, the fleet approvals that share its holds (nil without); the
// caller stops them after closing the broker.
func newBroker(cfg *Config, log hclog.Logger) (*approve.Broker, *fleetApprovals, error) {
	opts := approve.Options{Log: log}
	if cfg.Approvals.Webhook != "" {
		format := cfg.Approvals.WebhookFormat
		if format == "" {
			format = "json"
		}
		opts.Notify = approve.Webhook(cfg.Approvals.Webhook, format, &http.Client{Timeout: 10 * time.Second}, log)
	}
	fa, err := newFleetApprovals(cfg, log.Named("fleet"))
	if err != nil {
		return nil, nil, err
	}
	if fa != nil {
		hook := opts.Notify
		opts.Notify = func(ctx context.Context, ev approve.Event) {
			fa.f.Notify(ctx, ev)
			if hook != nil {
				hook(ctx, ev)
			}
		}
	}
	b := approve.NewBroker(opts)
	fa.start(b)
	return b, fa, nil
}

// holder makes a session's hold verdicts wait on the broker.
func holder(b *approve.Broker, sessionID string, f *interceptor.Flow) func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome {
	return func(ctx context.Context, h enforcer.HoldRequest) enforcer.HoldOutcome {
		d := h.Verdict.Decision
		req := approve.Request{
			Session: sessionID, Target: f.Target.Name, Rule: d.Rule.ID, Reason: d.Reason,
			Statement: h.Command.Text, Stage: h.Stage, Rows: h.Rows,
			Requester: approve.Requester{
				IdentityLevel: f.Identity.Level, Subject: f.Identity.Claims["sub"], Repository: f.Identity.Claims["repository"],
				Actor: f.Identity.Claims["actor"], Job: f.Identity.Job, UID: f.Process.UID, Comm: f.Process.Comm, PID: f.Process.TGID,
			},
		}
		if d.Hold != nil {
			req.Approvers, req.MinApprovals, req.Timeout = d.Hold.Approvers, d.Hold.MinApprovals, d.Hold.Timeout
		}
		req, ch := b.Hold(ctx, req)
		what := "this statement is held"
		if h.Stage == approve.StageResult {
			what = fmt.Sprintf("this result is paused after %d rows", h.Rows)
		}
		h.Notify(req.ID, fmt.Sprintf("sluice: %s for approval under rule %q (%s). Request %s: approve with `sluice approve %s`, refuse with `sluice deny %s`; it expires at %s.",
			what, d.Rule.ID, d.Reason, req.ID, req.ID, req.ID, req.Deadline.UTC().Format(time.RFC3339)))
		out := <-ch
		return enforcer.HoldOutcome{Approved: out.Approved, Reason: out.Reason}
	}
}

// localApprover returns who is on the other end of the local socket, if
// they may decide: root, or a member of the admin group.
func localApprover(ctx context.Context, adminGroup string) (approve.Approver, error) {
	uid, ok := peerUID(ctx)
	if !ok {
		return approve.Approver{}, errors.New("cannot tell who is asking")
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	name := strconv.FormatUint(uint64(uid), 10)
	var groups []string
	if err == nil {
		name = u.Username
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if grp, err := user.LookupGroupId(g); err == nil {
					groups = append(groups, grp.Name)
				}
			}
		}
	}
	a := approve.Approver{Kind: approve.KindLocal, Subject: name, UID: int(uid), Groups: groups}
	if uid == 0 {
		return a, nil
	}
	for _, g := range groups {
		if adminGroup != "" && g == adminGroup {
			return a, nil
		}
	}
	return a, fmt.Errorf("user %s is neither root nor in the admin group", name)
}

// approvalRoutes adds the approval endpoints. approver authenticates the
// caller (the local socket's peer, or a remote bearer token).
func approvalRoutes(mux *http.ServeMux, b *approve.Broker, approver func(*http.Request) (approve.Approver, error)) {
	mux.HandleFunc("GET /v1/approvals", func(w http.ResponseWriter, r *http.Request) {
		if _, err := approver(r); err != nil {
			api.WriteError(w, http.StatusForbidden, err)
			return
		}
		list := b.List()
		if list == nil {
			list = []approve.Request{}
		}
		api.WriteJSON(w, http.StatusOK, list)
	})
	decide := func(approveIt bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			who, err := approver(r)
			if err != nil {
				api.WriteError(w, http.StatusForbidden, err)
				return
			}
			var body struct {
				Comment string `json:"comment"`
			}
			json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body)
			req, err := b.Decide(r.PathValue("id"), who, approveIt, body.Comment)
			if err != nil {
				api.WriteError(w, http.StatusConflict, err)
				return
			}
			api.WriteJSON(w, http.StatusOK, req)
		}
	}
	mux.HandleFunc("POST /v1/approvals/{id}/approve", decide(true))
	mux.HandleFunc("POST /v1/approvals/{id}/deny", decide(false))
}
