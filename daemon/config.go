package daemon

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/identity"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// fileConfig is the HCL schema of sluiced's --config file.
type fileConfig struct {
	Name           string           `hcl:"name,optional"`
	Cgroup         string           `hcl:"cgroup,optional"`
	Cgroups        []string         `hcl:"cgroups,optional"`
	Scope          string           `hcl:"scope,optional"`
	Discover       *discoverConfig  `hcl:"discover,block"`
	ProxyPort      int              `hcl:"proxy_port,optional"`
	DataDir        string           `hcl:"data_dir,optional"`
	APISocket      string           `hcl:"api_socket,optional"`
	Mark           int              `hcl:"mark,optional"`
	RulesDir       string           `hcl:"rules_dir,optional"`
	RulesPublicKey string           `hcl:"rules_public_key,optional"`
	RulesSource    string           `hcl:"rules_source,optional"`
	RulesPull      *rulesPullBlock  `hcl:"rules_pull,block"`
	MaxMessage     int              `hcl:"max_message_bytes,optional"`
	MaxSessions    int              `hcl:"max_sessions,optional"`
	PprofAddr      string           `hcl:"pprof_addr,optional"`
	MetricsAddr    string           `hcl:"metrics_addr,optional"`
	Log            *logConfig       `hcl:"log,block"`
	Identity       *identityConfig  `hcl:"identity,block"`
	Recording      *recordingConfig `hcl:"recording,block"`
	LiveExport     *liveConfig      `hcl:"live_export,block"`
	Remote         *remoteConfig    `hcl:"remote_api,block"`
	Approvals      *approvalsConfig `hcl:"approvals,block"`
	Containers     *containersBlock `hcl:"containers,block"`
	Store          *storeBlock      `hcl:"store,block"`
	Events         *eventsBlock     `hcl:"events,block"`
}

// discoverConfig is the discover block: where to look for runner services
// and how often.
type discoverConfig struct {
	Root  string `hcl:"root,optional"`
	Every string `hcl:"every,optional"`
}

// liveConfig is the live_export block: recorded events as JSON lines to a
// file ("-" is stdout) and/or RFC 5424 syslog over TCP.
type liveConfig struct {
	File   string `hcl:"file,optional"`
	Syslog string `hcl:"syslog,optional"`
}

// recordingConfig is the recording block.
type recordingConfig struct {
	FsyncEvery string `hcl:"fsync_every,optional"`
	MaxAge     string `hcl:"max_age,optional"`
	MaxBytes   int64  `hcl:"max_bytes,optional"`
}

// identityConfig is the identity block: which CI token issuers to trust.
type identityConfig struct {
	Issuers            []issuerConfig `hcl:"issuer,block"`
	GitHubAudience     string         `hcl:"github_audience,optional"`
	TokenHostAllowlist []string       `hcl:"token_host_allowlist,optional"`
	TokenVariable      string         `hcl:"token_variable,optional"`
	JobParents         []string       `hcl:"job_parents,optional"`
	ClockSkew          string         `hcl:"clock_skew,optional"`
	// CAFile adds roots for issuers and token services with a private CA
	// (GitHub Enterprise Server behind a corporate CA).
	CAFile string `hcl:"ca_file,optional"`
}

type issuerConfig struct {
	URL         string            `hcl:"url,label"`
	Audience    string            `hcl:"audience,optional"`
	BoundClaims map[string]string `hcl:"bound_claims,optional"`
	Algorithms  []string          `hcl:"algorithms,optional"`
}

type logConfig struct {
	Level  string `hcl:"level,optional"`
	Format string `hcl:"format,optional"` // auto, json, text
}

// containersBlock is the containers block as written.
type containersBlock struct {
	Cgroup       string  `hcl:"cgroup"`
	DockerSocket *string `hcl:"docker_socket,optional"`
	AddressIPv4  *string `hcl:"address_ipv4,optional"`
	AddressIPv6  *string `hcl:"address_ipv6,optional"`
	Outside      string  `hcl:"outside,optional"`
}

// Containers is the validated containers block: container jobs.
type Containers struct {
	// Cgroup is the container runtime's cgroup parent (relative to the
	// cgroup2 mount). The daemon creates it if missing and hooks it like a
	// configured cgroup, so every container the runtime starts below it
	// is intercepted from its first connect.
	Cgroup string
	// DockerSocket is the Docker Engine API socket, for attribution and
	// for the watch on containers outside Cgroup; "" turns both off.
	DockerSocket string
	// Addr4 and Addr6 are the container addresses (see
	// interceptor.AddLocalAddr); an invalid Addr6 means no IPv6.
	Addr4, Addr6 netip.Addr
	// Kill kills a container found outside the hooked cgroups (outside =
	// "kill"); otherwise it is only alerted ("alert").
	Kill bool
}

// DefaultDockerSocket is where Docker's API is when the block names none.
const DefaultDockerSocket = "/run/docker.sock"

// config is the validated configuration.
type Config struct {
	// Path is the config file the settings were read from.
	Path string
	Name string
	// Cgroups are the cgroups to hook (cgroup and cgroups of the file),
	// relative to the cgroup2 mount.
	Cgroups []string
	// Scope, when set, is the cgroup the connect programs attach to, above
	// the job cgroups (interceptor.Config.Scope).
	Scope string
	// Discover, when set, finds runner services and hooks their cgroups.
	Discover  *discovery
	ProxyPort uint16
	DataDir   string
	APISocket string
	Mark      uint32
	LogLevel  string
	LogFormat string
	// RulesDir holds the ruleset; "" means the embedded default ruleset
	// unless a pushed one was saved under DataDir.
	RulesDir string
	// RulesKey, when set, is the only key whose signatures are accepted;
	// RulesKeyPath is the file it was read from.
	RulesKey     ed25519.PublicKey
	RulesKeyPath string
	// RulesSource, when set, is where signed ruleset bundles are pulled
	// from (daemon/rulesource.go).
	RulesSource *RulesSourceSettings
	// MaxMessage bounds every protocol message either side may send.
	MaxMessage int
	// MaxSessions caps the flows served at once (interceptor.Proxy).
	MaxSessions int
	// PprofAddr, when set, serves net/http/pprof there (loopback only).
	PprofAddr string
	// MetricsAddr, when set, serves Prometheus metrics at /metrics there
	// (loopback only); "" serves none.
	MetricsAddr string
	// Identity configures workload identity.
	Identity identity.Config
	// Recording tunes session recordings.
	Recording recordingSettings
	// Live is where recorded events are streamed, if anywhere.
	Live liveConfig
	// Remote, when set, serves the recording API to responders over HTTPS.
	Remote *remoteConfig
	// Approvals configures approval holds.
	Approvals approvalsConfig
	// Containers, when set, intercepts container jobs.
	Containers *Containers
	// Store, when set, is where sealed recordings are uploaded.
	Store *StoreSettings
	// Events, when set, is where the daemon's events are published.
	Events *EventsSettings
}

// discovery is the validated discover block.
type discovery struct {
	// Root is searched for runner services, relative to the cgroup2 mount
	// (default system.slice).
	Root string
	// Every is the rescan interval (default 30s); the cgroup root is also
	// watched with inotify, so a new service is usually hooked at once.
	Every time.Duration
}

// recordingSettings: how often recordings are made durable (default 1s),
// and how long and how much is kept (default 30 days, 10 GiB).
type recordingSettings struct {
	FsyncEvery time.Duration
	MaxAge     time.Duration
	MaxBytes   int64
}

// Defaults for settings the file leaves out.
const (
	defaultProxyPort = 15001
	defaultDataDir   = "/var/lib/sluice"
)

// loadConfig reads and validates the config file at path.
func loadConfig(path string) (*Config, hcl.Diagnostics, map[string]*hcl.File) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read config", Detail: err.Error()}}, nil
	}
	return ParseConfig(path, src)
}

// parseConfig validates the config file src, read from path. Every
// mistake is a diagnostic whose detail says how to fix it, at the
// mistake's range where the file has one.
func ParseConfig(path string, src []byte) (*Config, hcl.Diagnostics, map[string]*hcl.File) {
	p := hclparse.NewParser()
	f, diags := p.ParseHCL(src, path)
	if diags.HasErrors() {
		return nil, diags, p.Files()
	}
	// Targets moved into rulesets; say so instead of a bare "unexpected block".
	if content, _, _ := f.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "target", LabelNames: []string{"name"}}}}); len(content.Blocks) > 0 {
		for _, b := range content.Blocks {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Targets belong in the ruleset",
				Detail: "Move this target block into a rule file under rules_dir; the daemon config no longer takes targets.", Subject: b.DefRange.Ptr()})
		}
		return nil, diags, p.Files()
	}
	var fc fileConfig
	if d := gohcl.DecodeBody(f.Body, nil, &fc); d.HasErrors() {
		return nil, append(diags, d...), p.Files()
	}
	at := func(name string) *hcl.Range { return attrRange(f, name) }
	c := &Config{
		Path: path, Name: fc.Name, DataDir: fc.DataDir, APISocket: fc.APISocket,
		LogLevel: "info", LogFormat: "auto", RulesDir: fc.RulesDir,
	}
	diags = append(diags, c.setCgroups(&fc)...)
	diags = append(diags, c.setStore(fc.Store)...)
	diags = append(diags, c.setEvents(fc.Events)...)
	if c.Name == "" {
		c.Name = "default"
	}
	if c.DataDir == "" {
		c.DataDir = defaultDataDir
	}
	if c.APISocket == "" {
		c.APISocket = api.DefaultSocket
	}
	switch {
	case fc.ProxyPort == 0:
		c.ProxyPort = defaultProxyPort
	case fc.ProxyPort < 1 || fc.ProxyPort > 65535:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid proxy_port", Subject: at("proxy_port"),
			Detail: fmt.Sprintf("proxy_port %d is not a TCP port: use a port from 1 to 65535 (the default is %d).", fc.ProxyPort, defaultProxyPort)})
	default:
		c.ProxyPort = uint16(fc.ProxyPort)
	}
	c.Mark = uint32(fc.Mark)
	switch {
	case fc.MaxSessions == 0:
		c.MaxSessions = interceptor.DefaultMaxSessions
	case fc.MaxSessions < 1 || fc.MaxSessions > 1000000:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_sessions", Subject: at("max_sessions"), Detail: fmt.Sprintf("max_sessions %d: use a value from 1 to 1000000 (the default is %d).", fc.MaxSessions, interceptor.DefaultMaxSessions)})
	default:
		c.MaxSessions = fc.MaxSessions
	}
	switch {
	case fc.MaxMessage == 0:
		c.MaxMessage = 64 << 20
	case fc.MaxMessage < 1024 || fc.MaxMessage > 1<<30:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_message_bytes", Subject: at("max_message_bytes"), Detail: fmt.Sprintf("max_message_bytes %d: use a value from 1024 to 1073741824 (the default is 67108864, 64 MiB).", fc.MaxMessage)})
	default:
		c.MaxMessage = fc.MaxMessage
	}
	if fc.Log != nil {
		if fc.Log.Level != "" {
			c.LogLevel = fc.Log.Level
		}
		if fc.Log.Format != "" {
			c.LogFormat = fc.Log.Format
		}
	}
	switch c.LogFormat {
	case "auto", "json", "text":
	default:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid log format", Detail: fmt.Sprintf("log format %q: use auto, json or text.", c.LogFormat)})
	}
	if ic := fc.Identity; ic != nil {
		id := identity.Config{GitHubAudience: ic.GitHubAudience, TokenHostAllowlist: ic.TokenHostAllowlist,
			TokenVariable: ic.TokenVariable, JobParents: ic.JobParents}
		for _, is := range ic.Issuers {
			id.Issuers = append(id.Issuers, identity.IssuerConfig{URL: is.URL, Audience: is.Audience, BoundClaims: is.BoundClaims, Algorithms: is.Algorithms})
		}
		if ic.ClockSkew != "" {
			d, err := time.ParseDuration(ic.ClockSkew)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid clock_skew", Detail: fmt.Sprintf("clock_skew %q: give a duration such as 60s.", ic.ClockSkew)})
			}
			id.ClockSkew = d
		}
		if ic.CAFile != "" {
			pem, err := os.ReadFile(ic.CAFile)
			pool, perr := x509.SystemCertPool()
			if perr != nil {
				pool = x509.NewCertPool()
			}
			if err != nil || !pool.AppendCertsFromPEM(pem) {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid identity ca_file", Detail: fmt.Sprintf("read PEM certificates from %s: %v.", ic.CAFile, err)})
			}
			id.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
		}
		c.Identity = id
	}
	c.Recording = recordingSettings{FsyncEvery: time.Second, MaxAge: 30 * 24 * time.Hour, MaxBytes: 10 << 30}
	if rc := fc.Recording; rc != nil {
		for _, d := range []struct {
			name, val string
			dst       *time.Duration
		}{{"fsync_every", rc.FsyncEvery, &c.Recording.FsyncEvery}, {"max_age", rc.MaxAge, &c.Recording.MaxAge}} {
			if d.val == "" {
				continue
			}
			v, err := parseDays(d.val)
			if err != nil || v <= 0 {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid recording " + d.name, Detail: fmt.Sprintf("%s %q: give a positive duration such as 1s, 12h or 30d.", d.name, d.val)})
			}
			*d.dst = v
		}
		if rc.MaxBytes < 0 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid recording max_bytes", Detail: "max_bytes must not be negative; 0 means no size limit."})
		}
		if rc.MaxBytes != 0 {
			c.Recording.MaxBytes = rc.MaxBytes
		}
	}
	if rc := fc.Remote; rc != nil {
		if _, err := netip.ParseAddrPort(rc.Listen); err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid remote_api listen", Detail: fmt.Sprintf("listen %q: give an address and port, such as 10.0.0.7:7443.", rc.Listen)})
		}
		if !strings.HasPrefix(rc.Issuer, "https://") {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid remote_api issuer", Detail: "issuer must be an https URL."})
		}
		if len(rc.AllowClaims) == 0 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "remote_api without allow_claims",
				Detail: "Name at least one claim a responder's token must carry (for example allow_claims = { groups = \"security\" }): any valid token of the issuer would otherwise read every recording."})
		}
		if rc.Audience == "" {
			rc.Audience = "sluice"
		}
		c.Remote = rc
	}
	if ac := fc.Approvals; ac != nil {
		if ac.WebhookFormat != "" {
			if err := approve.CheckFormat(ac.WebhookFormat); err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid webhook_format", Detail: err.Error() + ": use json or slack."})
			}
		}
		diags = append(diags, ac.validateFleet()...)
		c.Approvals = *ac
	}
	if lc := fc.LiveExport; lc != nil {
		if lc.Syslog != "" {
			ap, err := netip.ParseAddrPort(lc.Syslog)
			if err != nil || !(ap.Addr().IsLoopback() || ap.Addr().IsPrivate()) {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid live_export syslog", Detail: fmt.Sprintf("syslog %q: give a loopback or LAN address and port, such as 127.0.0.1:6514.", lc.Syslog)})
			}
		}
		c.Live = *lc
	}
	if fc.PprofAddr != "" {
		ap, err := netip.ParseAddrPort(fc.PprofAddr)
		if err != nil || !ap.Addr().IsLoopback() {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid pprof_addr", Subject: at("pprof_addr"), Detail: fmt.Sprintf("pprof_addr %q: give a loopback address and port, such as 127.0.0.1:6060.", fc.PprofAddr)})
		}
		c.PprofAddr = fc.PprofAddr
	}
	if fc.MetricsAddr != "" {
		ap, err := netip.ParseAddrPort(fc.MetricsAddr)
		if err != nil || !ap.Addr().IsLoopback() {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid metrics_addr", Subject: at("metrics_addr"),
				Detail: fmt.Sprintf("metrics_addr %q: give a loopback address and port, such as 127.0.0.1:9464; metrics are served only on loopback (put a scraper or an authenticating proxy on the runner to export them).", fc.MetricsAddr)})
		}
		c.MetricsAddr = fc.MetricsAddr
	}
	if cb := fc.Containers; cb != nil {
		diags = append(diags, c.setContainers(cb)...)
	}
	if fc.Scope != "" {
		c.Scope = strings.TrimPrefix(filepath.Clean("/"+fc.Scope), "/")
		for _, cg := range c.Cgroups {
			if c.Scope == "" || !strings.HasPrefix(cg, c.Scope+"/") {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid scope",
					Detail: fmt.Sprintf("the runner cgroup %q is not below scope %q: the scope must hold every job cgroup (and the places a job may move to), and must not be the root of the hierarchy on a machine sluiced shares with other work.", cg, fc.Scope)})
			}
		}
		if c.Discover != nil && c.Scope != "" && !strings.HasPrefix(c.Discover.Root+"/", c.Scope+"/") {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid scope",
				Detail: fmt.Sprintf("discover root %q is not below scope %q.", c.Discover.Root, fc.Scope)})
		}
	}

	diags = append(diags, c.setRulesSource(fc.RulesSource, fc.RulesPull, fc.RulesPublicKey, fc.RulesDir, at)...)
	if fc.RulesPublicKey != "" {
		b, err := os.ReadFile(fc.RulesPublicKey)
		if err == nil {
			c.RulesKey, err = ruleset.ParsePublicKey(b)
		}
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid rules_public_key", Subject: at("rules_public_key"),
				Detail: fmt.Sprintf("read the ruleset signing key %s: %v. Create one with `sluice rules keygen`.", fc.RulesPublicKey, err)})
		}
		c.RulesKeyPath = fc.RulesPublicKey
	}
	return c, diags, p.Files()
}

// setContainers validates the containers block.
func (c *Config) setContainers(cb *containersBlock) hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail})
	}
	cc := &Containers{Cgroup: strings.TrimPrefix(filepath.Clean("/"+cb.Cgroup), "/"), DockerSocket: DefaultDockerSocket,
		Addr4: interceptor.DefaultContainerAddr4, Addr6: interceptor.DefaultContainerAddr6, Kill: true}
	if cc.Cgroup == "" {
		bad("Invalid containers cgroup", fmt.Sprintf("cgroup %q is the root of the hierarchy. Name the cgroup the container runtime puts containers under (its cgroup-parent), such as sluice-containers.", cb.Cgroup))
	}
	for _, cg := range c.Cgroups {
		if cg == cc.Cgroup || strings.HasPrefix(cc.Cgroup, cg+"/") || strings.HasPrefix(cg, cc.Cgroup+"/") {
			bad("Invalid containers cgroup", fmt.Sprintf("containers cgroup %q and the hooked cgroup %q are nested: give the containers a cgroup of their own, beside the runner's.", cc.Cgroup, cg))
		}
	}
	if cb.DockerSocket != nil {
		cc.DockerSocket = *cb.DockerSocket
	}
	addr := func(name string, v *string, def netip.Addr, v6 bool) netip.Addr {
		if v == nil {
			return def
		}
		if *v == "" || *v == "none" {
			if !v6 {
				bad("Invalid containers "+name, "containers need an IPv4 address to reach the proxy; give one, such as "+def.String()+".")
			}
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(*v)
		switch {
		case err != nil:
			bad("Invalid containers "+name, fmt.Sprintf("%s %q is not an IP address.", name, *v))
		case a.Is6() != v6 || a.Is4In6():
			bad("Invalid containers "+name, fmt.Sprintf("%s %q is not an IPv%s address.", name, *v, map[bool]string{true: "6", false: "4"}[v6]))
		case a.IsLoopback() || a.IsUnspecified() || a.IsMulticast():
			bad("Invalid containers "+name, fmt.Sprintf("%s %s: a container has loopback of its own, so the proxy must be at a unicast address outside loopback (the default is %s).", name, a, def))
		}
		return a
	}
	cc.Addr4 = addr("address_ipv4", cb.AddressIPv4, interceptor.DefaultContainerAddr4, false)
	cc.Addr6 = addr("address_ipv6", cb.AddressIPv6, interceptor.DefaultContainerAddr6, true)
	switch cb.Outside {
	case "", "kill":
	case "alert":
		cc.Kill = false
	default:
		bad("Invalid containers outside", fmt.Sprintf("outside %q: use kill (the default: a container outside the hooked cgroups is killed and alerted) or alert.", cb.Outside))
	}
	c.Containers = cc
	if !diags.HasErrors() {
		// Hooked like a configured cgroup (status lists it with them).
		c.Cgroups = append(c.Cgroups, cc.Cgroup)
	}
	return diags
}

// attrRange returns the range of the top-level attribute name in f, or
// nil when f does not set it.
func attrRange(f *hcl.File, name string) *hcl.Range {
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	if a, ok := body.Attributes[name]; ok {
		r := a.SrcRange
		return &r
	}
	return nil
}

// setCgroups validates cgroup, cgroups and the discover block: at least one
// of them must say what to hook, and no cgroup may be listed twice.
func (c *Config) setCgroups(fc *fileConfig) hcl.Diagnostics {
	var diags hcl.Diagnostics
	all := fc.Cgroups
	if fc.Cgroup != "" {
		all = append([]string{fc.Cgroup}, all...)
	}
	seen := map[string]bool{}
	for _, cg := range all {
		clean := strings.TrimPrefix(filepath.Clean("/"+cg), "/")
		if clean == "" {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid cgroup",
				Detail: fmt.Sprintf("cgroup %q is the root of the hierarchy: hooking it would catch every process, the daemon's included. Name the runner's own cgroup.", cg)})
			continue
		}
		if seen[clean] {
			continue
		}
		seen[clean] = true
		c.Cgroups = append(c.Cgroups, clean)
	}
	if d := fc.Discover; d != nil {
		c.Discover = &discovery{Root: d.Root, Every: 30 * time.Second}
		if c.Discover.Root == "" {
			c.Discover.Root = "system.slice"
		}
		if d.Every != "" {
			v, err := time.ParseDuration(d.Every)
			if err != nil || v < 100*time.Millisecond {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid discover every",
					Detail: fmt.Sprintf("every %q: give a duration of at least 100ms, such as 30s.", d.Every)})
			}
			c.Discover.Every = v
		}
	}
	if len(c.Cgroups) == 0 && c.Discover == nil && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: NothingToHook,
			Detail: "Name the runner's cgroup (cgroup = \"...\" or cgroups = [...]), or add a discover block to find runner services; run `sluice install` to write both."})
	}
	return diags
}

// NothingToHook is the summary of the error a config that names no cgroup
// and no discovery gets.
const NothingToHook = "Nothing to hook"

// Defaults returns the settings of a config file at path that sets
// nothing: every default, and no cgroup to hook.
func Defaults(path string) *Config {
	c, _, _ := ParseConfig(path, nil)
	return c
}

// NamesNothingToHook reports whether c names no cgroup and no discovery:
// the packaged config until `sluice install` has run.
func (c *Config) NamesNothingToHook() bool { return len(c.Cgroups) == 0 && c.Discover == nil }

// parseDays parses a Go duration, also accepting whole days ("30d").
func parseDays(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && strings.HasSuffix(s, "d") {
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
