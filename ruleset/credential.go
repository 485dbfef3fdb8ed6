package ruleset

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Credential injection: a target may hold credentials that the proxy
// authenticates to the real server with, so that jobs never hold the
// database password, the SSH key or the cluster token. A credential names where its secret
// lives (a root-only file, an environment variable of the daemon, or a
// command the daemon runs) and which policies may use it; a policy grants
// credentials with credential blocks, in order, each with an optional
// when:
//
//	target "prod" {
//	  protocol = "postgres" # or "mysql"
//	  address  = ["10.0.0.5:5432"]
//	  credential "deployer" {
//	    user          = "deployer"
//	    password_file = "/etc/sluice/secrets/prod-deployer"
//	    policies      = ["acme-api"]
//	  }
//	  credential "ci_readonly" {
//	    user             = "ci_readonly"
//	    password_command = ["/usr/local/bin/db-token", "ci_readonly"]
//	    cache_for        = "5m"
//	    policies         = ["*"]
//	  }
//	}
//
//	policy "acme-api" {
//	  targets = ["prod", "web"]
//	  when    = identity.repository == "acme/api"
//	  credential "deployer" { when = identity.ref == "refs/heads/main" }
//	  credential "ci_readonly" {}
//	  credential "deploy" {}
//	}
//
// An ssh target's credential logs in to the host with a password
// (password_*), a private key (key_file, key_env or key_command, OpenSSH
// or PEM), or a certificate minted for each session and signed by an SSH
// user CA that the hosts trust, whose private key the key_* source then
// reads. ssh_auth says which; it defaults to "private_key" with a key_*
// source and "password" with a password_* one, and "certificate" must be
// set. cert_ttl (between 1m and 24h, default 5m) is how long each
// certificate stays valid. Since Sluice logs in to the host itself, an ssh
// target with credentials must name the known_hosts file its host keys
// are checked against:
//
//	target "web" {
//	  protocol    = "ssh"
//	  address     = ["10.0.1.0/24:22"]
//	  known_hosts = "/etc/sluice/known_hosts"
//	  credential "deploy" {
//	    user     = "deploy"
//	    ssh_auth = "certificate"
//	    key_file = "/etc/sluice/secrets/ssh-user-ca"
//	    cert_ttl = "2m"
//	    policies = ["acme-api"]
//	  }
//	}
//
// A k8s target's credential authenticates to the API server with a
// bearer token (token_file, token_env or token_command, read as a
// password is) or a client certificate (key_file, key_env or
// key_command, reading one PEM bundle that holds the CERTIFICATE, with
// its chain, and its PRIVATE KEY). k8s_auth says which, "token" or
// "client_certificate", and defaults from the source; token_* is for k8s
// targets only, and a k8s credential takes no password_*. Its user names
// the identity the token or certificate belongs to (a user, or
// system:serviceaccount:NAMESPACE:NAME), for the recording:
//
//	target "cluster" {
//	  protocol    = "k8s"
//	  address     = ["10.0.2.1:6443"]
//	  upstream_ca = "/etc/sluice/ca/cluster.pem"
//	  credential "deployer" {
//	    user          = "system:serviceaccount:ci:deployer"
//	    token_command = ["/usr/local/bin/kube-token", "deployer"]
//	    cache_for     = "10m"
//	    policies      = ["acme-api"]
//	  }
//	}
//
// A target with at least one credential accepts only injected sessions:
// a flow to it is refused unless its job has a verified (oidc) identity
// and a matched policy grants it one of the target's credentials. The
// first grant that applies wins, in policy order and then block order.
// Credentials are never written in the ruleset itself. tcp targets take
// no credentials.

// Credential is one credential a target offers for injection. The secret
// itself is not part of the ruleset: Source says where the daemon reads it
// when a session needs it.
type Credential struct {
	// Name is the block label, unique within its target.
	Name string
	// Target is the name of the target that defines it.
	Target string
	// User is the user name the proxy authenticates (or logs in) as. On
	// a k8s target, whose token or certificate itself says who it is,
	// User names that identity for the recording.
	User string
	// Source is where the secret comes from: a password (password_*);
	// on an ssh target (key_*) an SSH private key; on a k8s target a
	// bearer token (token_*) or (key_*) a PEM bundle holding the client
	// certificate, with its chain, and its private key.
	Source SecretSource
	// Policies may grant this credential; "*" means any policy.
	Policies []string
	// SSHAuth is how an ssh target's credential logs in: SSHPassword
	// (the secret is a password), SSHPrivateKey (an OpenSSH or PEM
	// private key) or SSHCertificate (the secret is an SSH user CA's
	// private key, and each session logs in with a new key and a
	// certificate minted for it). Empty on other protocols.
	SSHAuth string
	// CertTTL is how long a minted certificate is valid
	// (SSHCertificate only); DefaultCertTTL when not set.
	CertTTL time.Duration
	// K8sAuth is how a k8s target's credential authenticates to the API
	// server: K8sToken (the secret is a bearer token, sent as
	// Authorization: Bearer) or K8sClientCertificate (the secret is a PEM
	// bundle of the client certificate, its chain and its private key,
	// presented in the TLS handshake). Empty on other protocols.
	K8sAuth string
	Range   hcl.Range
}

// SSH credential kinds (Credential.SSHAuth).
const (
	SSHPassword    = "password"
	SSHPrivateKey  = "private_key"
	SSHCertificate = "certificate"
)

// Kubernetes credential kinds (Credential.K8sAuth).
const (
	K8sToken             = "token"
	K8sClientCertificate = "client_certificate"
)

// DefaultCertTTL is how long a per-session SSH certificate is valid unless
// the credential says otherwise: long enough to log in, short enough to be
// useless when copied.
const DefaultCertTTL = 5 * time.Minute

// SecretSource says where a credential's secret is read. Exactly one of
// File, Env and Command is set.
type SecretSource struct {
	// File is an absolute path to a file holding the secret (trailing
	// newlines are trimmed). The daemon refuses files that group or others
	// can read or write, or that root does not own.
	File string
	// Env is the name of an environment variable of the daemon.
	Env string
	// Command is run by the daemon (no shell); its standard output, less
	// trailing newlines, is the secret.
	Command []string
	// CacheFor is how long a secret from Command may be reused; zero runs
	// the command for every session.
	CacheFor time.Duration
}

// Kind returns "file", "env" or "command".
func (s SecretSource) Kind() string {
	switch {
	case s.File != "":
		return "file"
	case s.Env != "":
		return "env"
	default:
		return "command"
	}
}

// String describes the source without any secret: the file's path, the
// variable's name or the command's program.
func (s SecretSource) String() string {
	switch {
	case s.File != "":
		return "file " + s.File
	case s.Env != "":
		return "env " + s.Env
	case len(s.Command) > 0:
		return "command " + s.Command[0]
	}
	return "none"
}

// allows reports whether policy may grant c.
func (c *Credential) allows(policy string) bool {
	return hasString(c.Policies, "*") || hasString(c.Policies, policy)
}

// Credential returns the target's credential of that name, or nil.
func (t *Target) Credential(name string) *Credential {
	for _, c := range t.Credentials {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// grant is one credential block of a policy.
type grant struct {
	name string
	id   string // policy/credential/name
	when *expr  // nil: always
	rng  hcl.Range
}

// Grant is a credential granted to a flow.
type Grant struct {
	Credential *Credential
	// Rule is the granting block's ID, "policy/credential/name".
	Rule string
}

// GrantError says why a flow to a target that injects credentials gets
// none. The flow must be refused.
type GrantError struct {
	Target string
	Reason string
}

func (e *GrantError) Error() string {
	return fmt.Sprintf("no credential for target %q: %s", e.Target, e.Reason)
}

var credentialSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "user", Required: true},
	{Name: "password_file"},
	{Name: "password_env"},
	{Name: "password_command"},
	{Name: "key_file"},
	{Name: "key_env"},
	{Name: "key_command"},
	{Name: "token_file"},
	{Name: "token_env"},
	{Name: "token_command"},
	{Name: "ssh_auth"},
	{Name: "k8s_auth"},
	{Name: "cert_ttl"},
	{Name: "cache_for"},
	{Name: "policies", Required: true},
	{Name: "description"},
	// A secret written into the ruleset is refused with its own message.
	{Name: "password"},
}}

var grantSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "when"}}}

// injecting are the protocols whose decoders inject credentials.
var injecting = []string{ProtoPostgres, ProtoMySQL, ProtoSSH, ProtoK8s}

// sshAuths are the values of ssh_auth.
var sshAuths = []string{SSHPassword, SSHPrivateKey, SSHCertificate}

// k8sAuths are the values of k8s_auth.
var k8sAuths = []string{K8sToken, K8sClientCertificate}

// Bounds of cert_ttl: a certificate must outlive the login, and should
// not outlive a working day.
const (
	minCertTTL = time.Minute
	maxCertTTL = 24 * time.Hour
)

// Kinds of secret a credential reads (secretAttr.kind).
const (
	secretPassword = "password" // password_*: a password
	secretKey      = "key"      // key_*: an SSH private key, or a k8s client certificate and key
	secretToken    = "token"    // token_*: a Kubernetes bearer token
)

// secretKinds says which kinds of secret each injecting protocol reads.
var secretKinds = map[string][]string{
	ProtoPostgres: {secretPassword},
	ProtoMySQL:    {secretPassword},
	ProtoSSH:      {secretPassword, secretKey},
	ProtoK8s:      {secretToken, secretKey},
}

// secretAttr is one attribute naming where a credential's secret is read.
type secretAttr struct {
	name string
	kind string // secretPassword, secretKey or secretToken
	set  func(c *compiler, cr *Credential, protocol string, a *hcl.Attribute)
}

// secretAttrs are the secret sources, password_*, key_* and token_*:
// each kind of source (file, env, command) fills the same field of
// SecretSource, whichever secret it holds.
var secretAttrs = []secretAttr{
	{"password_file", secretPassword, (*compiler).secretFile},
	{"password_env", secretPassword, (*compiler).secretEnv},
	{"password_command", secretPassword, (*compiler).secretCommand},
	{"key_file", secretKey, (*compiler).secretFile},
	{"key_env", secretKey, (*compiler).secretEnv},
	{"key_command", secretKey, (*compiler).secretCommand},
	{"token_file", secretToken, (*compiler).secretFile},
	{"token_env", secretToken, (*compiler).secretEnv},
	{"token_command", secretToken, (*compiler).secretCommand},
}

func (c *compiler) secretFile(cr *Credential, _ string, a *hcl.Attribute) {
	if s, ok := c.str(a); ok {
		if !filepath.IsAbs(s) {
			c.errorf(a.Expr.Range(), "Relative path", "%s must be an absolute path, such as \"/etc/sluice/secrets/%s\".", a.Name, cr.Name)
		}
		cr.Source.File = filepath.Clean(s)
	}
}

func (c *compiler) secretEnv(cr *Credential, protocol string, a *hcl.Attribute) {
	if s, ok := c.str(a); ok {
		if s == "" || strings.ContainsAny(s, "= \t") {
			example := "PROD_DEPLOYER_PASSWORD"
			switch {
			case strings.HasPrefix(a.Name, "token_"):
				example = "KUBE_CI_TOKEN"
			case strings.HasPrefix(a.Name, "key_") && protocol == ProtoK8s:
				example = "KUBE_CI_CLIENT_CERT"
			case strings.HasPrefix(a.Name, "key_"):
				example = "DEPLOY_SSH_KEY"
			}
			c.errorf(a.Expr.Range(), "Invalid variable name", "%s must name an environment variable of the daemon, such as %q.", a.Name, example)
		}
		cr.Source.Env = s
	}
}

func (c *compiler) secretCommand(cr *Credential, protocol string, a *hcl.Attribute) {
	if list, _, ok := c.strList(a); ok {
		if len(list) == 0 || !filepath.IsAbs(list[0]) {
			program := "/usr/local/bin/db-token"
			switch {
			case strings.HasPrefix(a.Name, "token_"):
				program = "/usr/local/bin/kube-token"
			case strings.HasPrefix(a.Name, "key_") && protocol == ProtoK8s:
				program = "/usr/local/bin/kube-client-cert"
			case strings.HasPrefix(a.Name, "key_"):
				program = "/usr/local/bin/ssh-key"
			}
			c.errorf(a.Expr.Range(), "Invalid command", "%s is a program and its arguments, run without a shell; the program must be an absolute path, such as [%q, %q].", a.Name, program, cr.Name)
		}
		cr.Source.Command = list
	}
}

// sourcesSentence says what a credential of protocol reads its secret
// with, for diagnostics.
func sourcesSentence(protocol string) string {
	switch protocol {
	case ProtoSSH:
		return "a password (password_file, password_env or password_command) or an SSH private key (key_file, key_env or key_command)"
	case ProtoK8s:
		return "a bearer token (token_file, token_env or token_command) or a client certificate and its private key, in one PEM bundle (key_file, key_env or key_command)"
	}
	return "its password with password_file, password_env or password_command"
}

// withArticle is a protocol name after "a" or "an": "an ssh", "a k8s".
func withArticle(protocol string) string {
	if protocol == ProtoSSH {
		return "an " + protocol
	}
	return "a " + protocol
}

// misplacedSecret reports a secret source that protocol's credentials do
// not read.
func (c *compiler) misplacedSecret(sa secretAttr, protocol string, a *hcl.Attribute) {
	var what string
	switch sa.kind {
	case secretKey:
		what = "reads an SSH private key (on an ssh target) or a client certificate and its key (on a k8s target)"
	case secretToken:
		what = "reads a bearer token, which only k8s targets authenticate with"
	default:
		what = "reads a password"
	}
	detail := fmt.Sprintf("%s %s; %s credential reads %s.", sa.name, what, withArticle(protocol), sourcesSentence(protocol))
	if protocol == ProtoK8s && sa.kind == secretPassword {
		detail = fmt.Sprintf("A Kubernetes API server takes no password: use token_%s to read a bearer token, or key_file, key_env or key_command to read a client certificate and its private key (one PEM bundle).", strings.TrimPrefix(sa.name, "password_"))
	}
	c.errorf(a.NameRange, fmt.Sprintf("%s on %s target", sa.name, withArticle(protocol)), "%s", detail)
}

// credential compiles a target's credential block.
func (c *compiler) credential(t *Target, b *hcl.Block) {
	name := b.Labels[0]
	if !c.checkName("credential", name, b.LabelRanges[0]) {
		return
	}
	if first := t.Credential(name); first != nil {
		c.errorf(b.LabelRanges[0], "Duplicate credential name", "Target %s already has a credential named %q at %s.", t.Name, name, posOf(first.Range))
		return
	}
	content, d := b.Body.Content(credentialSchema)
	c.diags = append(c.diags, d...)
	cr := &Credential{Name: name, Target: t.Name, Range: b.DefRange}
	ssh, k8s := t.Protocol == ProtoSSH, t.Protocol == ProtoK8s
	injects := hasString(injecting, t.Protocol)
	if a := content.Attributes["password"]; a != nil {
		how := "read the password with password_file (a root-only file), password_env (a variable of the daemon) or password_command"
		switch {
		case ssh:
			how += ", or an SSH private key with key_file, key_env or key_command"
		case k8s:
			how = "read a bearer token with token_file (a root-only file), token_env (a variable of the daemon) or token_command, or a client certificate and its key with key_file, key_env or key_command"
		}
		c.errorf(a.NameRange, "Secret in the ruleset", "Rulesets are pushed, reviewed and stored in version control, so they never hold secrets: %s.", how)
	}
	if a := content.Attributes["user"]; a != nil {
		if s, ok := c.str(a); ok {
			if s == "" {
				what := "the database user name it authenticates as"
				switch {
				case ssh:
					what = "the user name it logs in to the host as"
				case k8s:
					what = "the name of the identity it authenticates to the API server as (the user or service account its token or certificate belongs to), for the recording"
				}
				c.errorf(a.Expr.Range(), "Empty user", "A credential needs %s.", what)
			}
			cr.User = s
		}
	}

	// Exactly one secret source, of a kind the protocol reads.
	var sources []*hcl.Attribute
	first := map[string]*hcl.Attribute{} // the first source of each kind
	misplaced := false
	for _, sa := range secretAttrs {
		a := content.Attributes[sa.name]
		if a == nil {
			continue
		}
		sources = append(sources, a)
		if !hasString(secretKinds[t.Protocol], sa.kind) {
			misplaced = true
			if injects { // else refused as a whole below
				c.misplacedSecret(sa, t.Protocol, a)
			}
			continue
		}
		if first[sa.kind] == nil {
			first[sa.kind] = a
		}
		sa.set(c, cr, t.Protocol, a)
	}
	password, key, token := first[secretPassword], first[secretKey], first[secretToken]
	if len(sources) != 1 && content.Attributes["password"] == nil && !misplaced {
		names := make([]string, len(sources))
		for i, a := range sources {
			names[i] = a.Name
		}
		had := fmt.Sprintf("this one has %d", len(sources))
		if len(sources) > 1 {
			had = "this one has " + protocolWords(names, "and") + "; keep one"
		}
		switch {
		case ssh:
			c.errorf(b.DefRange, "One secret source", "A credential of an ssh target reads its secret from exactly one of password_file, password_env, password_command (a password) or key_file, key_env, key_command (an SSH private key, or with ssh_auth = \"certificate\" the user CA's key that signs each session's certificate); %s.", had)
		case k8s:
			c.errorf(b.DefRange, "One secret source", "A credential of a k8s target reads its secret from exactly one of token_file, token_env, token_command (a bearer token) or key_file, key_env, key_command (a PEM bundle holding the client certificate, with its chain, and its private key); %s.", had)
		default:
			c.errorf(b.DefRange, "One password source", "A credential reads its password from exactly one of password_file, password_env or password_command; %s.", had)
		}
	}

	c.sshAuth(cr, t, content, password, key)
	c.k8sAuth(cr, t, content, key, token)

	if a := content.Attributes["cache_for"]; a != nil {
		if d, ok := c.duration(a); ok {
			if cr.Source.Command == nil {
				c.errorf(a.NameRange, "cache_for needs a command", "cache_for applies to password_command, key_command and token_command only: files and variables are read for every session, so replacing them rotates the secret at once.")
			}
			if d < 0 || d > 24*time.Hour {
				c.errorf(a.Expr.Range(), "Invalid cache_for", "cache_for must be between 0s and 24h; got %s.", d)
			}
			cr.Source.CacheFor = d
		}
	}
	if a := content.Attributes["policies"]; a != nil {
		list, ranges, ok := c.strList(a)
		if ok && len(list) == 0 {
			c.errorf(a.Expr.Range(), "No policies", "List the policies that may grant this credential, or [\"*\"] for any policy.")
		}
		cr.Policies = list
		c.credPolicies = append(c.credPolicies, credPolicyRefs{cr: cr, names: list, ranges: ranges})
	}
	if !injects {
		c.errorf(b.DefRange, "Credential injection not supported", "Credential injection is implemented for %s targets; %s targets authenticate with the client's own credentials.", protocolWords(injecting, "and"), t.Protocol)
	}
	t.Credentials = append(t.Credentials, cr)
}

// sshAuth compiles how an ssh credential logs in (ssh_auth, defaulted
// from its source) and for how long its certificates are valid
// (cert_ttl).
func (c *compiler) sshAuth(cr *Credential, t *Target, content *hcl.BodyContent, password, key *hcl.Attribute) {
	ssh := t.Protocol == ProtoSSH
	if ssh {
		switch {
		case key != nil:
			cr.SSHAuth = SSHPrivateKey
		case password != nil:
			cr.SSHAuth = SSHPassword
		}
	}
	authAttr := content.Attributes["ssh_auth"]
	authOK := false
	switch {
	case authAttr == nil:
	case ssh:
		if s, ok := c.keyword(authAttr, sshAuths); ok {
			cr.SSHAuth, authOK = s, true
		}
	case t.Protocol == ProtoK8s:
		c.errorf(authAttr.NameRange, "ssh_auth on a k8s target", "ssh_auth says how Sluice logs in to an ssh target's hosts; a k8s credential says how it authenticates to the API server with k8s_auth (%q or %q), which defaults from its source. Remove ssh_auth.", K8sToken, K8sClientCertificate)
	case hasString(injecting, t.Protocol):
		c.errorf(authAttr.NameRange, "ssh_auth on a "+t.Protocol+" target", "ssh_auth says how Sluice logs in to an ssh target's hosts; a %s credential always logs in with its password. Remove ssh_auth.", t.Protocol)
	}
	if authOK {
		switch {
		case cr.SSHAuth == SSHPassword && key != nil:
			c.errorf(authAttr.Expr.Range(), "Password login with a key", "ssh_auth = \"password\" logs in with a password, but this credential reads an SSH private key (%s). Remove ssh_auth to log in with the key, or read a password with password_file, password_env or password_command instead.", key.Name)
		case cr.SSHAuth == SSHPrivateKey && password != nil:
			c.errorf(authAttr.Expr.Range(), "Key login with a password", "ssh_auth = \"private_key\" logs in with an SSH private key, but this credential reads a password (%s). Read the key with key_file, key_env or key_command instead, or set ssh_auth = \"password\".", password.Name)
		case cr.SSHAuth == SSHCertificate && key == nil:
			what := "no key"
			if password != nil {
				what = "a password (" + password.Name + ")"
			}
			c.errorf(authAttr.Expr.Range(), "Certificate login without a CA key", "ssh_auth = \"certificate\" signs a new certificate for each session with the private key of an SSH user CA that the hosts trust (TrustedUserCAKeys), but this credential reads %s. Read the CA's private key with key_file, key_env or key_command.", what)
		}
	}
	if cr.SSHAuth == SSHCertificate {
		cr.CertTTL = DefaultCertTTL
	}
	if a := content.Attributes["cert_ttl"]; a != nil {
		if d, ok := c.duration(a); ok {
			switch {
			case authAttr != nil && !authOK:
				// ssh_auth itself is wrong, and reported.
			case cr.SSHAuth != SSHCertificate:
				c.errorf(a.NameRange, "cert_ttl needs a certificate login", "cert_ttl is how long the certificate minted for each session stays valid, so it applies only with ssh_auth = \"certificate\" on an ssh target; remove it, or set ssh_auth = \"certificate\" and read the user CA's key with key_file, key_env or key_command.")
			case d < minCertTTL || d > maxCertTTL:
				c.errorf(a.Expr.Range(), "Invalid cert_ttl", "cert_ttl must be between %s and %s, long enough to log in and short enough to be useless when copied; got %s. Leave it out for %s.",
					shortDuration(minCertTTL), shortDuration(maxCertTTL), shortDuration(d), shortDuration(DefaultCertTTL))
			default:
				cr.CertTTL = d
			}
		}
	}
}

// k8sAuth compiles how a k8s credential authenticates to the API server
// (k8s_auth, defaulted from its source).
func (c *compiler) k8sAuth(cr *Credential, t *Target, content *hcl.BodyContent, key, token *hcl.Attribute) {
	k8s := t.Protocol == ProtoK8s
	if k8s {
		switch {
		case token != nil:
			cr.K8sAuth = K8sToken
		case key != nil:
			cr.K8sAuth = K8sClientCertificate
		}
	}
	a := content.Attributes["k8s_auth"]
	switch {
	case a == nil:
		return
	case !k8s:
		if !hasString(injecting, t.Protocol) {
			return // the block is refused as a whole
		}
		how := fmt.Sprintf("a %s credential always logs in with its password", t.Protocol)
		if t.Protocol == ProtoSSH {
			how = "an ssh credential says how it logs in with ssh_auth"
		}
		c.errorf(a.NameRange, "k8s_auth on "+withArticle(t.Protocol)+" target", "k8s_auth says how Sluice authenticates to a k8s target's API server; %s. Remove k8s_auth.", how)
		return
	}
	s, ok := c.keyword(a, k8sAuths)
	if !ok {
		return
	}
	cr.K8sAuth = s
	switch {
	case s == K8sToken && key != nil:
		c.errorf(a.Expr.Range(), "Token authentication with a certificate", "k8s_auth = %q sends a bearer token, but this credential reads a client certificate and key (%s). Remove k8s_auth to authenticate with the certificate, or read the token with token_file, token_env or token_command instead.", K8sToken, key.Name)
	case s == K8sClientCertificate && token != nil:
		c.errorf(a.Expr.Range(), "Certificate authentication with a token", "k8s_auth = %q authenticates with a client certificate, but this credential reads a bearer token (%s). Read the certificate and its private key (one PEM bundle) with key_file, key_env or key_command instead, or set k8s_auth = %q.", K8sClientCertificate, token.Name, K8sToken)
	}
}

// shortDuration writes d as a ruleset would: "5m", "24h", "1m30s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// credPolicyRefs are a credential's policies list, checked once every
// policy is known.
type credPolicyRefs struct {
	cr     *Credential
	names  []string
	ranges []hcl.Range
}

// grant compiles a policy's credential block.
func (c *compiler) grant(p *policy, sb *hclsyntax.Block) {
	if len(sb.Labels) != 1 {
		c.errorf(sb.TypeRange, "Missing credential name", "A policy's credential block names the target credential it grants, such as credential \"ci_readonly\" {}.")
		return
	}
	name := sb.Labels[0]
	g := &grant{name: name, id: p.name + "/credential/" + name, rng: sb.AsHCLBlock().DefRange}
	for _, other := range p.grants {
		if other.name == name {
			c.errorf(sb.LabelRanges[0], "Duplicate credential grant", "Policy %s already grants credential %q at %s; combine the conditions with ||.", p.name, name, posOf(other.rng))
			return
		}
	}
	content, d := sb.Body.Content(grantSchema)
	c.diags = append(c.diags, d...)
	if a := content.Attributes["when"]; a != nil {
		g.when = c.when(a, exprUse{what: "credential block"})
	}
	// The granted credential must exist on a target the policy covers,
	// and list the policy.
	found, allowed := false, false
	for _, t := range c.rs.targets {
		if !p.all && !hasString(p.targets, t.Name) {
			continue
		}
		if cr := t.Credential(name); cr != nil {
			found = true
			if cr.allows(p.name) {
				allowed = true
			}
		}
	}
	switch {
	case !found:
		c.errorf(sb.LabelRanges[0], "Unknown credential", "No target of policy %s defines a credential named %q; define it in a credential block of the target.", p.name, name)
	case !allowed:
		c.errorf(sb.LabelRanges[0], "Credential not granted to this policy", "Credential %q does not list policy %s in its policies; add it there, so both the target's owner and the policy agree.", name, p.name)
	}
	p.grants = append(p.grants, g)
}

// checkCredentialPolicies checks that credentials name existing policies.
func (c *compiler) checkCredentialPolicies() {
	for _, ref := range c.credPolicies {
		for i, n := range ref.names {
			if n == "*" {
				continue
			}
			known := false
			for _, p := range c.rs.policies {
				if p.name == n {
					known = true
					break
				}
			}
			if !known {
				c.errorf(ref.ranges[i], "Unknown policy", "Credential %q of target %s lists policy %q, which is not defined.", ref.cr.Name, ref.cr.Target, n)
			}
		}
	}
}

// Grant returns the credential the flow's session must authenticate with.
// It returns nil, nil when the flow's target injects no credentials (the
// client authenticates itself), and a *GrantError when the target injects
// credentials but this flow gets none: the flow must then be refused.
func (m *Match) Grant() (*Grant, error) {
	t := m.rs.byName[m.flow.Target.Name]
	if t == nil || len(t.Credentials) == 0 {
		return nil, nil
	}
	refuse := func(format string, args ...any) (*Grant, error) {
		return nil, &GrantError{Target: t.Name, Reason: fmt.Sprintf(format, args...)}
	}
	if m.err != nil {
		return refuse("evaluating the policies failed: %v", m.err)
	}
	if lvl := m.flow.Identity.Level; lvl != LevelOIDC {
		if lvl == "" {
			lvl = LevelNone
		}
		return refuse("credentials are injected only for jobs with a verified CI identity, and this job's identity is %q", lvl)
	}
	if len(m.policies) == 0 {
		return refuse("no policy matches this job")
	}
	ev := evaluator{m: m, env: env{flow: &m.flow, addr: m.addr, ip: m.ip, st: &Statement{}}}
	for _, p := range m.policies {
		for _, g := range p.grants {
			cr := t.Credential(g.name)
			if cr == nil || !cr.allows(p.name) {
				continue
			}
			if g.when != nil {
				ok, _, err := ev.eval(g.when)
				if err != nil {
					return refuse("evaluate %s: %v", g.id, err)
				}
				if !ok {
					continue
				}
			}
			return &Grant{Credential: cr, Rule: g.id}, nil
		}
	}
	return refuse("no matched policy (%s) grants one of its credentials to this job", strings.Join(m.Policies(), ", "))
}
