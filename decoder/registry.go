package decoder

import (
	"crypto"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/ruleset"
)

// Protocol is one protocol's registration: what the daemon, sluice rules
// and sluice doctor need to know of it. Only Name is required; a protocol
// without New has no decoder in this build, and its flows are relayed
// undecoded or refused as each target says (Undecoded).
type Protocol struct {
	// Name is the protocol as target blocks spell it (ruleset.ProtoPostgres).
	Name string
	// New builds the protocol's flow handler once per daemon, from the
	// daemon's shared parts. Nil: this build does not decode the protocol.
	New func(Env) Handler
	// Decodes, when set, says which of the protocol's targets New can
	// decode (an ssh target needs a credential for Sluice to log in
	// with); the flows of the others are relayed undecoded or refused as
	// each target says, for the reason NotDecoded gives. Nil: every
	// target, when New is set.
	Decodes    func(*ruleset.Target) bool
	NotDecoded string
	// DecodedWhen, when set, says that a decoded target's flows are told
	// apart one by one, and which are decoded (k8s: those whose client
	// trusts Sluice's CA, by its TLS server name); the others are relayed
	// or refused as the target's undecoded setting says, for the reason
	// NotDecoded gives.
	DecodedWhen string
	// Opaque marks a protocol relayed byte for byte by design (tcp): its
	// flows count as served, and nothing about them is undecoded.
	Opaque bool
	// Refuse tells a client, in the protocol's own terms, that its
	// connection is refused (a denied flow, an undecoded target that
	// refuses). Nil closes the connection.
	Refuse Refuser
	// Busy tells a client that too many sessions are open (limit is the
	// cap). Nil closes the connection.
	Busy func(c net.Conn, limit int)
	// Dissector and Port are how Wireshark knows the protocol: its
	// dissector's name and the port it expects it on, for sluice export
	// --format pcap's hint when a session's server used another port.
	// Empty: no hint.
	Dissector string
	Port      uint16
	// Classify turns a command's text into what the ruleset decides on,
	// for sluice rules test and explain. Nil: the protocol's commands are
	// not classified from text, and a rule test must give a statement.
	Classify func(text string) (ruleset.Statement, error)
}

// Env are the daemon's parts a protocol's handler may use. They are shared
// by every flow of the daemon.
type Env struct {
	// ClientTLS terminates TLS from clients with leaf certificates of the
	// daemon's CA, named after the address the client dialed. Protocols
	// clone it before changing it.
	ClientTLS *tls.Config
	// MaskKey keys the hash masking function (data_dir/mask.key).
	MaskKey []byte
	// MaxMessage bounds every protocol message either side may send.
	MaxMessage int
	// Log is the daemon's logger, named after the protocol.
	Log hclog.Logger
	// SSHHostCA signs the host certificates the SSH decoder presents to
	// jobs (data_dir/ssh_host_ca, trusted through the @cert-authority line
	// sluice install writes). Nil: ssh flows cannot be decoded.
	SSHHostCA crypto.Signer
}

var (
	regMu    sync.RWMutex
	registry = map[string]Protocol{}
)

// Register adds a protocol. It is called from the protocol's init
// function and panics on a duplicate or unnamed registration, which is a
// programming error.
func Register(p Protocol) {
	regMu.Lock()
	defer regMu.Unlock()
	if p.Name == "" {
		panic("decoder: Register of a protocol without a name")
	}
	if _, dup := registry[p.Name]; dup {
		panic(fmt.Sprintf("decoder: Register called twice for %s", p.Name))
	}
	registry[p.Name] = p
}

// Lookup returns the registration of a protocol, and whether there is
// one. A protocol nobody registered has no decoder and no refusal.
func Lookup(name string) (Protocol, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	p, ok := registry[name]
	if !ok {
		p.Name = name
	}
	return p, ok
}

// Protocols returns every registered protocol, by name.
func Protocols() []Protocol {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]Protocol, 0, len(registry))
	for _, p := range registry {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Protocol) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}
