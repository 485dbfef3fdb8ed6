package decoder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/tlsutil"
)

// UpstreamTLS returns the TLS settings of the proxy's own hop to f's
// server, from the target's upstream_tls: cfg to use, whether to attempt
// TLS at all, and whether the session must end when the server declines.
// verify-full checks the server's certificate against the target's
// hostname when it names exactly one, else the original destination's IP.
func UpstreamTLS(f *Flow) (cfg *tls.Config, attempt, required bool, err error) {
	return tlsutil.Upstream(f.Target.UpstreamTLS, upstreamName(f), nil)
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
