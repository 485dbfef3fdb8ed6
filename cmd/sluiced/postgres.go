package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/decoder/postgres"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/tlsutil"
)

// postgresHandler serves flows to postgres targets with the wire decoder.
// The classification cache and the cancel-key registry are shared by every
// session; client TLS is terminated with leaf certificates from the
// daemon's CA.
func postgresHandler(ca *tlsutil.CA, maskKey []byte, maxMessage int, log hclog.Logger) interceptor.Handler {
	cache := postgres.NewCache(0)
	cancels := postgres.NewCancels()
	masks := mask.NewCache(maskKey)
	clientTLS := ca.ServerConfig()
	clientTLS.NextProtos = []string{"postgresql"} // PostgreSQL 17 clients offer it
	return func(ctx context.Context, f *interceptor.Flow, client net.Conn, dial interceptor.DialFunc) interceptor.Result {
		flog := log.With("flow", f.ID, "target", f.Target.Name)
		cfg, attempt, required, err := tlsutil.Upstream(f.Target.UpstreamTLS, upstreamName(f), nil)
		if err != nil {
			client.Close()
			return interceptor.Result{Err: fmt.Errorf("upstream tls: %w", err)}
		}
		sess := f.Session
		// The leaf certificate names the address the client dialed, not
		// the proxy's loopback address.
		client = origConn{Conn: client, local: net.TCPAddrFromAddrPort(f.Dest)}
		st, err := postgres.Serve(ctx, postgres.Params{
			Client:     client,
			Dial:       dial,
			Session:    sess,
			Classify:   cache.Classify,
			Upstream:   postgres.UpstreamTLS{Config: cfg, Attempt: attempt, Required: required},
			ClientTLS:  clientTLS,
			Cancels:    cancels,
			Masks:      masks,
			MaxMessage: maxMessage,
			Log:        flog,
		})
		statements, denied := sess.Counts()
		fields := []any{"db_user", st.User, "database", st.Database, "statements", statements, "denied", denied,
			"client_tls", st.ClientTLS, "upstream_tls", st.UpstreamTLS}
		if st.Credential != "" {
			fields = append(fields, "credential", st.Credential, "client_user", st.ClientUser)
		}
		return interceptor.Result{BytesFromClient: st.BytesFromClient, BytesToClient: st.BytesToClient, Err: err, Fields: fields}
	}
}

// upstreamName is the name verify-full checks the server's certificate
// against: the target's hostname when it names exactly one, else the
// original destination's IP.
func upstreamName(f *interceptor.Flow) string {
	host := ""
	for _, a := range f.Target.Addresses {
		if a.Host != "" {
			if host != "" && host != a.Host {
				host = ""
				break
			}
			host = a.Host
		}
	}
	if host != "" {
		return host
	}
	return f.Dest.Addr().String()
}

// origConn reports the flow's original destination as its local address.
type origConn struct {
	net.Conn
	local net.Addr
}

func (c origConn) LocalAddr() net.Addr { return c.local }

// SyscallConn exposes the socket underneath, so the PostgreSQL decoder can
// do its own reads and writes on it (the bytes are the socket's either
// way).
func (c origConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("get raw connection: not a socket")
	}
	return sc.SyscallConn()
}
