package main

import (
	"crypto/ed25519"
	"fmt"
	"net/netip"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// fileConfig is the HCL schema of sluiced's --config file.
type fileConfig struct {
	Name           string     `hcl:"name,optional"`
	Cgroup         string     `hcl:"cgroup"`
	ProxyPort      int        `hcl:"proxy_port,optional"`
	DataDir        string     `hcl:"data_dir,optional"`
	APISocket      string     `hcl:"api_socket,optional"`
	Mark           int        `hcl:"mark,optional"`
	RulesDir       string     `hcl:"rules_dir,optional"`
	RulesPublicKey string     `hcl:"rules_public_key,optional"`
	MaxMessage     int        `hcl:"max_message_bytes,optional"`
	PprofAddr      string     `hcl:"pprof_addr,optional"`
	Log            *logConfig `hcl:"log,block"`
}

type logConfig struct {
	Level  string `hcl:"level,optional"`
	Format string `hcl:"format,optional"` // auto, json, text
}

// config is the validated configuration.
type config struct {
	Name      string
	Cgroup    string
	ProxyPort uint16
	DataDir   string
	APISocket string
	Mark      uint32
	LogLevel  string
	LogFormat string
	// RulesDir holds the ruleset; "" means the embedded default ruleset
	// unless a pushed one was saved under DataDir.
	RulesDir string
	// RulesKey, when set, is the only key whose signatures are accepted.
	RulesKey ed25519.PublicKey
	// MaxMessage bounds every protocol message either side may send.
	MaxMessage int
	// PprofAddr, when set, serves net/http/pprof there (loopback only).
	PprofAddr string
}

// Defaults for settings the file leaves out.
const (
	defaultProxyPort = 15001
	defaultDataDir   = "/var/lib/sluice"
)

func loadConfig(path string) (*config, hcl.Diagnostics, map[string]*hcl.File) {
	p := hclparse.NewParser()
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read config", Detail: err.Error()}}, nil
	}
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
	c := &config{
		Name: fc.Name, Cgroup: fc.Cgroup, DataDir: fc.DataDir, APISocket: fc.APISocket,
		LogLevel: "info", LogFormat: "auto", RulesDir: fc.RulesDir,
	}
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
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid proxy_port", Detail: fmt.Sprintf("proxy_port %d is not a TCP port (1-65535).", fc.ProxyPort)})
	default:
		c.ProxyPort = uint16(fc.ProxyPort)
	}
	c.Mark = uint32(fc.Mark)
	switch {
	case fc.MaxMessage == 0:
		c.MaxMessage = 64 << 20
	case fc.MaxMessage < 1024 || fc.MaxMessage > 1<<30:
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid max_message_bytes", Detail: fmt.Sprintf("max_message_bytes %d: use a value from 1024 to 1073741824 (the default is 67108864, 64 MiB).", fc.MaxMessage)})
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
	if fc.PprofAddr != "" {
		ap, err := netip.ParseAddrPort(fc.PprofAddr)
		if err != nil || !ap.Addr().IsLoopback() {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid pprof_addr", Detail: fmt.Sprintf("pprof_addr %q: give a loopback address and port, such as 127.0.0.1:6060.", fc.PprofAddr)})
		}
		c.PprofAddr = fc.PprofAddr
	}
	if fc.RulesPublicKey != "" {
		b, err := os.ReadFile(fc.RulesPublicKey)
		if err == nil {
			c.RulesKey, err = ruleset.ParsePublicKey(b)
		}
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid rules_public_key",
				Detail: fmt.Sprintf("read the ruleset signing key %s: %v. Create one with `sluice rules keygen`.", fc.RulesPublicKey, err)})
		}
	}
	return c, diags, p.Files()
}
