package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/rulesource"
	"github.com/sluicehq/sluice/ruleset"
)

// rulesPullBlock is the rules_pull block as written: how rules_source is
// reached and how often it is polled.
type rulesPullBlock struct {
	Every        string `hcl:"every,optional"`
	CAFile       string `hcl:"ca_file,optional"`
	Creds        string `hcl:"creds,optional"`
	Endpoint     string `hcl:"endpoint,optional"`
	Region       string `hcl:"region,optional"`
	AccessKeyEnv string `hcl:"access_key_env,optional"`
	SecretKeyEnv string `hcl:"secret_key_env,optional"`
	Insecure     bool   `hcl:"insecure,optional"`
}

// RulesSourceSettings is the validated rules_source and rules_pull block.
// Credentials are not kept here: they are read from the environment
// variables it names when the daemon starts.
type RulesSourceSettings struct {
	// URL is https://..., s3://BUCKET/KEY or nats://HOST:PORT/BUCKET/NAME.
	URL string
	// Every is the poll interval (default 30 s). A nats:// source is also
	// watched, so a new version usually arrives at once.
	Every time.Duration
	// CAFile, Creds (NATS), Endpoint, Region, Insecure (S3) say how the
	// source is reached; AccessKeyEnv and SecretKeyEnv name the
	// environment variables holding S3 credentials (default
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
	CAFile, Creds, Endpoint, Region string
	AccessKeyEnv, SecretKeyEnv      string
	Insecure                        bool
}

// defaultRulesEvery is how often rules_source is polled by default.
const defaultRulesEvery = 30 * time.Second

// pullAtStartTimeout bounds the fetch at start, before the hooks exist.
const pullAtStartTimeout = 5 * time.Second

// setRulesSource validates rules_source and the rules_pull block.
func (c *Config) setRulesSource(src string, pb *rulesPullBlock, publicKey, rulesDir string, at func(string) *hcl.Range) hcl.Diagnostics {
	if src == "" {
		if pb != nil {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "rules_pull without rules_source",
				Detail: "The rules_pull block says how rules_source is reached: set rules_source, or remove the block."}}
		}
		return nil
	}
	var diags hcl.Diagnostics
	bad := func(summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: at("rules_source")})
	}
	if err := rulesource.Check(src); err != nil {
		bad("Invalid rules_source", err.Error()+".")
	}
	if publicKey == "" {
		bad("rules_source needs rules_public_key", "Pulled rulesets are applied only when their signature verifies: set rules_public_key to the public key (PREFIX.pub of sluice rules keygen) whose private half signs them with sluice rules publish.")
	}
	if rulesDir != "" {
		bad("Both rules_source and rules_dir", "The daemon enforces either the ruleset pulled from rules_source or the one in rules_dir: remove one of them.")
	}
	st := &RulesSourceSettings{URL: src, Every: defaultRulesEvery, AccessKeyEnv: "AWS_ACCESS_KEY_ID", SecretKeyEnv: "AWS_SECRET_ACCESS_KEY"}
	if pb != nil {
		st.CAFile, st.Creds, st.Endpoint, st.Region, st.Insecure = pb.CAFile, pb.Creds, pb.Endpoint, pb.Region, pb.Insecure
		if pb.Every != "" {
			d, err := time.ParseDuration(pb.Every)
			if err != nil || d < time.Second {
				bad("Invalid rules_pull every", fmt.Sprintf("every %q: give how often rules_source is polled, at least \"1s\" (such as \"30s\").", pb.Every))
			}
			st.Every = d
		}
		for _, e := range []struct {
			name, val string
			dst       *string
		}{{"access_key_env", pb.AccessKeyEnv, &st.AccessKeyEnv}, {"secret_key_env", pb.SecretKeyEnv, &st.SecretKeyEnv}} {
			if e.val == "" {
				continue
			}
			if !envName.MatchString(e.val) {
				bad("Invalid rules_pull "+e.name, fmt.Sprintf("%s = %q: give the name of an environment variable of sluiced, not the credential itself.", e.name, e.val))
			}
			*e.dst = e.val
		}
		if pb.Insecure && pb.CAFile != "" {
			bad("Conflicting rules_pull settings", "insecure = true uses plain HTTP to the S3 endpoint, where ca_file has no use: remove one of them.")
		}
	}
	c.RulesSource = st
	return diags
}

// puller keeps the daemon's ruleset at the newest signed bundle of
// rules_source. It never applies a bundle whose signature does not verify
// with rules_public_key, whose version is older than the one applied, or
// whose ruleset does not compile; the ruleset enforcing stays, and status
// and the log say why. The last good bundle is kept in data_dir so a
// restart with the source unreachable enforces it.
type puller struct {
	rm  *rules
	set *RulesSourceSettings
	src rulesource.Source
	dir string // the cache of the last good bundle
	log hclog.Logger

	mu          sync.Mutex
	st          api.RulesPulled
	last        int64    // version applied
	lastHash    [32]byte // of the encoded bundle applied
	refusedHash [32]byte // of the last encoded bundle refused
	fetchErr    string
	refuseErr   string
	pub         func(events.Event)
}

func newPuller(rm *rules) (*puller, error) {
	set := rm.cfg.RulesSource
	src, err := rulesource.Open(set.URL, rulesource.Options{CAFile: set.CAFile, Creds: set.Creds, Endpoint: set.Endpoint,
		Region: set.Region, Insecure: set.Insecure, AccessKey: os.Getenv(set.AccessKeyEnv), SecretKey: os.Getenv(set.SecretKeyEnv),
		Name: "sluiced " + rm.cfg.Name})
	if err != nil {
		return nil, err
	}
	p := &puller{rm: rm, set: set, src: src, dir: filepath.Join(rm.cfg.DataDir, "rules-pulled"), log: rm.log.Named("pull")}
	p.st = api.RulesPulled{Source: set.URL, From: "default"}
	return p, nil
}

// label names a bundle version as the ruleset's source.
func (p *puller) label(version int64) string {
	return fmt.Sprintf("%s version %d", p.set.URL, version)
}

// verify decodes and checks an encoded bundle and compiles its ruleset.
func (p *puller) verify(data []byte, last int64) (*rulesource.Bundle, *ruleset.Ruleset, *ruleset.LoadError) {
	b, err := rulesource.Decode(data)
	if err != nil {
		return nil, nil, &ruleset.LoadError{Err: err}
	}
	if err := b.Verify(p.rm.cfg.RulesKey, last); err != nil {
		return b, nil, &ruleset.LoadError{Err: err}
	}
	rs, diags := p.rm.compileFiles(b.Files, bundleDir(b.Version))
	if diags.HasErrors() {
		return b, nil, &ruleset.LoadError{Diagnostics: diags}
	}
	return b, rs, nil
}

// bundleDir is the directory name a pulled bundle's files are shown under
// in diagnostics.
func bundleDir(version int64) string { return "bundle-" + strconv.FormatInt(version, 10) }

// initial is the ruleset the daemon starts with: the last good bundle in
// data_dir, or the embedded default when there is none (or it no longer
// verifies), saying so.
func (p *puller) initial() (*ruleset.Ruleset, string) {
	data, err := rulesource.LoadLastGood(p.dir)
	if err == nil && data != nil {
		b, rs, le := p.verify(data, 0)
		if le == nil {
			p.last, p.lastHash = b.Version, rulesource.Hash(data)
			p.st.Version, p.st.Digest, p.st.From, p.st.Applied = b.Version, b.Digest(), "disk", time.Now()
			return rs, p.label(b.Version) + " (last good bundle from " + p.dir + ")"
		}
		err = errors.New(loadErrorLines(le)[0])
	}
	if err != nil {
		p.log.Error("the last good pulled ruleset cannot be used; enforcing the embedded default until rules_source is reached", "dir", p.dir, "error", err)
	} else {
		p.log.Warn("no ruleset was ever pulled from rules_source; enforcing the embedded default until it is reached", "rules_source", p.set.URL)
	}
	return ruleset.Default(), "embedded default (nothing pulled from " + p.set.URL + " yet)"
}

// atStart fetches once before the hooks exist, so a reachable source's
// newest bundle is what the hooks start with. It returns rs and source
// unchanged when the source is unreachable or its bundle is refused.
func (p *puller) atStart(ctx context.Context, rs *ruleset.Ruleset, source string) (*ruleset.Ruleset, string) {
	ctx, cancel := context.WithTimeout(ctx, pullAtStartTimeout)
	defer cancel()
	data, err := p.fetch(ctx)
	if err != nil || data == nil {
		return rs, source
	}
	b, nrs, le := p.verify(data, p.last)
	if le != nil {
		p.refuse(b, data, le)
		return rs, source
	}
	if b.Version == p.last {
		p.confirmed()
		return rs, source
	}
	p.accepted(b, data)
	return nrs, p.label(b.Version)
}

// fetch asks the source, recording the check in status.
func (p *puller) fetch(ctx context.Context) ([]byte, error) {
	data, err := p.src.Fetch(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st.LastCheck = time.Now()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != p.fetchErr {
		if err != nil {
			p.log.Warn("cannot fetch from rules_source; the current ruleset stays", "rules_source", p.set.URL, "version", p.last, "error", err)
		} else if p.fetchErr != "" {
			p.log.Info("rules_source reachable again", "rules_source", p.set.URL)
		}
		p.fetchErr = msg
	}
	return data, err
}

// accepted records an applied bundle and keeps it as the last good one.
func (p *puller) accepted(b *rulesource.Bundle, data []byte) {
	p.mu.Lock()
	p.last, p.lastHash, p.refuseErr = b.Version, rulesource.Hash(data), ""
	p.st.Version, p.st.Digest, p.st.From, p.st.Applied = b.Version, b.Digest(), "source", time.Now()
	pub := p.pub
	p.mu.Unlock()
	if err := rulesource.SaveLastGood(p.dir, data); err != nil {
		p.log.Error("pulled ruleset is active but could not be kept; a restart with rules_source unreachable would not have it", "dir", p.dir, "error", err)
	}
	p.log.Info("pulled ruleset applied", "rules_source", p.set.URL, "version", b.Version, "digest", b.Digest(),
		"published", b.Published().UTC().Format(time.RFC3339Nano), "since_publish", time.Since(b.Published()).Round(time.Millisecond))
	if pub != nil {
		pub(p.event("applied", b.Version, b.Digest(), ""))
	}
}

// confirmed records that the source holds the version applied, so a
// bundle loaded from disk at start is now known to be the source's too.
func (p *puller) confirmed() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st.From == "disk" {
		p.st.From = "source"
	}
}

// refuse records a bundle that is not applied; the ruleset enforcing
// stays.
func (p *puller) refuse(b *rulesource.Bundle, data []byte, le *ruleset.LoadError) {
	msgs := loadErrorLines(le)
	var version int64
	if b != nil {
		version = b.Version
	}
	le.Source, le.At = p.set.URL, time.Now()
	if version != 0 {
		le.Source = p.label(version)
	}
	if p.rm.store != nil { // nil at start, before the store exists
		p.rm.store.Reject(le)
	}
	p.mu.Lock()
	p.refusedHash, p.refuseErr, p.st.Refused = rulesource.Hash(data), "bundle version "+strconv.FormatInt(version, 10)+" refused: "+msgs[0], version
	pub := p.pub
	p.mu.Unlock()
	p.log.Error("pulled bundle refused; the current ruleset stays", "rules_source", p.set.URL, "version", version, "applied", p.last, "errors", msgs)
	if pub != nil {
		pub(p.event("refused", version, "", msgs[0]))
	}
}

func (p *puller) event(state string, version int64, digest, reason string) events.Event {
	return events.Event{Type: "ruleset", Kind: state, Reason: reason, Fields: map[string]string{
		"rules_source": p.set.URL, "version": strconv.FormatInt(version, 10), "digest": digest, "from": p.st.From}}
}

// poll fetches once and applies what is new.
func (p *puller) poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	data, err := p.fetch(ctx)
	if err != nil || data == nil {
		return
	}
	h := rulesource.Hash(data)
	p.mu.Lock()
	seen := h == p.lastHash || h == p.refusedHash
	last := p.last
	p.mu.Unlock()
	if h == p.lastHash {
		p.confirmed()
	}
	if seen {
		return
	}
	b, _, le := p.verify(data, last)
	if le != nil {
		p.refuse(b, data, le)
		return
	}
	if b.Version == last {
		p.confirmed() // the same version again (a re-upload of the same bundle)
		return
	}
	ok, msgs := p.rm.applyVerified(b.Files, bundleDir(b.Version), p.label(b.Version))
	if !ok {
		le := &ruleset.LoadError{Err: errors.New(msgs[0])}
		p.refuse(b, data, le)
		return
	}
	p.accepted(b, data)
}

// run polls every set.Every, and at once when the source signals a
// change, until ctx ends. pub, when set, publishes the version this VM
// runs (at start and on every change) as a ruleset event.
func (p *puller) run(ctx context.Context, pub func(events.Event)) {
	defer p.src.Close()
	p.mu.Lock()
	p.pub = pub
	st := p.st
	p.mu.Unlock()
	if pub != nil {
		pub(p.event("running", st.Version, st.Digest, p.fetchErr))
	}
	t := time.NewTicker(p.set.Every)
	defer t.Stop()
	p.poll(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.src.Changed():
		}
		p.poll(ctx)
	}
}

// status reports the puller for sluice status; nil without rules_source.
func (p *puller) status() *api.RulesPulled {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	st.LastError = p.fetchErr
	if st.LastError == "" {
		st.LastError = p.refuseErr
	}
	if w, ok := p.src.(interface{ Watching() bool }); ok {
		st.Watching = w.Watching()
	}
	return &st
}

// startRulesPull runs the puller, if any, until ctx ends; wg waits for it.
func (r *rules) startRulesPull(ctx context.Context, wg *sync.WaitGroup, evp *eventsPub) {
	if r.pull == nil {
		return
	}
	var pub func(events.Event)
	if evp != nil {
		pub = evp.p.Publish
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.pull.run(ctx, pub)
	}()
}
