package identity

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// testIssuer is a real OIDC issuer on 127.0.0.1 over TLS: a discovery
// document, a JWKS that can rotate, and a token endpoint shaped like GitHub
// Actions' (GET with "Authorization: bearer <request token>" and an
// audience parameter, answering {"value": "<jwt>"}).
type testIssuer struct {
	srv          *httptest.Server
	requestToken string // the bearer the token endpoint requires

	mu     sync.Mutex
	keys   []*testKey // served in the JWKS; the first one signs
	claims func(aud string) map[string]any

	jwksFetches  atomic.Int64
	tokenIssued  atomic.Int64
	lastAudience atomic.Value // string
}

type testKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newTestKey(t testing.TB) *testKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &testKey{kid: fmt.Sprintf("key-%d", time.Now().UnixNano()), priv: priv}
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	ti := &testIssuer{requestToken: "request-token-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	ti.keys = []*testKey{newTestKey(t)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                ti.srv.URL,
			"jwks_uri":                              ti.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		ti.jwksFetches.Add(1)
		ti.mu.Lock()
		var set jose.JSONWebKeySet
		for _, k := range ti.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "RS256", Use: "sig"})
		}
		ti.mu.Unlock()
		json.NewEncoder(w).Encode(set)
	})
	mux.HandleFunc("GET /_apis/idtoken", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer "+ti.requestToken {
			http.Error(w, "bad request token", http.StatusUnauthorized)
			return
		}
		aud := r.URL.Query().Get("audience")
		if aud == "" || r.URL.Query().Get("api-version") != "2.0" {
			http.Error(w, "missing audience or api-version", http.StatusBadRequest)
			return
		}
		ti.lastAudience.Store(aud)
		ti.tokenIssued.Add(1)
		ti.mu.Lock()
		claims := ti.claims
		ti.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]string{"value": ti.sign(t, claims(aud))})
	})
	mux.HandleFunc("GET /redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/_apis/idtoken?"+r.URL.RawQuery, http.StatusFound)
	})
	ti.srv = httptest.NewUnstartedServer(mux)
	ti.srv.StartTLS() // listens on 127.0.0.1
	t.Cleanup(ti.srv.Close)
	ti.claims = ti.githubClaims("acme/api")
	return ti
}

// requestURL is the job's ACTIONS_ID_TOKEN_REQUEST_URL.
func (ti *testIssuer) requestURL() string { return ti.srv.URL + "/_apis/idtoken?api-version=2.0" }

// githubClaims returns claims shaped like GitHub Actions' for repo, with
// the audience the job asked for.
func (ti *testIssuer) githubClaims(repo string) func(aud string) map[string]any {
	return func(aud string) map[string]any {
		now := time.Now()
		return map[string]any{
			"iss":                ti.srv.URL,
			"aud":                aud,
			"sub":                "repo:" + repo + ":ref:refs/heads/main",
			"repository":         repo,
			"repository_owner":   strings.Split(repo, "/")[0],
			"ref":                "refs/heads/main",
			"run_id":             "9876543210",
			"run_attempt":        "1",
			"actor":              "octocat",
			"runner_environment": "self-hosted",
			"job_workflow_ref":   repo + "/.github/workflows/ci.yml@refs/heads/main",
			"nbf":                now.Add(-5 * time.Second).Unix(),
			"iat":                now.Add(-5 * time.Second).Unix(),
			"exp":                now.Add(5 * time.Minute).Unix(),
		}
	}
}

// setClaims replaces the token endpoint's claims; edit may change them.
func (ti *testIssuer) setClaims(edit func(c map[string]any)) {
	base := ti.githubClaims("acme/api")
	ti.mu.Lock()
	ti.claims = func(aud string) map[string]any {
		c := base(aud)
		edit(c)
		return c
	}
	ti.mu.Unlock()
}

// rotate replaces the signing key; the old key leaves the JWKS.
func (ti *testIssuer) rotate(t testing.TB) {
	k := newTestKey(t)
	ti.mu.Lock()
	ti.keys = []*testKey{k}
	ti.mu.Unlock()
}

// sign returns claims as a compact RS256 JWT signed with the current key.
func (ti *testIssuer) sign(t testing.TB, claims map[string]any) string {
	ti.mu.Lock()
	k := ti.keys[0]
	ti.mu.Unlock()
	return signWith(t, k, jose.RS256, claims)
}

func signWith(t testing.TB, k *testKey, alg jose.SignatureAlgorithm, claims map[string]any) string {
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Error(err)
		return ""
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Error(err)
		return ""
	}
	sig, err := s.Sign(payload)
	if err != nil {
		t.Error(err)
		return ""
	}
	out, err := sig.CompactSerialize()
	if err != nil {
		t.Error(err)
	}
	return out
}

// job is a real process tree: a copy of /bin/sh named like a runner
// process, with the given environment, running a child sleep. The tree is
// in its own process group and is killed at cleanup.
type job struct {
	runner *exec.Cmd
	child  uint32 // the connecting process, a descendant of runner
}

// startTree runs a copy of /bin/sh named name with env and script; the
// script must print the connecting process's pid as its first line.
func startTree(t testing.TB, name string, env []string, script string) *job {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, name)
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-c", script)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pgid, syscall.SIGKILL)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("read child pid: %v", err)
	}
	pid, err := strconv.ParseUint(strings.TrimSpace(line), 10, 32)
	if err != nil {
		t.Fatalf("child pid %q: %v", line, err)
	}
	// Until it has exec'd, the child is a copy of the runner process, named
	// like it; a real connecting process is past exec by the time it
	// connects.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		p, err := readStat("/proc", uint32(pid))
		if err != nil {
			t.Fatalf("child %d: %v", pid, err)
		}
		if p.comm == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d still named %q", pid, p.comm)
		}
	}
	return &job{runner: cmd, child: uint32(pid)}
}

// startGitHubJob starts Runner.Worker carrying env, with a sleep below it.
func startGitHubJob(t testing.TB, env ...string) *job {
	t.Helper()
	return startTree(t, "Runner.Worker", env, "sleep 300 & echo $!; wait")
}

// startGitLabJob starts gitlab-runner with a job shell (sh) below it that
// carries env and runs a sleep.
func startGitLabJob(t testing.TB, env ...string) *job {
	t.Helper()
	return startTree(t, "gitlab-runner", env, `sh -c 'sleep 300 & echo $!; wait' & wait`)
}

// end kills the runner process only; its child is reparented and lives on.
func (j *job) end(t testing.TB) {
	t.Helper()
	j.runner.Process.Kill()
	j.runner.Wait()
}
