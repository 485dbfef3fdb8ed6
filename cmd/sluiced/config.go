package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// fileConfig is the HCL schema of sluiced's --config file.
type fileConfig struct {
	Name      string         `hcl:"name,optional"`
	Cgroup    string         `hcl:"cgroup"`
	ProxyPort int            `hcl:"proxy_port,optional"`
	DataDir   string         `hcl:"data_dir,optional"`
	APISocket string         `hcl:"api_socket,optional"`
	Mark      int            `hcl:"mark,optional"`
	Log       *logConfig     `hcl:"log,block"`
	Targets   []targetConfig `hcl:"target,block"`
}

type logConfig struct {
	Level  string `hcl:"level,optional"`
	Format string `hcl:"format,optional"` // auto, json, text
}

type targetConfig struct {
	Name      string         `hcl:"name,label"`
	Protocol  string         `hcl:"protocol"`
	Addresses hcl.Expression `hcl:"address"` // kept as an expression for its source range
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
	Targets   []interceptor.Target
}

// Defaults for settings the file leaves out.
const (
	defaultProxyPort = 15001
	defaultDataDir   = "/var/lib/sluice"
)

// protocols the daemon can serve today. Anything else is refused at load
// rather than relayed unseen.
var protocols = map[string]bool{"tcp": true}

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
	var fc fileConfig
	if d := gohcl.DecodeBody(f.Body, nil, &fc); d.HasErrors() {
		return nil, append(diags, d...), p.Files()
	}
	c := &config{
		Name: fc.Name, Cgroup: fc.Cgroup, DataDir: fc.DataDir, APISocket: fc.APISocket,
		LogLevel: "info", LogFormat: "auto",
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
	seen := map[string]bool{}
	for _, tc := range fc.Targets {
		rng := tc.Addresses.Range()
		if seen[tc.Name] {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate target", Detail: fmt.Sprintf("target %q is defined twice; give each target its own name.", tc.Name), Subject: rng.Ptr()})
		}
		seen[tc.Name] = true
		if !protocols[tc.Protocol] {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported protocol", Detail: fmt.Sprintf("target %q: protocol %q is not served by this daemon; use \"tcp\" for an opaque, logged relay.", tc.Name, tc.Protocol), Subject: rng.Ptr()})
		}
		var list []string
		if d := gohcl.DecodeExpression(tc.Addresses, nil, &list); d.HasErrors() {
			diags = append(diags, d...)
			continue
		}
		if len(list) == 0 {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Target without addresses", Detail: fmt.Sprintf("target %q: list at least one address, such as \"10.0.0.5:5432\".", tc.Name), Subject: rng.Ptr()})
		}
		t := interceptor.Target{Name: tc.Name, Protocol: tc.Protocol}
		for _, s := range list {
			a, err := ruleset.ParseAddress(s)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid target address", Detail: err.Error() + ".", Subject: rng.Ptr()})
				continue
			}
			t.Addresses = append(t.Addresses, a)
		}
		c.Targets = append(c.Targets, t)
	}
	return c, diags, p.Files()
}
