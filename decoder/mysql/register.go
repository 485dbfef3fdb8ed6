package mysql

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
		Name:     ruleset.ProtoMySQL,
		New:      newHandler,
		Refuse:   Refuse,
		Busy:     RefuseBusy,
		Classify: Classify,
		// Wireshark's name and port for the protocol.
		Dissector: "mysql",
		Port:      3306,
	})
}

// newHandler serves flows to mysql targets. The classification cache and
// the maskers are shared by every session of the daemon; client TLS is
// terminated with the daemon CA's leaf certificates.
func newHandler(env decoder.Env) decoder.Handler {
	cache := NewCache(0)
	masks := mask.NewCache(env.MaskKey)
	return decoder.DecodedHandler(env, func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc, up decoder.UpstreamSettings, flog hclog.Logger) decoder.Result {
		sess := f.Session
		st, err := Serve(ctx, Params{
			Client:     client,
			Dial:       dial,
			Session:    sess,
			Classify:   cache.Classify,
			Upstream:   UpstreamTLS(up),
			ClientTLS:  env.ClientTLS,
			Masks:      masks,
			MaxMessage: env.MaxMessage,
			Log:        flog,
		})
		return st.Result(sess, err, "server_version", st.ServerVersion)
	})
}
