package decoder

import (
	"context"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// Undecoded returns the handler for the flows of a protocol this build cannot
// decode (or of a target its decoder cannot decode, WhyUndecoded), as the
// flow's target says (ruleset.Target.Undecoded). Relayed,
// the bytes pass unread and the session records metadata only, whatever
// its record level: without a decoder Sluice cannot tell where a
// protocol's authentication ends, and the wire may carry a password.
// Refused, the client gets refuse's message in its protocol's terms
// (nil: the connection is closed) and the refusal is logged at warn
// naming the rule. In monitor mode a refusal is logged and the flow is
// relayed.
func Undecoded(refuse Refuser, log hclog.Logger) Handler {
	return func(ctx context.Context, f *Flow, client net.Conn, dial DialFunc) Result {
		return NotDecoded(ctx, f, client, dial, NotDecodedFlow{Why: WhyUndecoded(f.Target), Refuse: ModeOf(f.Target) == RefusedUndecoded}, refuse, log)
	}
}

// NotDecodedFlow says why one flow is not decoded, and whether it is
// refused (else relayed), for NotDecoded.
type NotDecodedFlow struct {
	Why    string
	Refuse bool
	// Fields are added to the flow log line.
	Fields []any
}

// NotDecoded relays or refuses one flow that is not decoded, as nd says,
// and logs and reports it as Undecoded describes. A protocol that tells
// its decoded flows from the others one by one (k8s, by the client's TLS
// server name) calls it for the others.
func NotDecoded(ctx context.Context, f *Flow, client net.Conn, dial DialFunc, nd NotDecodedFlow, refuse Refuser, log hclog.Logger) Result {
	t := f.Target
	flog := log.With("flow", f.ID, "target", t.Name, "protocol", t.Protocol, "orig_dst", f.Dest.String(),
		"pid", f.Process.TGID, "uid", f.Process.UID, "comm", f.Process.Comm, "identity", f.Identity.Level, "job", f.Identity.Job)
	fields := append([]any{"inspected", false, "undecoded", t.Undecoded}, nd.Fields...)
	if nd.Refuse {
		rule := UndecodedRule(t)
		reason := fmt.Sprintf("%s, and target %s refuses flows it cannot inspect", nd.Why, t.Name)
		if f.Match.Ruleset().Mode() != ruleset.Monitor {
			flog.Warn("flow refused: it cannot be decoded", "rule", rule, "reason", reason)
			if refuse != nil {
				refuse(client, rule, reason)
			} else {
				client.Close()
			}
			return Result{Err: fmt.Errorf("refused by rule %s: %s", rule, reason), Fields: append(fields, "rule", rule)}
		}
		flog.Warn("flow would be refused (monitor mode): it cannot be decoded", "rule", rule, "reason", reason)
	}
	flog.Info("flow not inspected: relaying it opaquely", "why", nd.Why)
	up, err := dial(ctx)
	if err != nil {
		client.Close()
		return Result{Err: fmt.Errorf("dial upstream %s: %w", f.Dest, err), Fields: fields}
	}
	c, err := Relay(ctx, client, up)
	return Result{BytesFromClient: c.ClientToServer, BytesToClient: c.ServerToClient, Err: err, Fields: fields}
}
