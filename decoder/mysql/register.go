package mysql

import (
	"context"
	"fmt"
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
	})
}

// newHandler serves flows to mysql targets. The classification cache and
// the maskers are shared by every session of the daemon; client TLS is
// terminated with the daemon CA's leaf certificates.
func newHandler(env decoder.Env) decoder.Handler {
	cache := NewCache(0)
	masks := mask.NewCache(env.MaskKey)
	if env.Log == nil {
		env.Log = hclog.NewNullLogger()
	}
	return func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc) decoder.Result {
		flog := env.Log.With("flow", f.ID, "target", f.Target.Name)
		cfg, attempt, required, err := decoder.UpstreamTLS(f)
		if err != nil {
			client.Close()
			return decoder.Result{Err: fmt.Errorf("upstream tls: %w", err)}
		}
		sess := f.Session
		st, err := Serve(ctx, Params{
			Client:     decoder.AsDialed(client, f),
			Dial:       dial,
			Session:    sess,
			Classify:   cache.Classify,
			Upstream:   UpstreamTLS{Config: cfg, Attempt: attempt, Required: required},
			ClientTLS:  env.ClientTLS,
			Masks:      masks,
			MaxMessage: env.MaxMessage,
			Log:        flog,
		})
		return st.Result(sess, err, "server_version", st.ServerVersion)
	}
}
