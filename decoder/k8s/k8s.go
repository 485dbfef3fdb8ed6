// Package k8s holds Sluice's Kubernetes API code. This build has no
// decoder for it yet: k8s flows are relayed undecoded or closed as each
// target says, since nothing can be said to a TLS client before its
// handshake.
package k8s

import (
	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

func init() {
	decoder.Register(decoder.Protocol{Name: ruleset.ProtoK8s})
}
