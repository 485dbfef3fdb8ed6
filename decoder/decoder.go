// Package decoder is the shared layer every protocol runs on, and the
// registry the protocols plug into.
//
// A protocol is a folder below this one (decoder/postgres, decoder/tcp,
// decoder/mysql, decoder/ssh) that registers itself once, in an init
// function, with Register; decoder/all imports every protocol folder, so
// adding a protocol is its folder plus one line there. The daemon builds
// its flow handlers from the registry (Protocols), and sluice rules
// test|explain and sluice doctor ask it what each protocol gets (ModeOf,
// Lookup).
//
// This package owns what is not about a wire format:
//   - the flow vocabulary the interceptor hands a protocol (Flow, Handler,
//     Result);
//   - deciding a command (Command, Decider.Decide): the session's verdict
//     and the masker it needs, refused when the masker cannot be built;
//   - holds and result gating (Decider.AwaitHold, Decider.CheckResult,
//     ResultGate): waiting on a hold before a command runs, deciding a
//     result again at the rows where a result rule can change its verdict,
//     and stopping a refused command on the server with the protocol's
//     own cancel (Canceler, CancelCommand), all failing closed;
//   - masking plans (Plans, Command.Plan): a result's columns named as
//     the origins mask rules match (schema, table, column, type) by the
//     protocol's Origins, and the last plan reused for the next result
//     with the same masker and the same column descriptions;
//   - the recording of a decoded session's client hop from the end of
//     authentication (WireTap), and its byte counts (CountConn);
//   - the classification cache, with the protocol's classifier and
//     normaliser plugged in (Cache);
//   - TLS on either hop (UpstreamTLS, ServerHandshake, ClientHandshake);
//   - the queue of answers a server owes a decoded session, pushed by
//     the client side and popped by the server side (Owed);
//   - the opaque relay with its recording tap (Relay, Tapped), and what
//     happens to flows of a protocol this build cannot decode (Undecoded).
//
// A protocol keeps its framing, its classifier, its own error for a
// refusal, and what it must do in its own terms. It imports no protocol;
// protocols never import each other.
package decoder

import "github.com/sluicehq/sluice/ruleset"

// Mode is what a target's flows get in this build.
type Mode uint8

const (
	// Decoded flows are decoded and every command is decided by the
	// ruleset.
	Decoded Mode = iota
	// Opaque flows are relayed byte for byte and recorded as metadata:
	// tcp targets, by design.
	Opaque
	// RelayedUndecoded flows have no decoder in this build and their
	// target says undecoded = "relay": they are relayed uninspected, as
	// Opaque flows are.
	RelayedUndecoded
	// RefusedUndecoded flows have no decoder in this build and their
	// target refuses them (undecoded = "refuse", the default).
	RefusedUndecoded
)

// String returns the mode as the CLI and the log show it.
func (m Mode) String() string {
	switch m {
	case Opaque:
		return "relayed opaquely"
	case RelayedUndecoded:
		return "relayed opaquely (undecoded)"
	case RefusedUndecoded:
		return "refused undecoded"
	}
	return "decoded"
}

// ModeOf returns what t's flows get in this build, from the registry.
func ModeOf(t *ruleset.Target) Mode {
	p, _ := Lookup(t.Protocol)
	switch {
	case p.Opaque:
		return Opaque
	case p.New != nil && (p.Decodes == nil || p.Decodes(t)):
		return Decoded
	case t.Undecoded == ruleset.UndecodedRelay:
		return RelayedUndecoded
	}
	return RefusedUndecoded
}

// Decodes reports whether this build decodes protocol (or, for tcp,
// relays it opaquely by design).
func Decodes(protocol string) bool {
	p, _ := Lookup(protocol)
	return p.New != nil
}

// WhyUndecoded says why t's flows are not decoded: this build has no
// decoder for its protocol, or the decoder cannot decode this target.
func WhyUndecoded(t *ruleset.Target) string {
	p, _ := Lookup(t.Protocol)
	if p.New != nil && p.NotDecoded != "" {
		return p.NotDecoded
	}
	return "this build has no " + t.Protocol + " decoder"
}

// UndecodedRule is the rule ID a refusal of t's undecoded flows names: the
// target's undecoded setting decides them, not a policy.
func UndecodedRule(t *ruleset.Target) string { return "target/" + t.Name + "/undecoded" }
