// Package api is the daemon's local control API: JSON over HTTP on a unix
// socket that only root can open. The same types serve the daemon and the
// CLI.
package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultSocket is where sluiced listens unless its config says otherwise.
const DefaultSocket = "/run/sluice/sluiced.sock"

// Status is the answer to GET /v1/status.
type Status struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Cgroup is the first of Cgroups, for clients of older versions.
	Cgroup  string   `json:"cgroup"`
	Cgroups []Cgroup `json:"cgroups"`
	// Unhooked lists the cgroups the config names (or discovery found)
	// that the daemon could not hook, with why. While it is not empty
	// the daemon protects less than its config says: status and doctor
	// say so loudly.
	Unhooked  []Unhooked        `json:"unhooked,omitempty"`
	ProxyPort uint16            `json:"proxy_port"`
	PinDir    string            `json:"pin_dir"`
	Readopted bool              `json:"readopted"`
	Started   time.Time         `json:"started"`
	Ruleset   Ruleset           `json:"ruleset"`
	Targets   []Target          `json:"targets"`
	Flows     Flows             `json:"flows"`
	Kernel    map[string]uint64 `json:"kernel_counters"`
	Holds     []Hold            `json:"pending_holds"`
	// Scope is the cgroup the connect programs are attached to when the
	// config sets one; JobCgroups are the cgroups whose tasks are marked
	// as job tasks (the runners' and containers').
	Scope      string   `json:"scope,omitempty"`
	JobCgroups []Cgroup `json:"job_cgroups,omitempty"`
	// Tamper counts the tamper alerts since the daemon started, by kind.
	Tamper map[string]uint64 `json:"tamper,omitempty"`
	// Containers is the state of container jobs; nil without a
	// containers block.
	Containers *Containers `json:"containers,omitempty"`
	// Uploads is the state of recording uploads; nil without a store
	// block.
	Uploads *Uploads `json:"uploads,omitempty"`
	// Events is the state of event publishing; nil without an events
	// block.
	Events *Events `json:"events,omitempty"`
	// FleetApprovals is the state of approvals shared through NATS; nil
	// without approvals nats_url.
	FleetApprovals *FleetApprovals `json:"fleet_approvals,omitempty"`
}

// FleetApprovals is the state of the daemon's holds shared with the fleet
// through a JetStream key-value bucket.
type FleetApprovals struct {
	URL    string `json:"url"`
	Bucket string `json:"bucket"`
	VM     string `json:"vm"`
	// Connected reports whether the NATS connection is up.
	Connected bool `json:"connected"`
	// Pending counts hold entries waiting to be written to the bucket.
	Pending int `json:"pending"`
	// Accepted and Refused count decisions taken from the bucket since
	// the daemon started.
	Accepted int64 `json:"accepted"`
	Refused  int64 `json:"refused"`
	// LastError is the last NATS failure, "" once it works again.
	LastError string `json:"last_error,omitempty"`
}

// Events is the state of the daemon's event publishing to NATS JetStream.
type Events struct {
	// Stream and URL say where events go.
	Stream string `json:"stream"`
	URL    string `json:"url"`
	// Connected reports whether the NATS connection is up.
	Connected bool `json:"connected"`
	// Sent counts events the stream acknowledged since the daemon
	// started.
	Sent int64 `json:"sent"`
	// Pending events wait in the on-disk buffer (BufferBytes of
	// MaxBuffer).
	Pending     int64 `json:"pending"`
	BufferBytes int64 `json:"buffer_bytes"`
	MaxBuffer   int64 `json:"max_buffer"`
	// Dropped counts events lost since the daemon started: the buffer was
	// full (its oldest events go first) or its writer fell behind.
	Dropped int64 `json:"dropped"`
	// LastError is the last failure to send, "" once sending works.
	LastError string `json:"last_error,omitempty"`
}

// Uploads counts the uploads of sealed recordings to the store since the
// daemon started.
type Uploads struct {
	// Store is s3://BUCKET/PREFIX/.
	Store string `json:"store"`
	// Pending recordings wait for their upload or a retry.
	Pending     int   `json:"pending"`
	Uploaded    int64 `json:"uploaded"`
	FailedTries int64 `json:"failed_tries"`
	// Resumed recordings were pending when the previous daemon stopped
	// and were queued again at this start (the persistent queue).
	Resumed int `json:"resumed"`
}

// Containers says how container jobs are covered.
type Containers struct {
	// Cgroup is the runtime's cgroup parent sluiced hooks.
	Cgroup string `json:"cgroup"`
	// Addresses are the container addresses the proxy listens on.
	Addresses []string `json:"addresses"`
	// DockerSocket is the runtime API followed; RuntimeError why it cannot
	// be followed now ("" when it is).
	DockerSocket string `json:"docker_socket,omitempty"`
	RuntimeError string `json:"runtime_error,omitempty"`
	// Outside is what is done to a container outside the hooked cgroups
	// (kill or alert); Unhooked counts those found since the daemon
	// started.
	Outside  string `json:"outside"`
	Unhooked uint64 `json:"unhooked"`
}

// Cgroup is a hooked cgroup as status shows it: its path relative to the
// cgroup2 mount, its kernel id, and where it came from (config,
// discovered, or pinned by an earlier daemon).
type Cgroup struct {
	Path   string `json:"path"`
	ID     uint64 `json:"id"`
	Source string `json:"source"`
}

// Unhooked is a wanted cgroup the daemon could not hook: its path
// relative to the cgroup2 mount, where it came from (config or
// discovered), why (Reason, a sentence for a person), and since when the
// daemon has been trying. The daemon keeps trying and hooks it when it
// can (a missing cgroup when it appears).
type Unhooked struct {
	Path   string    `json:"path"`
	Source string    `json:"source"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// Hold is a pending approval request as status shows it.
type Hold struct {
	ID        string    `json:"id"`
	Rule      string    `json:"rule"`
	Target    string    `json:"target"`
	Stage     string    `json:"stage"`
	Statement string    `json:"statement"`
	Deadline  time.Time `json:"deadline"`
}

// Target is a configured target as status shows it.
type Target struct {
	Name      string   `json:"name"`
	Protocol  string   `json:"protocol"`
	Addresses []string `json:"addresses"`
	// Decoded is false when the target's flows cannot be decoded (this
	// build has no decoder for the protocol, or an ssh target has no
	// credential for Sluice to log in with, as Why says): they are then
	// relayed uninspected or refused, as Undecoded says.
	Decoded bool   `json:"decoded"`
	Why     string `json:"why,omitempty"`
	// Mode is what the target's flows get in this build: "decoded",
	// "relayed opaquely" (tcp), "relayed opaquely (undecoded)" or
	// "refused undecoded".
	Mode string `json:"mode,omitempty"`
	// Undecoded is the target's undecoded setting ("relay" or
	// "refuse") when Decoded is false, and Rule the rule ID its
	// refusals name. A target decoded flow by flow (k8s: the flows of
	// clients that trust Sluice's CA) is Decoded with Why, Undecoded and
	// Rule set for the flows it cannot decode.
	Undecoded string `json:"undecoded,omitempty"`
	Rule      string `json:"rule,omitempty"`
}

// Ruleset is the active ruleset and the last failed attempt to replace it.
type Ruleset struct {
	Generation uint64        `json:"generation"`
	Source     string        `json:"source"`
	Loaded     time.Time     `json:"loaded"`
	Digest     string        `json:"digest"`
	Mode       string        `json:"mode"`
	Signed     bool          `json:"signatures_required"`
	LastError  *RulesetError `json:"last_error,omitempty"`
	// Pulled is the state of rulesets pulled from rules_source; nil
	// without one.
	Pulled *RulesPulled `json:"pulled,omitempty"`
}

// RulesPulled is where a daemon pulls its signed rulesets from and which
// version it runs.
type RulesPulled struct {
	// Source is the rules_source URL.
	Source string `json:"source"`
	// Version is the bundle version applied (its publish time in ns); 0
	// when no pulled bundle was ever applied and the embedded default
	// ruleset is enforced.
	Version int64 `json:"version"`
	// Digest is the applied bundle's ruleset digest.
	Digest string `json:"digest,omitempty"`
	// From is "source" (fetched or confirmed by the source since this
	// start), "disk" (loaded at start from the last good bundle kept in
	// data_dir; the source has not confirmed it yet) or "default" (never
	// had a bundle: the embedded default ruleset).
	From string `json:"from"`
	// Applied is when the version was applied.
	Applied time.Time `json:"applied,omitempty"`
	// LastCheck is the last fetch attempt; LastError its error, or the
	// reason the last fetched bundle was refused ("" when it was fine).
	LastCheck time.Time `json:"last_check,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	// Refused is the version of the last bundle refused (bad signature,
	// rollback or invalid ruleset); 0 when none was.
	Refused int64 `json:"refused,omitempty"`
	// Watching is true while a NATS watch delivers new versions at once.
	Watching bool `json:"watching,omitempty"`
}

// RulesetError is a rejected ruleset: where it came from, when, and its
// errors as file:line:col: severity: message lines.
type RulesetError struct {
	Source string    `json:"source"`
	At     time.Time `json:"at"`
	Errors []string  `json:"errors"`
}

// PushRequest is the body of POST /v1/rules: a ruleset's *.hcl files by
// base name and its detached ed25519 signature (raw bytes, base64 in
// JSON), if signed.
type PushRequest struct {
	Files     map[string]string `json:"files"`
	Signature []byte            `json:"signature,omitempty"`
}

// PushResponse says whether the pushed ruleset is now active.
type PushResponse struct {
	Accepted bool     `json:"accepted"`
	Messages []string `json:"messages,omitempty"`
	Ruleset  Ruleset  `json:"ruleset"`
}

// Flows are the proxy's counters.
type Flows struct {
	Total    uint64 `json:"total"`
	Active   int64  `json:"active"`
	NoOrigin uint64 `json:"no_origin"`
	Refused  uint64 `json:"refused"`
	Denied   uint64 `json:"denied"`
	// TooMany counts connections refused past max_sessions.
	TooMany uint64 `json:"too_many_sessions"`
}

// Client talks to a daemon: over its local socket, or over HTTPS to its
// remote API with a bearer token. When the daemon cannot be reached its
// methods return an *UnreachableError, worded for the person at the
// terminal.
type Client struct {
	// Socket is the daemon's socket path, or the remote API's URL.
	Socket string
	base   string
	token  string
	remote bool
	http   *http.Client
}

// NewRemoteClient returns a client for a daemon's remote API at base
// (https://host:port), trusting roots (nil: the system's) and sending
// token as a bearer token.
func NewRemoteClient(base, token string, roots *x509.CertPool) *Client {
	return &Client{Socket: base, base: strings.TrimSuffix(base, "/"), token: token, remote: true, http: &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}}
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	return &Client{Socket: socket, base: "http://sluiced", http: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}}
}

// Get fetches path and decodes the JSON answer into v.
func (c *Client) Get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, v)
}

// Post sends body as JSON to path and decodes the answer into v.
func (c *Client) Post(ctx context.Context, path string, body, v any) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(json.NewEncoder(pw).Encode(body)) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, v)
}

// Push sends a ruleset to the daemon. A rejection is not an error: the
// response says why.
func (c *Client) Push(ctx context.Context, req *PushRequest) (*PushResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/rules", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnprocessableEntity {
		e := &Error{Status: resp.StatusCode}
		json.NewDecoder(resp.Body).Decode(e)
		return nil, e
	}
	var pr PushResponse
	if err := json.NewDecoder(resp.Body).Decode(&pr); err != nil {
		return nil, fmt.Errorf("decode push response: %w", err)
	}
	return &pr, nil
}

// SessionDetail is the answer to GET /v1/sessions/{id}: the index entry
// and the recording's events.
type SessionDetail struct {
	Session         json.RawMessage `json:"session"`
	Header          json.RawMessage `json:"header"`
	RecordingStatus string          `json:"recording_status"`
	Events          json.RawMessage `json:"events"`
	ReadError       string          `json:"read_error,omitempty"`
}

// VerifyResult is one recording's verification.
type VerifyResult struct {
	ID            string `json:"id"`
	Path          string `json:"path"`
	Status        string `json:"status"`
	IndexStatus   string `json:"index_status"`
	Frames        uint64 `json:"frames"`
	Events        uint64 `json:"events"`
	SignedThrough uint64 `json:"signed_through"`
	TornBytes     int64  `json:"torn_bytes"`
	Error         string `json:"error,omitempty"`
}

// Error is a non-2xx answer from the daemon.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return fmt.Sprintf("daemon answered %d: %s", e.Status, e.Message) }

func (c *Client) do(req *http.Request, v any) error {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := &Error{Status: resp.StatusCode}
		json.NewDecoder(resp.Body).Decode(e)
		return e
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// UnreachableError is a request that got no answer from the daemon: its
// socket is missing, refuses, is not open to this user, or the daemon did
// not answer in time. Its message says what happened and what to do, in
// words for a person; Err keeps the cause for errors.Is.
type UnreachableError struct {
	// Addr is the socket path, or the remote API's URL when Remote.
	Addr   string
	Remote bool
	Err    error
}

func (e *UnreachableError) Error() string {
	cause := e.Err
	var ue *url.Error
	if errors.As(cause, &ue) {
		cause = ue.Err // not the request's method and URL
	}
	var oe *net.OpError
	if errors.As(cause, &oe) && oe.Err != nil {
		cause = oe.Err // not "dial unix PATH: connect:"
		var se *os.SyscallError
		if errors.As(cause, &se) {
			cause = se.Err
		}
	}
	timeout := errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, os.ErrDeadlineExceeded)
	var ne net.Error
	if errors.As(e.Err, &ne) && ne.Timeout() {
		timeout = true
	}
	switch {
	case timeout:
		return fmt.Sprintf("the daemon did not answer on %s in time: it may be busy or stuck; see journalctl -u sluiced", e.Addr)
	case e.Remote:
		return fmt.Sprintf("cannot reach the daemon's remote API at %s: %v: check --server and that remote_api is enabled in its config", e.Addr, cause)
	case errors.Is(e.Err, fs.ErrNotExist), errors.Is(e.Err, syscall.ECONNREFUSED):
		return fmt.Sprintf("the daemon is not running (nothing listens on %s): start it with \"systemctl start sluiced\", or pass --socket PATH if it uses another socket", e.Addr)
	case errors.Is(e.Err, fs.ErrPermission):
		return fmt.Sprintf("permission denied on the daemon's socket %s: run as root (only root may use the daemon's API)", e.Addr)
	}
	return fmt.Sprintf("cannot reach the daemon on %s: %v", e.Addr, cause)
}

// Unwrap returns the cause.
func (e *UnreachableError) Unwrap() error { return e.Err }

// unreachable wraps a transport error of a request to the daemon.
func (c *Client) unreachable(err error) error {
	return &UnreachableError{Addr: c.Socket, Remote: c.remote, Err: err}
}

// WriteJSON writes v with status code; handlers use it for every answer.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError answers with an Error.
func WriteError(w http.ResponseWriter, code int, err error) {
	WriteJSON(w, code, &Error{Message: err.Error()})
}

// ParseSince accepts a duration back from now ("2h", "7d") or an RFC 3339
// time, for --since flags and the ?since= parameter.
func ParseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil {
			return time.Now().Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: give a duration such as 2h or 7d, or an RFC 3339 time", s)
	}
	return t, nil
}
