// Package identity ties a connecting process to the CI job it belongs to and
// to that job's verified workload identity.
//
// From the pid the eBPF hook recorded, the Resolver walks the process's
// live ancestry in /proc to the job's anchor process: for GitHub Actions
// the nearest process named Runner.Worker, for GitLab (and other runners
// configured in Config.JobParents) the job shell, that is the ancestor
// whose parent is the runner process itself. A job is keyed by the
// anchor's pid and start time, never by a bare pid. A process that outlived
// its job has been reparented away from the anchor and so has no job.
//
// The anchor says only where to look for a token; trust comes from the
// token. For GitHub the Resolver requests an ID token from the job's token
// service (ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN in the job's
// environment); for GitLab and generic runners it takes the token from the
// variable Config.TokenVariable. The token is verified against the
// configured issuer it names (signature with pinned algorithms, audience,
// expiry with bounded skew, bound claims). Verified claims become
// identity.*; everything else the environment says is a hint, never
// identity. Identity is cached per job until the job ends or the token
// expires; concurrent connections of one job share one lookup.
//
// Neither the job's request token nor any ID token is logged, returned or
// recorded.
package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// Job kinds, as JobKey.Kind.
const (
	KindGitHub  = "github"  // anchored at a Runner.Worker process
	KindGitLab  = "gitlab"  // anchored at the job shell under gitlab-runner
	KindGeneric = "generic" // anchored at the job shell under another JobParents runner
	// KindContainer: anchored at the outermost process of a container that
	// runs no job process of the host (a `docker run` from a job, a GitLab
	// docker executor's build container, a GitHub job container's step).
	// Its token is a GitHub job's request variables when its environment
	// has them, else Config.TokenVariable.
	KindContainer = "container"
)

// GitHubIssuer is GitHub Actions' OIDC issuer, the default issuer.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// Defaults applied by New to zero Config fields.
var (
	DefaultGitHubAudience     = "sluice"
	DefaultTokenHostAllowlist = []string{"token.actions.githubusercontent.com", "*.actions.githubusercontent.com"}
	DefaultTokenVariable      = "SLUICE_ID_TOKEN"
	DefaultJobParents         = []string{"gitlab-runner"}
	DefaultAlgorithms         = []string{"RS256", "ES256"}
)

// Default durations and the clock-skew ceiling.
const (
	DefaultClockSkew       = 60 * time.Second
	MaxClockSkew           = 5 * time.Minute
	DefaultJWKSRefetchMin  = time.Minute
	DefaultDiscoveryRetry  = 30 * time.Second
	DefaultRetryUnverified = 30 * time.Second
	DefaultTimeout         = 10 * time.Second
)

// runnerWorker is the comm of GitHub Actions' per-job process.
const runnerWorker = "Runner.Worker"

// knownAlgorithms are the asymmetric JWS algorithms an issuer may be pinned
// to. "none" and the HMAC algorithms are never accepted.
var knownAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config configures a Resolver. The zero value of each field means its
// default; fields are plain values so the daemon's HCL maps onto them.
type Config struct {
	// Issuers are the OIDC issuers whose tokens are accepted, one provider
	// each. A token naming any other issuer is refused. Empty means one
	// issuer: GitHubIssuer with audience GitHubAudience.
	Issuers []IssuerConfig

	// GitHubAudience is the audience requested from GitHub's token
	// service, and the default audience of every issuer. Default "sluice".
	GitHubAudience string

	// TokenHostAllowlist lists the hosts a job's ACTIONS_ID_TOKEN_REQUEST_URL
	// may name: exact host names, or "*.domain" for any name under domain.
	// The request must be https. Default: token.actions.githubusercontent.com
	// and *.actions.githubusercontent.com (GitHub hands out regional hosts
	// such as pipelines<region>.actions.githubusercontent.com). For GitHub
	// Enterprise Server add the GHES host here and its issuer,
	// https://HOST/_services/token, to Issuers.
	TokenHostAllowlist []string

	// TokenVariable is the job environment variable holding an ID token for
	// GitLab (an id_tokens entry) and generic runners. Default
	// "SLUICE_ID_TOKEN".
	TokenVariable string

	// JobParents are the comm names of runner processes that start one
	// shell per job (the shell executor); the ancestor directly below the
	// nearest such process is the job's anchor. "gitlab-runner" gives jobs
	// of kind gitlab, any other name generic (for example
	// "buildkite-agent"). Default ["gitlab-runner"].
	JobParents []string

	// ClockSkew is how far our clock may be from the issuer's: a token is
	// accepted up to ClockSkew after its exp, and refused when its nbf or
	// iat is more than ClockSkew ahead. Default 60s; at most MaxClockSkew.
	ClockSkew time.Duration

	// JWKSRefetchMin is the least time between two fetches of an issuer's
	// key set. A token signed with an unknown key triggers a fetch; within
	// this interval of the last fetch it is refused instead. Default 1m.
	JWKSRefetchMin time.Duration

	// DiscoveryRetry is how long after a failed discovery of an issuer the
	// next attempt may start. Until discovery succeeds, that issuer's
	// tokens are refused. Default 30s.
	DiscoveryRetry time.Duration

	// RetryUnverified is how long a job's unverified result is cached
	// before the next connection of the job tries again. Default 30s.
	RetryUnverified time.Duration

	// Timeout bounds one job's lookup: token request, discovery, key set
	// fetch and verification. Default 10s.
	Timeout time.Duration

	// HTTPClient carries token requests, discovery and key set fetches.
	// It is copied, not modified; the copies refuse redirects (token
	// requests) or non-https redirects (issuers) and use Timeout. Nil means
	// a client with Go's default transport.
	HTTPClient *http.Client

	// ProcRoot is where procfs is mounted. Default "/proc".
	ProcRoot string
}

// IssuerConfig is one accepted OIDC issuer.
type IssuerConfig struct {
	// URL is the issuer exactly as tokens name it in iss, https.
	URL string
	// Audience is the aud a token must hold. Default Config.GitHubAudience.
	Audience string
	// BoundClaims must hold in every accepted token, compared with the
	// flattened claim text; for example runner_environment = "self-hosted".
	BoundClaims map[string]string
	// Algorithms are the JWS algorithms accepted. Default RS256, ES256.
	Algorithms []string
}

// JobKey names a CI job by its anchor process. The start time makes pid
// reuse harmless: a new process under a reused pid is a different key.
type JobKey struct {
	PID   uint32 // the anchor process
	Start uint64 // the anchor's start, clock ticks after boot (/proc/PID/stat field 22)
	Kind  string // KindGitHub, KindGitLab, KindGeneric; "" when there is no job
}

// String returns "kind:pid@start", or "none".
func (k JobKey) String() string {
	if k.Kind == "" {
		return "none"
	}
	return fmt.Sprintf("%s:%d@%d", k.Kind, k.PID, k.Start)
}

// Result is what Resolve found out about a connecting process. Results share
// their maps with the cache and with other connections of the job: callers
// must not modify Identity.Claims or Hints.
type Result struct {
	// Identity is the flow's identity. At LevelOIDC, Claims are the
	// verified token's claims flattened to strings: a string is itself; a
	// number, boolean or null its JSON text; an array or object its compact
	// JSON. At LevelUnverified and LevelNone, Claims is nil, so no rule that
	// reads identity.* can match.
	Identity ruleset.Identity
	// Job is the job the process belongs to; zero when none was found.
	Job JobKey
	// Reason says why the level is not oidc, for logs, status and
	// recordings; empty at LevelOIDC.
	Reason string
	// Hints are CI variables from the job's environment (GITHUB_REPOSITORY,
	// CI_PROJECT_PATH, ...), keyed by variable name. They are unverified,
	// whatever the level, and are never identity.
	Hints map[string]string
	// Outcome names, in one word, how the resolution ended (one of the
	// Outcome constants), for metrics; Reason says it in full.
	Outcome string
}

// Resolution outcomes (Result.Outcome).
const (
	OutcomeVerified     = "verified"      // a token was verified: LevelOIDC
	OutcomeNoJob        = "no_job"        // no CI job ancestor
	OutcomeGone         = "process_gone"  // the connecting process exited first
	OutcomeProcError    = "proc_error"    // its /proc entries could not be read
	OutcomeEnvError     = "env_error"     // the job's environment could not be read
	OutcomeNoToken      = "no_token"      // the job carries no token (request) variables
	OutcomeTokenError   = "token_error"   // the token request failed
	OutcomeVerifyFailed = "verify_failed" // the token did not verify
	OutcomeAbandoned    = "abandoned"     // the caller's context ended first
	OutcomeClosed       = "closed"        // the resolver was closed
)

// hintVars are the environment variables copied into Result.Hints.
var hintVars = []string{
	"GITHUB_REPOSITORY", "GITHUB_REF", "GITHUB_SHA", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT",
	"GITHUB_WORKFLOW", "GITHUB_JOB", "GITHUB_ACTOR", "GITHUB_EVENT_NAME",
	"CI_PROJECT_PATH", "CI_COMMIT_REF_NAME", "CI_COMMIT_SHA", "CI_JOB_ID", "CI_PIPELINE_ID", "GITLAB_USER_LOGIN",
	"BUILDKITE_ORGANIZATION_SLUG", "BUILDKITE_PIPELINE_SLUG", "BUILDKITE_BRANCH", "BUILDKITE_BUILD_ID", "BUILDKITE_JOB_ID",
	"CIRCLE_PROJECT_USERNAME", "CIRCLE_PROJECT_REPONAME", "CIRCLE_BRANCH", "CIRCLE_WORKFLOW_ID",
	"JOB_NAME", "BUILD_NUMBER", "GIT_BRANCH",
}

// Resolver resolves connecting processes to job identities. It is safe for
// concurrent use. Lookups run on goroutines the Resolver owns, under the
// context given to New; Close cancels them and waits.
type Resolver struct {
	cfg          Config
	log          hclog.Logger
	issuers      map[string]*issuer
	tokenClient  *http.Client
	issuerClient *http.Client
	skew         time.Duration
	now          func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	jobs      map[JobKey]*entry
	lastSweep time.Time

	walks walkCache // connecting processes' ancestry walks
}

// entry is one job's cached lookup. res and until are written once, before
// done is closed.
type entry struct {
	done  chan struct{}
	res   Result
	until time.Time
}

// sweepEvery is how often the cache drops entries of ended jobs.
const sweepEvery = time.Minute

// New validates cfg, applies its defaults and returns a Resolver. It makes
// no network request: each issuer is discovered when its first token
// arrives (or on Warm), and a failed discovery is retried after
// DiscoveryRetry, so the daemon starts while an issuer is unreachable and
// its jobs stay unverified until it is back (fail closed). ctx bounds the
// Resolver's background lookups; log is named "identity".
func New(ctx context.Context, cfg Config, log hclog.Logger) (*Resolver, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	tc, ic := *base, *base
	tc.Timeout, ic.Timeout = cfg.Timeout, cfg.Timeout
	tc.CheckRedirect = func(*http.Request, []*http.Request) error { return errRedirect }
	ic.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("issuer redirect to non-https %s refused", req.URL.Redacted())
		}
		if len(via) >= 5 {
			return errors.New("issuer redirects more than 5 times")
		}
		return nil
	}
	r := &Resolver{
		cfg:          cfg,
		log:          log.Named("identity"),
		issuers:      make(map[string]*issuer, len(cfg.Issuers)),
		tokenClient:  &tc,
		issuerClient: &ic,
		skew:         cfg.ClockSkew,
		now:          time.Now,
		jobs:         make(map[JobKey]*entry),
	}
	for _, ic := range cfg.Issuers {
		r.issuers[ic.URL] = &issuer{
			cfg: ic, client: r.issuerClient, skew: cfg.ClockSkew,
			now: func() time.Time { return r.now() }, retry: cfg.DiscoveryRetry, minGap: cfg.JWKSRefetchMin,
		}
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	return r, nil
}

// setDefaults fills zero fields and rejects invalid ones.
func (c *Config) setDefaults() error {
	if c.GitHubAudience == "" {
		c.GitHubAudience = DefaultGitHubAudience
	}
	if len(c.TokenHostAllowlist) == 0 {
		c.TokenHostAllowlist = slices.Clone(DefaultTokenHostAllowlist)
	}
	for _, h := range c.TokenHostAllowlist {
		name := strings.TrimPrefix(h, "*.")
		if name == "" || strings.ContainsAny(name, "*/:@ ") {
			return fmt.Errorf("token host allowlist entry %q: want a host name or *.domain", h)
		}
	}
	if c.TokenVariable == "" {
		c.TokenVariable = DefaultTokenVariable
	}
	if len(c.JobParents) == 0 {
		c.JobParents = slices.Clone(DefaultJobParents)
	}
	switch {
	case c.ClockSkew == 0:
		c.ClockSkew = DefaultClockSkew
	case c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew:
		return fmt.Errorf("clock skew %s: want between 0 and %s", c.ClockSkew, MaxClockSkew)
	}
	for _, d := range []struct {
		p   *time.Duration
		def time.Duration
		n   string
	}{
		{&c.JWKSRefetchMin, DefaultJWKSRefetchMin, "key set refetch interval"},
		{&c.DiscoveryRetry, DefaultDiscoveryRetry, "discovery retry"},
		{&c.RetryUnverified, DefaultRetryUnverified, "unverified retry"},
		{&c.Timeout, DefaultTimeout, "timeout"},
	} {
		if *d.p < 0 {
			return fmt.Errorf("%s %s: negative", d.n, *d.p)
		}
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if len(c.Issuers) == 0 {
		c.Issuers = []IssuerConfig{{URL: GitHubIssuer}}
	}
	issuers := make([]IssuerConfig, len(c.Issuers))
	seen := make(map[string]bool)
	for i, ic := range c.Issuers {
		u, err := url.Parse(ic.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
			return fmt.Errorf("issuer %q: want an https URL", ic.URL)
		}
		if seen[ic.URL] {
			return fmt.Errorf("issuer %q: configured twice", ic.URL)
		}
		seen[ic.URL] = true
		if ic.Audience == "" {
			ic.Audience = c.GitHubAudience
		}
		if len(ic.Algorithms) == 0 {
			ic.Algorithms = slices.Clone(DefaultAlgorithms)
		}
		for _, a := range ic.Algorithms {
			if !slices.Contains(knownAlgorithms, a) {
				return fmt.Errorf("issuer %q: algorithm %q: want one of %v", ic.URL, a, knownAlgorithms)
			}
		}
		issuers[i] = ic
	}
	c.Issuers = issuers
	return nil
}

// Warm discovers every issuer not discovered yet and returns the failures
// joined. Failed issuers are retried on use; the daemon may call Warm at
// start to report them early.
func (r *Resolver) Warm(ctx context.Context) error {
	var errs []error
	for _, ic := range r.cfg.Issuers {
		if _, err := r.issuers[ic.URL].tokenVerifier(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close cancels running lookups and waits for them. Resolve after Close
// returns LevelNone.
func (r *Resolver) Close() {
	r.cancel()
	r.wg.Wait()
}

// Resolve returns the identity of the process pid. It reads the process's
// ancestry afresh on every call, so a cached job identity is reused only
// while its anchor (same pid, same start time) is an ancestor. The first
// connection of a job waits for the token lookup (bounded by
// Config.Timeout and ctx); later ones use the cached result. It never
// fails: whatever cannot be established lowers the level, and Reason says
// why.
func (r *Resolver) Resolve(ctx context.Context, pid uint32) Result {
	if r.ctx.Err() != nil {
		return none(OutcomeClosed, "identity resolver closed")
	}
	p, err := readStat(r.cfg.ProcRoot, pid)
	if errors.Is(err, errGone) {
		return none(OutcomeGone, "connecting process has exited")
	}
	if err != nil {
		return none(OutcomeProcError, fmt.Sprintf("cannot read the connecting process: %v", err))
	}
	// The same process connecting again: its walk is remembered (see
	// walkCache), and so, while it is valid, is its job's identity.
	now := r.now()
	if w, ok := r.walks.lookup(r.cfg.ProcRoot, p, now); ok {
		if w.job == (JobKey{}) {
			return none(OutcomeNoJob, "no CI job ancestor")
		}
		if res, ok := r.cachedJob(w.job, now); ok {
			return res
		}
	}
	chain, kind, err := findJob(r.cfg.ProcRoot, p, r.anchor)
	if err == nil {
		r.walks.remember(p, chain, kind, now)
	}
	if errors.Is(err, errGone) {
		return none(OutcomeGone, "connecting process has exited")
	}
	if err != nil {
		return none(OutcomeProcError, fmt.Sprintf("cannot read the connecting process: %v", err))
	}
	if chain == nil {
		return none(OutcomeNoJob, "no CI job ancestor")
	}
	i := len(chain) - 1
	return r.resolveChain(ctx, JobKey{PID: chain[i].pid, Start: chain[i].start, Kind: kind}, chain)
}

// ResolveContainer returns the identity of the process pid, which runs in
// a container whose processes are in the cgroup container (a path as
// /proc/PID/cgroup gives it) and below. Its job is anchored at the
// outermost ancestor still in the container: the container's init for its
// own processes, the exec'd process for `docker exec` (a GitHub job
// container's steps), so each gets the environment it was started with.
func (r *Resolver) ResolveContainer(ctx context.Context, pid uint32, container string) Result {
	if r.ctx.Err() != nil {
		return none(OutcomeClosed, "identity resolver closed")
	}
	chain, err := containerChain(r.cfg.ProcRoot, pid, container)
	if errors.Is(err, errGone) {
		return none(OutcomeGone, "connecting process has exited")
	}
	if err != nil {
		return none(OutcomeProcError, fmt.Sprintf("cannot read the connecting process: %v", err))
	}
	i := len(chain) - 1
	return r.resolveChain(ctx, JobKey{PID: chain[i].pid, Start: chain[i].start, Kind: KindContainer}, chain)
}

// resolveChain returns the job key's identity, from the cache or by a
// lookup along chain (the connecting process up to the anchor).
func (r *Resolver) resolveChain(ctx context.Context, key JobKey, chain []proc) Result {
	now := r.now()
	r.mu.Lock()
	e := r.jobs[key]
	if e != nil && e.expired(now) {
		e = nil
	}
	if e == nil {
		e = &entry{done: make(chan struct{})}
		r.jobs[key] = e
		r.wg.Add(1)
		go r.fill(key, chain, e)
	}
	if now.Sub(r.lastSweep) >= sweepEvery {
		r.lastSweep = now
		r.sweep(now)
	}
	r.mu.Unlock()

	select {
	case <-e.done:
		return e.res
	case <-ctx.Done():
		return Result{
			Identity: ruleset.Identity{Level: ruleset.LevelUnverified},
			Job:      key,
			Reason:   fmt.Sprintf("identity lookup abandoned: %v", ctx.Err()),
			Outcome:  OutcomeAbandoned,
		}
	}
}

// cachedJob returns the job's identity when its lookup has finished and
// is still valid at now.
func (r *Resolver) cachedJob(key JobKey, now time.Time) (Result, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.jobs[key]
	if e == nil || !isDone(e) || e.expired(now) {
		return Result{}, false
	}
	return e.res, true
}

// expired reports whether a finished entry is no longer valid. An entry
// still being filled is never expired.
func (e *entry) expired(now time.Time) bool {
	select {
	case <-e.done:
		return !now.Before(e.until)
	default:
		return false
	}
}

// sweep drops finished entries whose anchor has ended or whose result has
// expired. r.mu is held.
func (r *Resolver) sweep(now time.Time) {
	for k, e := range r.jobs {
		if e.expired(now) || (isDone(e) && !alive(r.cfg.ProcRoot, k.PID, k.Start)) {
			delete(r.jobs, k)
		}
	}
}

func isDone(e *entry) bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// anchor returns the job kind when p is a job's anchor, else "": p is
// named Runner.Worker (GitHub Actions' per-job process), or p's parent is
// a JobParents runner and p is not one itself (the shell executor's job
// shell; with GitLab's shell executor that is the shell, or the su/sudo
// that starts it, one per job). Nearest wins: a job process named
// Runner.Worker only anchors its own subtree, and still needs the job's
// real token to be verified.
func (r *Resolver) anchor(p, parent proc, hasParent bool) string {
	if p.comm == runnerWorker {
		return KindGitHub
	}
	if hasParent && slices.Contains(r.cfg.JobParents, parent.comm) && !slices.Contains(r.cfg.JobParents, p.comm) {
		if parent.comm == "gitlab-runner" {
			return KindGitLab
		}
		return KindGeneric
	}
	return ""
}

// fill looks up one job's identity and publishes it in e.
func (r *Resolver) fill(key JobKey, path []proc, e *entry) {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.Timeout)
	defer cancel()
	began := time.Now()
	res, until := r.lookup(ctx, key, path)
	if res.Identity.Level == ruleset.LevelOIDC {
		r.log.Info("job identity verified", "job", key.String(), "level", res.Identity.Level,
			"issuer", res.Identity.Claims["iss"], "subject", res.Identity.Claims["sub"],
			"expires", until.UTC().Format(time.RFC3339), "elapsed", time.Since(began))
	} else {
		r.log.Warn("job identity unverified", "job", key.String(), "level", res.Identity.Level,
			"reason", res.Reason, "elapsed", time.Since(began))
	}
	r.mu.Lock()
	e.res, e.until = res, until
	close(e.done)
	r.mu.Unlock()
}

// lookup reads the job's environment along path (the connecting process up
// to the anchor), gets its token and verifies it. It returns the result
// and until when it may be reused. The environment is taken from the
// process nearest the anchor that holds the token variable: the anchor
// itself, else the process below it (where GitHub's runner puts
// ACTIONS_ID_TOKEN_* for a step), and so on down to the connecting
// process.
func (r *Resolver) lookup(ctx context.Context, key JobKey, path []proc) (Result, time.Time) {
	res := Result{Identity: ruleset.Identity{Level: ruleset.LevelUnverified}, Job: key}
	retry := r.now().Add(r.cfg.RetryUnverified)
	want := r.cfg.TokenVariable
	if key.Kind == KindGitHub {
		want = envRequestURL
	}
	var tokenEnv, hintEnv map[string]string
	var envErr error
	for j := len(path) - 1; j >= 0 && (tokenEnv == nil || hintEnv == nil); j-- {
		env, err := readEnviron(r.cfg.ProcRoot, path[j].pid)
		if err != nil {
			if envErr == nil && !errors.Is(err, errGone) {
				envErr = err
			}
			continue
		}
		if tokenEnv == nil && key.Kind == KindContainer && env[envRequestURL] != "" {
			// A GitHub job container's step: the runner passes the
			// request variables to what it runs there.
			want, tokenEnv = envRequestURL, env
		}
		if tokenEnv == nil && env[want] != "" {
			tokenEnv = env
		}
		if hintEnv == nil && slices.ContainsFunc(hintVars, func(v string) bool { return env[v] != "" }) {
			hintEnv = env
		}
	}
	if hintEnv != nil {
		res.Hints = make(map[string]string)
		for _, v := range hintVars {
			if s := hintEnv[v]; s != "" {
				res.Hints[v] = s
			}
		}
	}
	if tokenEnv == nil {
		res.Outcome = OutcomeNoToken
		switch {
		case envErr != nil:
			res.Outcome = OutcomeEnvError
			res.Reason = fmt.Sprintf("cannot read the job's environment (the daemon needs root or CAP_SYS_PTRACE): %v", envErr)
		case key.Kind == KindGitHub:
			res.Reason = "job lacks " + envRequestURL + ": the workflow needs permissions: id-token: write"
		case key.Kind == KindGitLab:
			res.Reason = fmt.Sprintf("job lacks %s: the job needs id_tokens: %s: aud: %s", want, want, r.cfg.GitHubAudience)
		case key.Kind == KindContainer:
			res.Reason = fmt.Sprintf("the container's environment has no job token: neither %s (a GitHub job's step with id-token: write) nor %s (an ID token, as GitLab's id_tokens gives)", envRequestURL, want)
		default:
			res.Reason = fmt.Sprintf("job lacks %s: the job's environment needs an ID token in %s", want, want)
		}
		return res, retry
	}
	raw := tokenEnv[want]
	if want == envRequestURL {
		bearer := tokenEnv[envRequestToken]
		if bearer == "" {
			res.Reason, res.Outcome = "job lacks "+envRequestToken+": the workflow needs permissions: id-token: write", OutcomeNoToken
			return res, retry
		}
		var err error
		if raw, err = r.requestGitHubToken(ctx, raw, bearer); err != nil {
			res.Reason, res.Outcome = fmt.Sprintf("cannot get the job's ID token: %v", err), OutcomeTokenError
			return res, retry
		}
	}
	v, err := r.verify(ctx, raw)
	if err != nil {
		res.Reason, res.Outcome = err.Error(), OutcomeVerifyFailed
		return res, retry
	}
	res.Identity = ruleset.Identity{Level: ruleset.LevelOIDC, Claims: v.claims}
	res.Outcome = OutcomeVerified
	return res, v.expiry
}

// none is a Result at LevelNone.
func none(outcome, reason string) Result {
	return Result{Identity: ruleset.Identity{Level: ruleset.LevelNone}, Reason: reason, Outcome: outcome}
}
