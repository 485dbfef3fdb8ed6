// Package enforcer turns ruleset decisions into what a session does: it
// holds the protocol-neutral vocabulary decoders speak (a command, a
// verdict, an event), the Session that answers Decide for each command,
// masking, approval holds and the recorder. It never sees a wire format and
// never imports a decoder.
//
// The package is filled in by the PostgreSQL, recording, masking and
// approvals work; interception alone needs none of it.
package enforcer
