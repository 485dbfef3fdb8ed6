// Package tcp is the opaque protocol: tcp targets' bytes are relayed both
// ways without being looked at (decoder.Relay), and recorded at level full
// through the session's wire tap.
package tcp

import (
	"context"
	"fmt"
	"net"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/ruleset"
)

func init() {
	decoder.Register(decoder.Protocol{
		Name:   ruleset.ProtoTCP,
		Opaque: true,
		New:    func(decoder.Env) decoder.Handler { return serve },
	})
}

// serve relays a flow opaquely.
func serve(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc) decoder.Result {
	up, err := dial(ctx)
	if err != nil {
		client.Close()
		return decoder.Result{Err: fmt.Errorf("dial upstream %s: %w", f.Dest, err)}
	}
	var c decoder.Counts
	if f.Session.WantsWire() {
		c, err = decoder.RelayTapped(ctx, client, up, f.Session.Wire)
	} else {
		c, err = decoder.Relay(ctx, client, up)
	}
	return decoder.Result{BytesFromClient: c.ClientToServer, BytesToClient: c.ServerToClient, Err: err}
}
