package identity

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// BenchmarkResolve compares the first connection of a job (ancestry, job
// environment, token request and verification) with later ones (ancestry
// and a cache hit). "first" clears the job cache before each call; the key
// set and the HTTP connection to the token endpoint stay warm, as in a
// running daemon. The GitHub case includes the test issuer minting (RSA
// signing) a token on each request; the GitLab case reads the token from
// the job's environment.
//
//	go test -run '^$' -bench Resolve ./interceptor/identity/
func BenchmarkResolve(b *testing.B) {
	ti := newTestIssuer(b)
	r, _ := newResolver(b, ti, nil)
	gh := startGitHubJob(b, githubEnv(ti, "acme/api")...)
	gl := startGitLabJob(b, "SLUICE_ID_TOKEN="+ti.sign(b, ti.githubClaims("acme/api")("sluice")))
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		pid   uint32
		fresh bool
	}{
		{"github/first", gh.child, true},
		{"github/cached", gh.child, false},
		{"gitlab/first", gl.child, true},
		{"gitlab/cached", gl.child, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			if res := r.Resolve(ctx, c.pid); res.Identity.Level != ruleset.LevelOIDC {
				b.Fatalf("%+v", res)
			}
			for b.Loop() {
				if c.fresh {
					r.mu.Lock()
					clear(r.jobs)
					r.mu.Unlock()
				}
				if res := r.Resolve(ctx, c.pid); res.Identity.Level != ruleset.LevelOIDC {
					b.Fatalf("%+v", res)
				}
			}
		})
	}
}
