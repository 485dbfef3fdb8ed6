// Package decoder names what this build does with each protocol a target
// may speak. The decoders themselves live one per folder below it
// (decoder/postgres, decoder/tcp); the daemon registers each one's
// handler, and this list says which of the ruleset's protocols have one,
// so that the daemon, sluice rules explain and sluice doctor agree.
package decoder

import "github.com/sluicehq/sluice/ruleset"

// decoded lists the protocols this build decodes. tcp is relayed
// opaquely by design and counts as served. Adding a decoder adds its
// protocol here and its handler in cmd/sluiced.
var decoded = map[string]bool{ruleset.ProtoTCP: true, ruleset.ProtoPostgres: true}

// Decodes reports whether this build has a decoder for protocol.
func Decodes(protocol string) bool { return decoded[protocol] }

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

// ModeOf returns what t's flows get in this build.
func ModeOf(t *ruleset.Target) Mode {
	switch {
	case t.Protocol == ruleset.ProtoTCP:
		return Opaque
	case Decodes(t.Protocol):
		return Decoded
	case t.Undecoded == ruleset.UndecodedRelay:
		return RelayedUndecoded
	}
	return RefusedUndecoded
}

// UndecodedRule is the rule ID a refusal of t's undecoded flows names: the
// target's undecoded setting decides them, not a policy.
func UndecodedRule(t *ruleset.Target) string { return "target/" + t.Name + "/undecoded" }
