package ssh

import (
	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

// No New yet: ssh flows are relayed undecoded or refused (with Refuse) as
// each target says.
func init() {
	decoder.Register(decoder.Protocol{Name: ruleset.ProtoSSH, Refuse: Refuse})
}
