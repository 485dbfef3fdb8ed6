package ruleset

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestCredentialTargets: credential blocks are accepted on the targets
// whose decoders inject them (postgres, mysql, ssh; k8s in
// TestK8sCredentials), and granted there as on any other; tcp targets get
// one diagnostic at the block, saying which protocols inject.
func TestCredentialTargets(t *testing.T) {
	src := func(protocol, port string) string {
		knownHosts := ""
		if protocol == ProtoSSH {
			knownHosts = `known_hosts = "/etc/sluice/known_hosts"`
		}
		return fmt.Sprintf(`target "db" {
  protocol = %q
  address  = ["10.0.0.5:%s"]
  %s
  credential "ci" {
    user         = "ci_user"
    password_env = "DB_CI_PASSWORD"
    policies     = ["*"]
  }
}
policy "p" {
  targets = ["db"]
  credential "ci" {}
}
`, protocol, port, knownHosts)
	}
	for _, tc := range []struct{ protocol, port string }{{ProtoPostgres, "5432"}, {ProtoMySQL, "3306"}, {ProtoSSH, "22"}} {
		t.Run(tc.protocol, func(t *testing.T) {
			rs := mustParse(t, map[string]string{"c.hcl": src(tc.protocol, tc.port)})
			cr := rs.Target("db").Credential("ci")
			if cr == nil || cr.User != "ci_user" || cr.Source.Env != "DB_CI_PASSWORD" {
				t.Fatalf("credential: %+v", cr)
			}
			if want := map[string]string{ProtoSSH: SSHPassword}[tc.protocol]; cr.SSHAuth != want || cr.CertTTL != 0 {
				t.Errorf("SSHAuth %q, CertTTL %s; want %q and none", cr.SSHAuth, cr.CertTTL, want)
			}
			m := rs.Match(Flow{Identity: Identity{Level: LevelOIDC},
				Target: Endpoint{Name: "db", Protocol: tc.protocol, Addr: netip.MustParseAddrPort("10.0.0.5:" + tc.port)}})
			g, err := m.Grant()
			if err != nil || g == nil || g.Credential != cr || g.Rule != "p/credential/ci" {
				t.Fatalf("Grant: %+v %v", g, err)
			}
			// Without a verified identity the flow is refused.
			m = rs.Match(Flow{Target: Endpoint{Name: "db", Protocol: tc.protocol, Addr: netip.MustParseAddrPort("10.0.0.5:" + tc.port)}})
			if _, err := m.Grant(); err == nil {
				t.Fatal("a flow without identity was granted a credential")
			}
		})
	}
	for _, tc := range []struct{ protocol, port string }{{ProtoTCP, "9000"}} {
		t.Run(tc.protocol, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"c.hcl": []byte(src(tc.protocol, tc.port))})
			if len(diags) != 1 || !diags.HasErrors() {
				t.Fatalf("got %d diagnostics, want 1 error: %v", len(diags), diags)
			}
			d := diags[0]
			wantDetail := "Credential injection is implemented for postgres, mysql, ssh and k8s targets; " + tc.protocol + " targets authenticate with the client's own credentials."
			if d.Summary != "Credential injection not supported" || d.Detail != wantDetail || d.Subject == nil ||
				d.Subject.Filename != "c.hcl" || d.Subject.Start.Line != 5 || d.Subject.Start.Column != 3 {
				t.Errorf("got %q %q at %v, want %q at c.hcl:5:3", d.Summary, d.Detail, d.Subject, wantDetail)
			}
			if !strings.Contains(d.Detail, tc.protocol) {
				t.Errorf("the detail does not name the protocol: %q", d.Detail)
			}
		})
	}
}

// sshTarget is an ssh target whose credential block is body.
func sshTarget(body string) string {
	return fmt.Sprintf(`target "web" {
  protocol    = "ssh"
  address     = ["10.0.1.0/24:22"]
  known_hosts = "/etc/sluice/known_hosts"
  credential "deploy" {
    user     = "deploy"
    policies = ["*"]
%s
  }
}
`, body)
}

// TestSSHCredentials: the secret sources of an ssh credential, and how
// it logs in (ssh_auth, defaulted from the source) for how long
// (cert_ttl).
func TestSSHCredentials(t *testing.T) {
	tests := []struct {
		name, body string
		auth       string
		src        SecretSource
		ttl        time.Duration
	}{
		{"key file", `key_file = "/etc/sluice/secrets/deploy-key"`, SSHPrivateKey,
			SecretSource{File: "/etc/sluice/secrets/deploy-key"}, 0},
		{"key env, said", "key_env = \"DEPLOY_KEY\"\nssh_auth = \"private_key\"", SSHPrivateKey,
			SecretSource{Env: "DEPLOY_KEY"}, 0},
		{"key command, cached", "key_command = [\"/usr/local/bin/vault-key\", \"deploy\"]\ncache_for = \"1m\"", SSHPrivateKey,
			SecretSource{Command: []string{"/usr/local/bin/vault-key", "deploy"}, CacheFor: time.Minute}, 0},
		{"password file", `password_file = "/etc/sluice/secrets/deploy-pw"`, SSHPassword,
			SecretSource{File: "/etc/sluice/secrets/deploy-pw"}, 0},
		{"password env, said", "password_env = \"DEPLOY_PW\"\nssh_auth = \"password\"", SSHPassword,
			SecretSource{Env: "DEPLOY_PW"}, 0},
		{"certificate, default ttl", "ssh_auth = \"certificate\"\nkey_file = \"/etc/sluice/secrets/user-ca\"", SSHCertificate,
			SecretSource{File: "/etc/sluice/secrets/user-ca"}, DefaultCertTTL},
		{"certificate, 2m", "ssh_auth = \"certificate\"\nkey_env = \"USER_CA\"\ncert_ttl = \"2m\"", SSHCertificate,
			SecretSource{Env: "USER_CA"}, 2 * time.Minute},
		{"certificate, bounds", "ssh_auth = \"certificate\"\nkey_env = \"USER_CA\"\ncert_ttl = \"24h\"", SSHCertificate,
			SecretSource{Env: "USER_CA"}, 24 * time.Hour},
		{"certificate, lower bound", "ssh_auth = \"certificate\"\nkey_env = \"USER_CA\"\ncert_ttl = \"60s\"", SSHCertificate,
			SecretSource{Env: "USER_CA"}, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := mustParse(t, map[string]string{"c.hcl": sshTarget(tt.body)})
			tg := rs.Target("web")
			if tg.KnownHosts != "/etc/sluice/known_hosts" {
				t.Errorf("KnownHosts %q", tg.KnownHosts)
			}
			cr := tg.Credential("deploy")
			if cr.SSHAuth != tt.auth || !reflect.DeepEqual(cr.Source, tt.src) || cr.CertTTL != tt.ttl || cr.User != "deploy" {
				t.Errorf("got auth %q, source %+v, ttl %s; want %q, %+v, %s", cr.SSHAuth, cr.Source, cr.CertTTL, tt.auth, tt.src, tt.ttl)
			}
		})
	}
}

// TestSSHCredentialDiagnostics: each mistake in a credential block is
// one error, at the range to fix, saying how.
func TestSSHCredentialDiagnostics(t *testing.T) {
	// Line 8 of sshTarget is the first line of body; the block is at 5:3.
	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"no source", sshTarget(`ssh_auth = "private_key"`), "One secret source",
			"exactly one of password_file, password_env, password_command (a password) or key_file, key_env, key_command", 5, 3},
		{"key and password", sshTarget("key_file = \"/k\"\npassword_env = \"PW\""), "One secret source",
			"this one has password_env and key_file; keep one", 5, 3},
		{"two keys", sshTarget("key_file = \"/k\"\nkey_env = \"K\""), "One secret source",
			"this one has key_file and key_env; keep one", 5, 3},
		{"relative key file", sshTarget(`key_file = "secrets/k"`), "Relative path",
			`key_file must be an absolute path, such as "/etc/sluice/secrets/deploy".`, 8, 12},
		{"bad key env", sshTarget(`key_env = "A B"`), "Invalid variable name",
			`key_env must name an environment variable of the daemon, such as "DEPLOY_SSH_KEY".`, 8, 11},
		{"relative key command", sshTarget(`key_command = ["vault", "k"]`), "Invalid command",
			"key_command is a program and its arguments, run without a shell; the program must be an absolute path", 8, 15},
		{"unknown ssh_auth", sshTarget("key_file = \"/k\"\nssh_auth = \"publickey\""), "Invalid value for ssh_auth",
			`ssh_auth must be one of "password", "private_key", "certificate"; got "publickey".`, 9, 12},
		{"password with a key", sshTarget("key_file = \"/k\"\nssh_auth = \"password\""), "Password login with a key",
			"Remove ssh_auth to log in with the key", 9, 12},
		{"private_key with a password", sshTarget("password_file = \"/p\"\nssh_auth = \"private_key\""), "Key login with a password",
			"this credential reads a password (password_file). Read the key with key_file, key_env or key_command instead", 9, 12},
		{"certificate with a password", sshTarget("password_env = \"P\"\nssh_auth = \"certificate\""), "Certificate login without a CA key",
			"but this credential reads a password (password_env). Read the CA's private key with key_file, key_env or key_command.", 9, 12},
		{"cert_ttl with a key", sshTarget("key_file = \"/k\"\ncert_ttl = \"5m\""), "cert_ttl needs a certificate login",
			`applies only with ssh_auth = "certificate"`, 9, 1},
		{"cert_ttl too short", sshTarget("key_file = \"/k\"\nssh_auth = \"certificate\"\ncert_ttl = \"30s\""), "Invalid cert_ttl",
			"cert_ttl must be between 1m and 24h", 10, 12},
		{"cert_ttl too long", sshTarget("key_file = \"/k\"\nssh_auth = \"certificate\"\ncert_ttl = \"48h\""), "Invalid cert_ttl",
			"got 48h. Leave it out for 5m.", 10, 12},
		{"cert_ttl not a duration", sshTarget("key_file = \"/k\"\nssh_auth = \"certificate\"\ncert_ttl = \"5 minutes\""), "Invalid duration",
			"cert_ttl must be a duration", 10, 12},
		{"cache_for on a key file", sshTarget("key_file = \"/k\"\ncache_for = \"5m\""), "cache_for needs a command",
			"cache_for applies to password_command, key_command and token_command only", 9, 1},
		{"inline password", sshTarget("key_file = \"/k\"\npassword = \"hunter2\""), "Secret in the ruleset",
			"or an SSH private key with key_file, key_env or key_command", 9, 1},
		{"empty user", strings.Replace(sshTarget(`key_file = "/k"`), `user     = "deploy"`, `user     = ""`, 1), "Empty user",
			"the user name it logs in to the host as", 6, 16},
		{"key on postgres", `target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user     = "app"
    key_file = "/etc/sluice/secrets/app"
    policies = ["*"]
  }
}`, "key_file on a postgres target", "a postgres credential reads its password with password_file, password_env or password_command", 6, 5},
		{"ssh_auth on mysql", `target "db" {
  protocol = "mysql"
  address  = ["10.0.0.5:3306"]
  credential "app" {
    user         = "app"
    password_env = "APP_PW"
    ssh_auth     = "password"
    policies     = ["*"]
  }
}`, "ssh_auth on a mysql target", "a mysql credential always logs in with its password. Remove ssh_auth.", 7, 5},
		{"cert_ttl on postgres", `target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user         = "app"
    password_env = "APP_PW"
    cert_ttl     = "5m"
    policies     = ["*"]
  }
}`, "cert_ttl needs a certificate login", "on an ssh target", 7, 5},
		{"two passwords on postgres, unchanged", `target "db" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
  credential "app" {
    user          = "app"
    password_file = "/p"
    password_env  = "P"
    policies      = ["*"]
  }
}`, "One password source", "exactly one of password_file, password_env or password_command; this one has password_file and password_env; keep one", 4, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"c.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "c.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at c.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}

// TestKnownHosts: known_hosts belongs to ssh targets, is an absolute
// path, and is required where Sluice logs in itself.
func TestKnownHosts(t *testing.T) {
	rs := mustParse(t, map[string]string{"k.hcl": `
target "relayed" {
  protocol  = "ssh"
  address   = ["*:22"]
  undecoded = "relay"
}
target "pinned" {
  protocol    = "ssh"
  address     = ["10.0.0.7:22"]
  known_hosts = "/etc/ssh/../sluice/known_hosts"
}
`})
	if got := rs.Target("relayed").KnownHosts; got != "" {
		t.Errorf("relayed: KnownHosts %q", got)
	}
	if got := rs.Target("pinned").KnownHosts; got != "/etc/sluice/known_hosts" {
		t.Errorf("pinned: KnownHosts %q, want it cleaned", got)
	}

	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"relative", `target "t" {
  protocol    = "ssh"
  address     = ["*:22"]
  known_hosts = "known_hosts"
}`, "Relative path", `known_hosts must be an absolute path, such as "/etc/sluice/known_hosts".`, 4, 17},
		{"on postgres", `target "t" {
  protocol    = "postgres"
  address     = ["*:5432"]
  known_hosts = "/etc/sluice/known_hosts"
}`, "known_hosts not supported", "a postgres target has none. Remove it.", 4, 3},
		{"on tcp", `target "t" {
  protocol    = "tcp"
  address     = ["*:9000"]
  known_hosts = "/etc/sluice/known_hosts"
}`, "known_hosts not supported", "a tcp target has none", 4, 3},
		{"not a string", `target "t" {
  protocol    = "ssh"
  address     = ["*:22"]
  known_hosts = ["/a", "/b"]
}`, "Incorrect attribute value type", "known_hosts must be a string", 4, 17},
		{"missing with a credential", `target "web" {
  protocol = "ssh"
  address  = ["*:22"]
  credential "deploy" {
    user     = "deploy"
    key_env  = "DEPLOY_KEY"
    policies = ["*"]
  }
}`, "Missing known_hosts", "Target web injects credentials, so Sluice logs in to its hosts itself and must check their host keys", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"k.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "k.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at k.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}

// TestUpstreamPool: upstream_pool belongs to postgres targets that inject
// credentials (Sluice owns their logins), and is bounded.
func TestUpstreamPool(t *testing.T) {
	rs := mustParse(t, map[string]string{"p.hcl": `
target "pooled" {
  protocol      = "postgres"
  address       = ["10.0.0.5:5432"]
  upstream_pool = 8
  credential "app" {
    user     = "app"
    password_env = "APP_PASSWORD"
    policies = ["*"]
  }
}
target "plain" {
  protocol = "postgres"
  address  = ["10.0.0.6:5432"]
}
`})
	if got := rs.Target("pooled").UpstreamPool; got != 8 {
		t.Errorf("pooled: UpstreamPool %d, want 8", got)
	}
	if got := rs.Target("plain").UpstreamPool; got != 0 {
		t.Errorf("plain: UpstreamPool %d, want 0 (the default)", got)
	}
	const cred = `
  credential "app" {
    user         = "app"
    password_env = "APP_PASSWORD"
    policies     = ["*"]
  }
}`
	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"no credentials", `target "t" {
  protocol      = "postgres"
  address       = ["*:5432"]
  upstream_pool = 4
}`, "upstream_pool without credentials", "Target t relays its clients' own logins", 4, 3},
		{"on mysql", `target "t" {
  protocol      = "mysql"
  address       = ["*:3306"]
  upstream_pool = 4` + cred, "upstream_pool not supported", "a mysql target cannot set it", 4, 3},
		{"negative", `target "t" {
  protocol      = "postgres"
  address       = ["*:5432"]
  upstream_pool = -1` + cred, "upstream_pool out of range", "from 0 (none, the default) to 64; got -1", 4, 19},
		{"too many", `target "t" {
  protocol      = "postgres"
  address       = ["*:5432"]
  upstream_pool = 65` + cred, "upstream_pool out of range", "got 65", 4, 19},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"p.hcl": []byte(tt.src)})
			errs := errorsOf(diags)
			if len(errs) != 1 {
				t.Fatalf("got %d errors, want 1: %v", len(errs), diags)
			}
			d := errs[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "p.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q (%s) at %v, want %q containing %q at p.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}
