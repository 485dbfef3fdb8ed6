package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// These tests need no privileges: they read /proc of processes they started
// themselves. All network traffic is to 127.0.0.1.

// syncBuffer is a log sink safe for the Resolver's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newResolver returns a Resolver trusting ti, with edit applied to its
// config, and the buffer its log goes to.
func newResolver(t testing.TB, ti *testIssuer, edit func(*Config)) (*Resolver, *syncBuffer) {
	t.Helper()
	cfg := Config{
		Issuers:            []IssuerConfig{{URL: ti.srv.URL, BoundClaims: map[string]string{"runner_environment": "self-hosted"}}},
		TokenHostAllowlist: []string{"127.0.0.1"},
		HTTPClient:         ti.srv.Client(),
	}
	if edit != nil {
		edit(&cfg)
	}
	buf := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Trace, Output: buf})
	r, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, buf
}

// githubEnv is a job environment with the token request variables.
func githubEnv(ti *testIssuer, repo string) []string {
	return []string{
		"ACTIONS_ID_TOKEN_REQUEST_URL=" + ti.requestURL(),
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + ti.requestToken,
		"GITHUB_REPOSITORY=" + repo,
		"GITHUB_REF=refs/heads/main",
	}
}

func resolve(t testing.TB, r *Resolver, pid uint32) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return r.Resolve(ctx, pid)
}

func wantLevel(t *testing.T, res Result, level, reason string) {
	t.Helper()
	if res.Identity.Level != level {
		t.Fatalf("level %q (reason %q), want %q", res.Identity.Level, res.Reason, level)
	}
	if !strings.Contains(res.Reason, reason) {
		t.Fatalf("reason %q, want it to contain %q", res.Reason, reason)
	}
	if level != ruleset.LevelOIDC && len(res.Identity.Claims) != 0 {
		t.Fatalf("level %s with claims %v: identity.* must not match", level, res.Identity.Claims)
	}
}

func TestGitHubJobVerified(t *testing.T) {
	ti := newTestIssuer(t)
	r, logs := newResolver(t, ti, nil)
	j := startGitHubJob(t, githubEnv(ti, "acme/api")...)

	res := resolve(t, r, j.child)
	wantLevel(t, res, ruleset.LevelOIDC, "")
	if res.Reason != "" {
		t.Errorf("reason %q at level oidc", res.Reason)
	}
	for k, want := range map[string]string{
		"repository": "acme/api", "ref": "refs/heads/main", "run_id": "9876543210", "actor": "octocat",
		"iss": ti.srv.URL, "aud": "sluice", "runner_environment": "self-hosted",
	} {
		if got := res.Identity.Claims[k]; got != want {
			t.Errorf("claim %s = %q, want %q", k, got, want)
		}
	}
	if res.Job.Kind != KindGitHub || res.Job.PID != uint32(j.runner.Process.Pid) || res.Job.Start == 0 {
		t.Errorf("job %+v, want github anchored at Runner.Worker pid %d", res.Job, j.runner.Process.Pid)
	}
	if got := ti.lastAudience.Load(); got != "sluice" {
		t.Errorf("token requested for audience %v, want sluice", got)
	}
	if res.Hints["GITHUB_REPOSITORY"] != "acme/api" {
		t.Errorf("hints %v", res.Hints)
	}
	// Later connections of the job, from the child or the anchor, use the cache.
	for _, pid := range []uint32{j.child, uint32(j.runner.Process.Pid)} {
		if again := resolve(t, r, pid); again.Identity.Level != ruleset.LevelOIDC || again.Job != res.Job {
			t.Errorf("pid %d: %+v", pid, again)
		}
	}
	if n := ti.tokenIssued.Load(); n != 1 {
		t.Errorf("%d token requests for one job, want 1", n)
	}
	for _, secret := range []string{ti.requestToken, "eyJ"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds a credential (%q...):\n%s", secret[:3], logs)
		}
		for k, v := range res.Identity.Claims {
			if strings.Contains(v, secret) {
				t.Errorf("claim %s holds a credential", k)
			}
		}
	}
	if !strings.Contains(logs.String(), "job identity verified") {
		t.Errorf("log lacks the verification:\n%s", logs)
	}
}

func TestGitHubJobUnverified(t *testing.T) {
	ti := newTestIssuer(t)
	cases := []struct {
		name   string
		env    func() []string
		setup  func()
		edit   func(*Config)
		reason string
	}{{
		name:   "no id-token permission",
		env:    func() []string { return []string{"GITHUB_REPOSITORY=acme/api"} },
		reason: "job lacks ACTIONS_ID_TOKEN_REQUEST_URL: the workflow needs permissions: id-token: write",
	}, {
		name:   "expired token",
		setup:  func() { ti.setClaims(func(c map[string]any) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }) },
		reason: "token expired at",
	}, {
		name:   "wrong audience",
		setup:  func() { ti.setClaims(func(c map[string]any) { c["aud"] = "someone-else" }) },
		reason: `token audience mismatch: token is for ["someone-else"], this host accepts "sluice"`,
	}, {
		name:   "bound claim mismatch",
		setup:  func() { ti.setClaims(func(c map[string]any) { c["runner_environment"] = "github-hosted" }) },
		reason: `token claim runner_environment is "github-hosted", bound to "self-hosted"`,
	}, {
		name:   "bound claim missing",
		setup:  func() { ti.setClaims(func(c map[string]any) { delete(c, "runner_environment") }) },
		reason: "token lacks bound claim runner_environment",
	}, {
		name:   "issued in the future",
		setup:  func() { ti.setClaims(func(c map[string]any) { c["iat"] = time.Now().Add(10 * time.Minute).Unix() }) },
		reason: "token iat is",
	}, {
		name:   "not before beyond the skew",
		setup:  func() { ti.setClaims(func(c map[string]any) { c["nbf"] = time.Now().Add(3 * time.Minute).Unix() }) },
		reason: "token nbf is",
	}, {
		name:   "unconfigured issuer",
		setup:  func() { ti.setClaims(func(c map[string]any) { c["iss"] = "https://127.0.0.1:1/other" }) },
		reason: `token issuer "https://127.0.0.1:1/other" is not a configured issuer`,
	}, {
		name:   "algorithm not pinned",
		edit:   func(c *Config) { c.Issuers[0].Algorithms = []string{"ES256"} },
		reason: "token refused",
	}, {
		name: "wrong request token",
		env: func() []string {
			return []string{"ACTIONS_ID_TOKEN_REQUEST_URL=" + ti.requestURL(), "ACTIONS_ID_TOKEN_REQUEST_TOKEN=guess"}
		},
		reason: "answered 401 Unauthorized",
	}, {
		name: "no request token",
		env: func() []string {
			return []string{"ACTIONS_ID_TOKEN_REQUEST_URL=" + ti.requestURL()}
		},
		reason: "job lacks ACTIONS_ID_TOKEN_REQUEST_TOKEN",
	}, {
		name: "redirect",
		env: func() []string {
			return []string{"ACTIONS_ID_TOKEN_REQUEST_URL=" + ti.srv.URL + "/redirect?api-version=2.0", "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + ti.requestToken}
		},
		reason: "token endpoint redirects are refused",
	}, {
		name: "host not allowlisted",
		env: func() []string {
			u := strings.Replace(ti.requestURL(), "127.0.0.1", "localhost", 1)
			return []string{"ACTIONS_ID_TOKEN_REQUEST_URL=" + u, "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + ti.requestToken}
		},
		reason: `host "localhost" is not on the token host allowlist`,
	}, {
		name: "plain http",
		env: func() []string {
			u := strings.Replace(ti.requestURL(), "https:", "http:", 1)
			return []string{"ACTIONS_ID_TOKEN_REQUEST_URL=" + u, "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + ti.requestToken}
		},
		reason: "ACTIONS_ID_TOKEN_REQUEST_URL is not https",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ti.setClaims(func(map[string]any) {})
			if tc.setup != nil {
				tc.setup()
			}
			r, logs := newResolver(t, ti, tc.edit)
			env := githubEnv(ti, "acme/api")
			if tc.env != nil {
				env = append(tc.env(), "GITHUB_REPOSITORY=acme/api")
			}
			j := startGitHubJob(t, env...)
			res := resolve(t, r, j.child)
			t.Logf("reason: %s", res.Reason)
			wantLevel(t, res, ruleset.LevelUnverified, tc.reason)
			if res.Job.Kind != KindGitHub {
				t.Errorf("job %+v", res.Job)
			}
			if res.Hints["GITHUB_REPOSITORY"] != "acme/api" {
				t.Errorf("hints %v, want GITHUB_REPOSITORY", res.Hints)
			}
			if !strings.Contains(logs.String(), "job identity unverified") || strings.Contains(logs.String(), ti.requestToken) {
				t.Errorf("log:\n%s", logs)
			}
		})
	}
}

// A job that claims to be acme/api in its environment but whose token says
// otherwise is the token's repository; the environment is only a hint.
func TestGitHubForgedRepository(t *testing.T) {
	ti := newTestIssuer(t)
	ti.mu.Lock()
	ti.claims = ti.githubClaims("evil/fork")
	ti.mu.Unlock()
	r, _ := newResolver(t, ti, nil)
	j := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	res := resolve(t, r, j.child)
	wantLevel(t, res, ruleset.LevelOIDC, "")
	if got := res.Identity.Claims["repository"]; got != "evil/fork" {
		t.Errorf("identity.repository = %q, want the token's evil/fork", got)
	}
	if res.Hints["GITHUB_REPOSITORY"] != "acme/api" {
		t.Errorf("hints %v", res.Hints)
	}

	// Without a token the forged variable stays a hint: unverified, no claims.
	j2 := startGitHubJob(t, "GITHUB_REPOSITORY=acme/api")
	res = resolve(t, r, j2.child)
	wantLevel(t, res, ruleset.LevelUnverified, "id-token: write")
	if res.Hints["GITHUB_REPOSITORY"] != "acme/api" || res.Identity.Claims["repository"] != "" {
		t.Errorf("%+v", res)
	}
}

func TestKeyRotation(t *testing.T) {
	ti := newTestIssuer(t)
	r, _ := newResolver(t, ti, func(c *Config) { c.JWKSRefetchMin = time.Millisecond })
	first := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	wantLevel(t, resolve(t, r, first.child), ruleset.LevelOIDC, "")

	ti.rotate(t)
	time.Sleep(5 * time.Millisecond)
	second := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	wantLevel(t, resolve(t, r, second.child), ruleset.LevelOIDC, "")
	if n := ti.jwksFetches.Load(); n != 2 {
		t.Errorf("%d key set fetches, want 2 (first use, rotation)", n)
	}
}

func TestKeyRefetchRateLimited(t *testing.T) {
	ti := newTestIssuer(t)
	r, _ := newResolver(t, ti, func(c *Config) { c.JWKSRefetchMin = time.Hour })
	first := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	wantLevel(t, resolve(t, r, first.child), ruleset.LevelOIDC, "")

	// Tokens signed with keys the issuer never published: each would be a
	// fetch with go-oidc's own key set.
	for range 3 {
		ti.rotate(t)
		j := startGitHubJob(t, githubEnv(ti, "acme/api")...)
		wantLevel(t, resolve(t, r, j.child), ruleset.LevelUnverified, "fetched too recently")
	}
	if n := ti.jwksFetches.Load(); n != 1 {
		t.Errorf("%d key set fetches, want 1", n)
	}
}

func TestSingleFlight(t *testing.T) {
	ti := newTestIssuer(t)
	r, _ := newResolver(t, ti, nil)
	j := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	var wg sync.WaitGroup
	results := make([]Result, 16)
	for i := range results {
		wg.Go(func() { results[i] = resolve(t, r, j.child) })
	}
	wg.Wait()
	for i, res := range results {
		if res.Identity.Level != ruleset.LevelOIDC {
			t.Errorf("connection %d: %+v", i, res)
		}
	}
	if n := ti.tokenIssued.Load(); n != 1 {
		t.Errorf("%d token requests for 16 concurrent connections of one job, want 1", n)
	}
}

func TestNoJob(t *testing.T) {
	ti := newTestIssuer(t)
	r, _ := newResolver(t, ti, nil)
	// An orphan: its shell exits at once, so sleep is reparented away
	// from everything this test (or a CI runner above it) started.
	j := startTree(t, "sh", nil, "sleep 300 & echo $!")
	j.runner.Wait()
	wantLevel(t, resolve(t, r, j.child), ruleset.LevelNone, "no CI job ancestor")

	wantLevel(t, resolve(t, r, 0x7ffffffe), ruleset.LevelNone, "connecting process has exited")
}

// A process that outlives its job has no identity, and the job's cache
// entry goes.
func TestJobEnded(t *testing.T) {
	ti := newTestIssuer(t)
	r, _ := newResolver(t, ti, nil)
	j := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	wantLevel(t, resolve(t, r, j.child), ruleset.LevelOIDC, "")

	j.end(t)
	wantLevel(t, resolve(t, r, j.child), ruleset.LevelNone, "no CI job ancestor")
	r.mu.Lock()
	r.sweep(r.now())
	n := len(r.jobs)
	r.mu.Unlock()
	if n != 0 {
		t.Errorf("%d cache entries after the job ended, want 0", n)
	}
}

// Pid reuse, which real processes cannot be made to do on demand, on a
// procfs copy: when the anchor's pid comes back as a new Runner.Worker, the
// new process is a new job and inherits nothing.
func TestPIDReuse(t *testing.T) {
	ti := newTestIssuer(t)
	root := t.TempDir()
	writeProc := func(pid, ppid int, comm string, start int, env []string) {
		dir := filepath.Join(root, strconv.Itoa(pid))
		os.MkdirAll(dir, 0o755)
		stat := strconv.Itoa(pid) + " (" + comm + ") S " + strconv.Itoa(ppid) + strings.Repeat(" 0", 17) + " " + strconv.Itoa(start) + " 0 0\n"
		os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644)
		os.WriteFile(filepath.Join(dir, "environ"), []byte(strings.Join(env, "\x00")+"\x00"), 0o644)
	}
	writeProc(1, 0, "init", 1, nil)
	writeProc(100, 1, "Runner.Worker", 500, githubEnv(ti, "acme/api"))
	writeProc(101, 100, "psql", 600, nil)
	r, _ := newResolver(t, ti, func(c *Config) { c.ProcRoot = root })
	first := resolve(t, r, 101)
	wantLevel(t, first, ruleset.LevelOIDC, "")

	// Job over; pid 100 reused by another job without id-token permission,
	// and pid 101 by its psql.
	writeProc(100, 1, "Runner.Worker", 900, []string{"GITHUB_REPOSITORY=acme/api"})
	writeProc(101, 100, "psql", 950, nil)
	second := resolve(t, r, 101)
	wantLevel(t, second, ruleset.LevelUnverified, "id-token: write")
	if second.Job == first.Job || second.Job.Start != 900 {
		t.Errorf("jobs %v then %v: a reused pid must be a new job", first.Job, second.Job)
	}

	// A parent younger than its child is a reused pid, not the parent.
	writeProc(101, 100, "psql", 800, nil)
	wantLevel(t, resolve(t, r, 101), ruleset.LevelNone, "no CI job ancestor")
}

func TestGitLabJob(t *testing.T) {
	ti := newTestIssuer(t)
	r, _ := newResolver(t, ti, func(c *Config) { c.Issuers[0].BoundClaims = nil })
	claims := map[string]any{
		"iss": ti.srv.URL, "aud": "sluice", "sub": "project_path:acme/api:ref_type:branch:ref:main",
		"project_path": "acme/api", "ref": "main", "job_id": "4242", "namespace_path": "acme",
		"exp": time.Now().Add(5 * time.Minute).Unix(), "iat": time.Now().Unix(),
		"groups": []string{"a", "b"},
	}
	j := startGitLabJob(t, "SLUICE_ID_TOKEN="+ti.sign(t, claims), "CI_PROJECT_PATH=acme/api")
	res := resolve(t, r, j.child)
	wantLevel(t, res, ruleset.LevelOIDC, "")
	if res.Job.Kind != KindGitLab {
		t.Errorf("job %+v, want gitlab", res.Job)
	}
	if res.Identity.Claims["project_path"] != "acme/api" || res.Identity.Claims["groups"] != `["a","b"]` {
		t.Errorf("claims %v", res.Identity.Claims)
	}

	bare := startGitLabJob(t, "CI_PROJECT_PATH=acme/api")
	res = resolve(t, r, bare.child)
	wantLevel(t, res, ruleset.LevelUnverified, "job lacks SLUICE_ID_TOKEN: the job needs id_tokens: SLUICE_ID_TOKEN: aud: sluice")
	if res.Hints["CI_PROJECT_PATH"] != "acme/api" {
		t.Errorf("hints %v", res.Hints)
	}
}

// An issuer that is down at start costs no start-up failure; its jobs are
// unverified until it answers.
func TestIssuerUnavailable(t *testing.T) {
	ti := newTestIssuer(t)
	down := newTestIssuer(t)
	downURL := down.srv.URL
	down.srv.Close()
	r, _ := newResolver(t, ti, func(c *Config) {
		c.Issuers = []IssuerConfig{{URL: downURL}}
		c.Timeout = 5 * time.Second
	})
	if err := r.Warm(context.Background()); err == nil {
		t.Error("Warm: no error for an unreachable issuer")
	}
	ti.setClaims(func(c map[string]any) { c["iss"] = downURL })
	j := startGitHubJob(t, githubEnv(ti, "acme/api")...)
	wantLevel(t, resolve(t, r, j.child), ruleset.LevelUnverified, "issuer unavailable")
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ClockSkew: 6 * time.Minute}, "clock skew"},
		{Config{ClockSkew: -time.Second}, "clock skew"},
		{Config{Issuers: []IssuerConfig{{URL: "http://issuer.example"}}}, "want an https URL"},
		{Config{Issuers: []IssuerConfig{{URL: GitHubIssuer, Algorithms: []string{"none"}}}}, `algorithm "none"`},
		{Config{Issuers: []IssuerConfig{{URL: GitHubIssuer, Algorithms: []string{"HS256"}}}}, `algorithm "HS256"`},
		{Config{Issuers: []IssuerConfig{{URL: GitHubIssuer}, {URL: GitHubIssuer}}}, "configured twice"},
		{Config{TokenHostAllowlist: []string{"https://x"}}, "token host allowlist"},
		{Config{JWKSRefetchMin: -1}, "negative"},
	} {
		if _, err := New(context.Background(), tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
	r, err := New(context.Background(), Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := r.cfg
	if len(c.Issuers) != 1 || c.Issuers[0].URL != GitHubIssuer || c.Issuers[0].Audience != "sluice" ||
		strings.Join(c.Issuers[0].Algorithms, ",") != "RS256,ES256" || c.ClockSkew != time.Minute ||
		c.TokenVariable != "SLUICE_ID_TOKEN" || c.ProcRoot != "/proc" {
		t.Errorf("defaults %+v", c)
	}
}

func TestHostAllowed(t *testing.T) {
	allow := DefaultTokenHostAllowlist
	for host, want := range map[string]bool{
		"token.actions.githubusercontent.com":              true,
		"pipelinesghubeus6.actions.githubusercontent.com":  true,
		"PIPELINES.actions.githubusercontent.com.":         true,
		"actions.githubusercontent.com":                    false,
		"evilactions.githubusercontent.com":                false,
		"token.actions.githubusercontent.com.evil.example": false,
		"githubusercontent.com":                            false,
	} {
		if got := hostAllowed(allow, host); got != want {
			t.Errorf("hostAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (a) b (c)) S 17" + strings.Repeat(" 0", 17) + " 123456 0 0\n"
	p, err := parseStat(4242, []byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if p.comm != "a) b (c)" || p.ppid != 17 || p.start != 123456 {
		t.Errorf("%+v", p)
	}
	if _, err := parseStat(1, []byte("1 (x) S 0 1")); err == nil {
		t.Error("short stat parsed")
	}
	self, err := readStat("/proc", uint32(os.Getpid()))
	if err != nil || int(self.ppid) != os.Getppid() || self.start == 0 {
		t.Errorf("own stat %+v, %v", self, err)
	}
}

func TestFlatten(t *testing.T) {
	in := map[string]json.RawMessage{
		"s": json.RawMessage(`"x"`), "n": json.RawMessage(`12345678901234567890`), "b": json.RawMessage(`true`),
		"a": json.RawMessage(`[ "a", 1 ]`), "o": json.RawMessage(`{"k": "v"}`), "z": json.RawMessage(`null`),
	}
	want := map[string]string{"s": "x", "n": "12345678901234567890", "b": "true", "a": `["a",1]`, "o": `{"k":"v"}`, "z": "null"}
	got := flatten(in)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
}

// ES256 keys verify when pinned; the key set skips what it cannot use.
func TestES256(t *testing.T) {
	ti := newTestIssuer(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ks := &keySet{algs: []jose.SignatureAlgorithm{jose.ES256}, now: time.Now,
		keys: []jose.JSONWebKey{{Key: &ec.PublicKey, KeyID: "ec", Algorithm: "ES256", Use: "sig"}}}
	payload, _ := json.Marshal(map[string]any{"iss": ti.srv.URL})
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ec, KeyID: "ec"}}, nil)
	sig, _ := s.Sign(payload)
	raw, _ := sig.CompactSerialize()
	if _, err := ks.VerifySignature(context.Background(), raw); err != nil {
		t.Errorf("ES256: %v", err)
	}
	rs := signWith(t, ti.keys[0], jose.RS256, map[string]any{"iss": ti.srv.URL})
	if _, err := ks.VerifySignature(context.Background(), rs); err == nil {
		t.Error("RS256 token accepted by a key set pinned to ES256")
	}
}
