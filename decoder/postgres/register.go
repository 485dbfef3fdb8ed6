package postgres

import (
	"context"
	"net"

	"github.com/hashicorp/go-hclog"
	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

func init() {
	decoder.Register(decoder.Protocol{
		Name:     ruleset.ProtoPostgres,
		New:      newHandler,
		Refuse:   Refuse,
		Busy:     RefuseBusy,
		Classify: Classify,
		// Wireshark's name and port for the protocol.
		Dissector: "pgsql",
		Port:      5432,
	})
}

// newHandler serves flows to postgres targets. The classification cache,
// the cancel-key registry, the pool of server connections and the maskers
// are shared by every session of the daemon; client TLS is terminated
// with the daemon CA's leaf certificates.
func newHandler(env decoder.Env) decoder.Handler {
	cache := NewCache(0)
	cancels := NewCancels()
	pool := NewPool()
	masks := mask.NewCache(env.MaskKey)
	var clientTLS = env.ClientTLS
	if clientTLS != nil {
		clientTLS = clientTLS.Clone()
		clientTLS.NextProtos = []string{"postgresql"} // PostgreSQL 17 clients offer it
	}
	return decoder.DecodedHandler(env, func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc, up decoder.UpstreamSettings, flog hclog.Logger) decoder.Result {
		sess := f.Session
		st, err := Serve(ctx, Params{
			Client:     client,
			Dial:       dial,
			Session:    sess,
			Classify:   cache.Classify,
			Upstream:   UpstreamTLS(up),
			ClientTLS:  clientTLS,
			Cancels:    cancels,
			Masks:      masks,
			MaxMessage: env.MaxMessage,
			Log:        flog,
			Pool:       pool,
			PoolSize:   f.Target.UpstreamPool,
			PoolScope:  PoolScope(f, up),
		})
		return st.Result(sess, err)
	})
}
