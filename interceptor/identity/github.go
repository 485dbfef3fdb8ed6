package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// GitHub Actions puts these in a job step's environment when the workflow
// grants `permissions: id-token: write`.
const (
	envRequestURL   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	envRequestToken = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// maxTokenResponse bounds the token endpoint's answer.
const maxTokenResponse = 64 << 10

// errRedirect refuses every redirect from a token endpoint: the request
// carries the job's bearer token, and a redirect could hand it elsewhere.
var errRedirect = errors.New("token endpoint redirects are refused")

// hostAllowed reports whether host matches an allowlist entry: an exact
// host name, or "*.suffix", which matches any name ending in ".suffix".
// Comparison ignores case.
func hostAllowed(allow []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, a := range allow {
		a = strings.ToLower(a)
		if suffix, ok := strings.CutPrefix(a, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == a {
			return true
		}
	}
	return false
}

// requestGitHubToken asks the job's token service for an ID token for
// audience. It never logs, and never puts into an error, the request token
// or the returned JWT.
func (r *Resolver) requestGitHubToken(ctx context.Context, rawURL, bearer string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("%s is not a URL", envRequestURL)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("%s is not https (scheme %q)", envRequestURL, u.Scheme)
	}
	if u.User != nil {
		return "", fmt.Errorf("%s carries user information", envRequestURL)
	}
	if !hostAllowed(r.cfg.TokenHostAllowlist, u.Hostname()) {
		return "", fmt.Errorf("%s host %q is not on the token host allowlist", envRequestURL, u.Hostname())
	}
	q := u.Query()
	q.Set("audience", r.cfg.GitHubAudience)
	u.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("request token: %w", err)
	}
	req.Header.Set("Authorization", "bearer "+bearer)
	req.Header.Set("Accept", "application/json")
	resp, err := r.tokenClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("request token from %s: %w", u.Host, stripURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("request token from %s: answered %s", u.Host, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse+1))
	if err != nil {
		return "", fmt.Errorf("request token from %s: %w", u.Host, err)
	}
	if len(body) > maxTokenResponse {
		return "", fmt.Errorf("request token from %s: answer larger than %d bytes", u.Host, maxTokenResponse)
	}
	var ans struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.Value == "" {
		return "", fmt.Errorf("request token from %s: answer has no token value", u.Host)
	}
	return ans.Value, nil
}

// stripURL drops the request URL from a client error: it names the job's
// plan and job ids, which belong in no log. The cause stays.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
