package decoder

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/internal/tlsutil"
)

// UpstreamTLS returns the TLS settings of the proxy's own hop to f's
// server, from the target's upstream_tls: cfg to use, whether to attempt
// TLS at all, and whether the session must end when the server declines.
// verify-full checks the server's certificate against the target's
// hostname when it names exactly one, else the original destination's IP.
//
// The chain is verified against the target's upstream_ca when it names
// one (read at every flow, so a rotated bundle is used at once), else
// against the system roots; an upstream_ca that cannot be read is an
// error, and the flow is closed.
func UpstreamTLS(f *Flow) (cfg *tls.Config, attempt, required bool, err error) {
	var roots *x509.CertPool
	if path := f.Target.UpstreamCA; path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, false, false, fmt.Errorf("read upstream_ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, false, false, fmt.Errorf("upstream_ca %s holds no PEM certificate", path)
		}
	}
	return tlsutil.Upstream(f.Target.UpstreamTLS, upstreamName(f), roots)
}

// upstreamName is the name verify-full checks the server's certificate
// against.
func upstreamName(f *Flow) string {
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

// AsDialed returns client reporting f's original destination as its local
// address, so that a TLS server certificate made for the connection
// names the address the client dialed, not the proxy's loopback address.
func AsDialed(client net.Conn, f *Flow) net.Conn {
	return origConn{Conn: client, local: net.TCPAddrFromAddrPort(f.Dest)}
}

// origConn reports the flow's original destination as its local address.
type origConn struct {
	net.Conn
	local net.Addr
}

func (c origConn) LocalAddr() net.Addr { return c.local }

// SyscallConn exposes the socket underneath, so a decoder can do its own
// reads and writes on it (the bytes are the socket's either way).
func (c origConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("get raw connection: not a socket")
	}
	return sc.SyscallConn()
}

// HandshakeTimeout bounds a TLS handshake on either hop: a peer that stops
// half way does not hold a session open.
const HandshakeTimeout = 30 * time.Second

// ServerHandshake terminates TLS from a client on c with cfg (the
// daemon CA's leaf certificates), within HandshakeTimeout and ctx.
func ServerHandshake(ctx context.Context, c net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	return handshake(ctx, tls.Server(c, cfg), "client")
}

// ClientHandshake starts TLS to the server on c with cfg (UpstreamTLS's
// settings), within HandshakeTimeout and ctx.
func ClientHandshake(ctx context.Context, c net.Conn, cfg *tls.Config) (*tls.Conn, error) {
	return handshake(ctx, tls.Client(c, cfg), "upstream")
}

func handshake(ctx context.Context, tc *tls.Conn, hop string) (*tls.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("%s tls handshake: %w", hop, err)
	}
	return tc, nil
}

// UpstreamSettings are the TLS settings of the proxy's own hop to a
// flow's server (UpstreamTLS): Config to use, whether to Attempt TLS, and
// whether it is Required (the session ends when the server declines).
type UpstreamSettings struct {
	Config   *tls.Config
	Attempt  bool
	Required bool
}

// ServeFunc serves one decoded flow: client is the job's connection
// reporting the address it dialed (AsDialed), up the target's upstream
// TLS settings and log the flow's logger.
type ServeFunc func(ctx context.Context, f *Flow, client net.Conn, dial DialFunc, up UpstreamSettings, log hclog.Logger) Result

// DecodedHandler makes a protocol's Handler of serve: each flow gets its logger
// (env.Log named with the flow and its target), its target's upstream TLS
// settings (a flow whose settings cannot be built is closed, with the
// error in its Result) and its client as dialed.
func DecodedHandler(env Env, serve ServeFunc) Handler {
	if env.Log == nil {
		env.Log = hclog.NewNullLogger()
	}
	return func(ctx context.Context, f *Flow, client net.Conn, dial DialFunc) Result {
		cfg, attempt, required, err := UpstreamTLS(f)
		if err != nil {
			client.Close()
			return Result{Err: fmt.Errorf("upstream tls: %w", err)}
		}
		return serve(ctx, f, AsDialed(client, f), dial, UpstreamSettings{Config: cfg, Attempt: attempt, Required: required},
			env.Log.With("flow", f.ID, "target", f.Target.Name))
	}
}
