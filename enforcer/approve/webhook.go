package approve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// Webhook formats.
const (
	FormatJSON  = "json"  // the stable schema in the package doc
	FormatSlack = "slack" // a Slack incoming-webhook message
)

// MaxWebhookStatement is how many bytes of a statement the JSON format
// sends; longer statements are cut and marked statement_truncated.
const MaxWebhookStatement = 8192

// CheckFormat reports whether format is one Webhook knows, for checking
// configuration before the first event. The empty format means JSON.
func CheckFormat(format string) error {
	switch format {
	case "", FormatJSON, FormatSlack:
		return nil
	}
	return fmt.Errorf("check webhook format %q: want %q or %q", format, FormatJSON, FormatSlack)
}

// retryPolicy is how often and how patiently a webhook retries.
type retryPolicy struct {
	attempts    int
	first, max  time.Duration // the first wait, doubled up to max
	maxResponse int64         // response bytes read for the log
}

var defaultRetry = retryPolicy{attempts: 5, first: 500 * time.Millisecond, max: 8 * time.Second, maxResponse: 512}

// Webhook returns a Notifier that POSTs each event to target in format
// (FormatJSON, the default, or FormatSlack). A failed attempt (no
// response, 408, 429 or 5xx) is retried up to 5 attempts in all, waiting
// 500ms and doubling, at most 8s; other statuses, and the last failure,
// are logged as errors and the event is dropped. A failed webhook only
// means someone was not told: it never approves or denies anything. The
// Notifier blocks while it retries; ctx done stops it. client nil means a
// client with a 10s timeout. The URL is never logged (a Slack webhook URL
// is a credential), only its host.
func Webhook(target string, format string, client *http.Client, log hclog.Logger) Notifier {
	return webhook(target, format, client, log, defaultRetry)
}

func webhook(target, format string, client *http.Client, log hclog.Logger, p retryPolicy) Notifier {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("webhook")
	u, err := url.Parse(target)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the URL
	}
	if err == nil && u.Scheme != "http" && u.Scheme != "https" {
		err = errors.New("scheme is not http or https")
	}
	if err == nil {
		err = CheckFormat(format)
		log = log.With("host", u.Host)
	} else {
		err = fmt.Errorf("parse webhook URL: %w", err)
	}
	return func(ctx context.Context, ev Event) {
		if err != nil {
			log.Error("webhook not sent", "id", ev.Request.ID, "kind", ev.Kind, "error", err)
			return
		}
		var body []byte
		var merr error
		switch {
		case ev.Kind == EventAlert && format == FormatSlack:
			body, merr = json.Marshal(slackAlert(ev.Alert))
		case ev.Kind == EventAlert:
			body, merr = json.Marshal(jsonAlertEvent{Kind: EventAlert, Alert: jsonAlert{Kind: ev.Alert.Kind, Summary: ev.Alert.Summary, Time: ev.Alert.Time.UTC(), Fields: ev.Alert.Fields}})
		case format == FormatSlack:
			body, merr = json.Marshal(slackMessage(ev))
		default:
			body, merr = json.Marshal(jsonMessage(ev))
		}
		if merr != nil {
			log.Error("webhook not sent", "id", ev.Request.ID, "kind", ev.Kind, "error", merr)
			return
		}
		wait := p.first
		for attempt := 1; ; attempt++ {
			retry, after, err := post(ctx, client, target, body, p.maxResponse)
			if err == nil {
				log.Debug("webhook delivered", "id", ev.Request.ID, "kind", ev.Kind, "attempts", attempt)
				return
			}
			if !retry || attempt >= p.attempts {
				log.Error("webhook gave up", "id", ev.Request.ID, "kind", ev.Kind, "attempts", attempt, "error", err)
				return
			}
			d := min(max(wait, after), p.max)
			log.Warn("webhook failed; retrying", "id", ev.Request.ID, "kind", ev.Kind, "attempt", attempt, "wait", d, "error", err)
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				log.Error("webhook gave up", "id", ev.Request.ID, "kind", ev.Kind, "attempts", attempt, "error", ctx.Err())
				return
			case <-t.C:
			}
			wait *= 2
		}
	}
}

// post makes one attempt. It reports whether a failure is worth retrying
// and how long the server asked to wait (Retry-After in seconds).
func post(ctx context.Context, client *http.Client, target string, body []byte, maxResponse int64) (retry bool, after time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return false, 0, errors.New("make webhook request: invalid URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sluice-approve")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return true, 0, fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, 0, nil
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		after = time.Duration(s) * time.Second
	}
	retry = resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return retry, after, fmt.Errorf("post webhook: %s: %q", resp.Status, strings.TrimSpace(string(msg)))
}

// The JSON format's wire types. Their field names are the stable schema
// documented in the package doc: only ever add to them.
type (
	// jsonAlertEvent is an alert's body: {"kind": "alert", "alert": {...}}.
	jsonAlertEvent struct {
		Kind  string    `json:"kind"`
		Alert jsonAlert `json:"alert"`
	}
	jsonAlert struct {
		Kind    string            `json:"kind"`
		Summary string            `json:"summary"`
		Time    time.Time         `json:"time"`
		Fields  map[string]string `json:"fields"`
	}
	jsonEvent struct {
		Kind           string      `json:"kind"`
		Request        jsonRequest `json:"request"`
		ApproveCommand string      `json:"approve_command"`
		DenyCommand    string      `json:"deny_command"`
	}
	jsonRequest struct {
		ID                 string         `json:"id"`
		Session            string         `json:"session"`
		Target             string         `json:"target"`
		Rule               string         `json:"rule"`
		Reason             string         `json:"reason"`
		Statement          string         `json:"statement"`
		StatementTruncated bool           `json:"statement_truncated"`
		Stage              string         `json:"stage"`
		Rows               int64          `json:"rows"`
		Approvers          []string       `json:"approvers"`
		MinApprovals       int            `json:"min_approvals"`
		Requester          jsonRequester  `json:"requester"`
		Created            time.Time      `json:"created"`
		Deadline           time.Time      `json:"deadline"`
		State              string         `json:"state"`
		Decisions          []jsonDecision `json:"decisions"`
	}
	jsonRequester struct {
		IdentityLevel string `json:"identity_level"`
		Subject       string `json:"subject"`
		Repository    string `json:"repository"`
		Actor         string `json:"actor"`
		Job           string `json:"job"`
		UID           uint32 `json:"uid"`
		Comm          string `json:"comm"`
		PID           uint32 `json:"pid"`
	}
	jsonDecision struct {
		By      jsonApprover `json:"by"`
		Approve bool         `json:"approve"`
		Comment string       `json:"comment"`
		At      time.Time    `json:"at"`
	}
	jsonApprover struct {
		Kind    string   `json:"kind"`
		Subject string   `json:"subject"`
		UID     int      `json:"uid"`
		Email   string   `json:"email"`
		Groups  []string `json:"groups"`
	}
)

func jsonMessage(ev Event) jsonEvent {
	r := ev.Request
	stmt, cut := truncate(r.Statement, MaxWebhookStatement)
	out := jsonEvent{
		Kind: ev.Kind,
		Request: jsonRequest{
			ID: r.ID, Session: r.Session, Target: r.Target, Rule: r.Rule, Reason: r.Reason,
			Statement: stmt, StatementTruncated: cut, Stage: r.Stage, Rows: r.Rows,
			Approvers: nonNil(r.Approvers), MinApprovals: r.MinApprovals,
			Requester: jsonRequester{
				IdentityLevel: r.Requester.IdentityLevel, Subject: r.Requester.Subject,
				Repository: r.Requester.Repository, Actor: r.Requester.Actor, Job: r.Requester.Job,
				UID: r.Requester.UID, Comm: r.Requester.Comm, PID: r.Requester.PID,
			},
			Created: r.Created.UTC(), Deadline: r.Deadline.UTC(), State: r.State,
			Decisions: []jsonDecision{},
		},
		ApproveCommand: "sluice approve " + r.ID,
		DenyCommand:    "sluice deny " + r.ID,
	}
	for _, d := range r.Decisions {
		out.Request.Decisions = append(out.Request.Decisions, jsonDecision{
			By:      jsonApprover{Kind: d.By.Kind, Subject: d.By.Subject, UID: d.By.UID, Email: d.By.Email, Groups: nonNil(d.By.Groups)},
			Approve: d.Approve, Comment: d.Comment, At: d.At.UTC(),
		})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// truncate cuts s to at most n bytes on a rune boundary and reports
// whether it cut.
func truncate(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}
