package ssh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

func init() {
	decoder.Register(decoder.Protocol{
		Name:   ruleset.ProtoSSH,
		New:    newHandler,
		Refuse: Refuse,
		Busy:   RefuseBusy,
		// Sluice decodes a target's flows when it can log in to the host
		// itself: the target holds credentials (and, by the ruleset's
		// checks, a known_hosts). Other ssh targets are relayed or
		// refused as their undecoded setting says.
		Decodes:    func(t *ruleset.Target) bool { return len(t.Credentials) > 0 },
		NotDecoded: "the target has no credential for Sluice to log in to the host with",
		Classify:   Classify,
	})
}

// Classify turns a command line into the exec request rules see, for
// sluice rules test and explain.
func Classify(text string) (ruleset.Statement, error) {
	argv, programs := ParseCommand(text)
	return ruleset.Statement{Kind: ruleset.SSHExec, Text: text, SSH: &ruleset.SSHRequest{Kind: ruleset.SSHExec,
		Command: text, Argv: argv, Programs: programs}}, nil
}

// newHandler serves the flows of ssh targets: decoded where the target
// has credentials, otherwise as the target's undecoded setting says.
func newHandler(env decoder.Env) decoder.Handler {
	if env.Log == nil {
		env.Log = hclog.NewNullLogger()
	}
	undecoded := decoder.Undecoded(Refuse, env.Log)
	masks := mask.NewCache(env.MaskKey)
	// The host key is the daemon's, new at every start: the job's client
	// trusts it through the certificate, never by itself.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	var hostKey ssh.Signer
	if err == nil {
		hostKey, err = ssh.NewSignerFromSigner(priv)
	}
	keyErr := err
	return func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc) decoder.Result {
		if decoder.ModeOf(f.Target) != decoder.Decoded {
			return undecoded(ctx, f, client, dial)
		}
		flog := env.Log.With("flow", f.ID, "target", f.Target.Name)
		if env.SSHHostCA == nil || keyErr != nil {
			why := "the daemon has no SSH host CA"
			if keyErr != nil {
				why = "the daemon has no SSH host key: " + keyErr.Error()
			}
			refuse(client, "sluice: cannot decode ssh: "+why)
			return decoder.Result{Err: errors.New(why)}
		}
		inj, err := f.Session.Injection()
		if err != nil {
			var ge *ruleset.GrantError
			if errors.As(err, &ge) {
				refuse(client, fmt.Sprintf("sluice: no ssh credential for this job on target %q: %s. Sluice holds this host's credentials and logs in only for jobs the runner's ruleset grants them to (`sluice rules explain` shows the grants).", ge.Target, ge.Reason))
			} else {
				refuse(client, "sluice: credential injection failed: "+err.Error())
			}
			return decoder.Result{Err: err}
		}
		if inj == nil {
			// Monitor mode, and the flow was granted nothing: without a
			// credential Sluice cannot log in, so the flow is relayed
			// as an undecoded one would be.
			flog.Warn("monitor mode: no credential granted, so the ssh flow is relayed without inspection")
			return undecoded(ctx, f, client, dial)
		}
		st, err := Serve(ctx, Params{Flow: f, Client: client, Dial: dial, Injection: inj, HostCA: env.SSHHostCA,
			HostKey: hostKey, Masks: masks, Log: flog})
		return st.Result(f.Session, err, "host_key", st.HostKey, "cert_key_id", st.CertKeyID, "channels", st.Channels)
	}
}
