// Package k8s decodes the Kubernetes API for Sluice: kubectl, helm and
// client-go programs, over HTTP/2 or HTTP/1.1 in TLS that Sluice
// terminates. Every request is resolved the way the API server resolves
// it (k8s.io/apiserver's RequestInfoFactory) into a verb, a group, a
// resource, a subresource, a namespace and a name, plus the images and
// privileges of a pod spec it sends, and decided by the ruleset: denied
// with a 403 Status that kubectl prints as it prints RBAC's, held for a
// human, or relayed with its credential injected. Secrets, ConfigMaps,
// pod specs' env and pod logs are masked (JSON, YAML, watches item by
// item); exec and attach are recorded as the terminal they are, and
// port-forward as metadata.
//
// A flow is decoded when its client trusts Sluice's CA: the kubeconfig
// sluice kubeconfig writes names ServerName as the cluster's
// tls-server-name, and Sluice sees that name in the ClientHello. Any other
// flow (a kubeconfig that pins the cluster's own CA, and perhaps its own
// client certificate) is relayed opaquely or refused, as its target's
// undecoded setting says.
package k8s

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

func init() {
	decoder.Register(decoder.Protocol{
		Name:     ruleset.ProtoK8s,
		New:      newHandler,
		Classify: Classify,
		// Decoded flows are those of clients that trust Sluice's CA; the
		// others are told apart per flow, by their TLS server name.
		NotDecoded:  "the job's client does not trust Sluice's CA (its TLS server name is not " + ServerName + ", which a kubeconfig from sluice kubeconfig sends)",
		DecodedWhen: "when the job's client trusts Sluice's CA: its TLS server name is " + ServerName + ", as a kubeconfig from sluice kubeconfig sends",
		Dissector:   "tls",
		Port:        6443,
	})
}

// newHandler serves the flows of k8s targets.
func newHandler(env decoder.Env) decoder.Handler {
	if env.Log == nil {
		env.Log = hclog.NewNullLogger()
	}
	masks := mask.NewCache(env.MaskKey)
	refused := newRefusals()
	return func(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc) decoder.Result {
		flog := env.Log.With("flow", f.ID, "target", f.Target.Name)
		h, pc, err := peekHello(client)
		if err != nil {
			client.Close()
			return decoder.Result{Err: fmt.Errorf("read the tls client hello: %w", err)}
		}
		if h.sni != ServerName {
			return undecoded(ctx, f, pc, dial, h, env.Log)
		}
		if env.ClientTLS == nil {
			pc.Close()
			return decoder.Result{Err: errors.New("the daemon has no CA to terminate TLS with")}
		}
		return serve(ctx, f, pc, dial, env, masks, refused, flog)
	}
}

// undecoded relays or refuses a flow Sluice does not decode, as its
// target's undecoded setting says (refuse by default); in monitor mode it
// is relayed. Relayed, the flow is recorded as metadata, with the TLS
// server name it sent.
func undecoded(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc, h hello, log hclog.Logger) decoder.Result {
	var why string
	switch {
	case h.silent:
		why = fmt.Sprintf("the job's client sent nothing within %v (a Kubernetes client starts TLS at once), so it is not one that trusts Sluice's CA", firstByteWait)
	case !h.tls:
		why = "the job's client does not speak TLS, so it is not one that trusts Sluice's CA"
	case h.sni == "":
		why = fmt.Sprintf("the job's client does not trust Sluice's CA (it sent no TLS server name, not %s; a kubeconfig from sluice kubeconfig sends it)", ServerName)
	default:
		why = fmt.Sprintf("the job's client does not trust Sluice's CA (TLS server name %q, not %s; a kubeconfig from sluice kubeconfig sends it)", h.sni, ServerName)
	}
	return decoder.NotDecoded(ctx, f, client, dial, decoder.NotDecodedFlow{Why: why, Refuse: f.Target.Undecoded != ruleset.UndecodedRelay,
		Fields: []any{"sni", h.sni}}, nil, log)
}

// hello is what the start of a client's bytes said: whether it sent
// anything within firstByteWait, whether that is a TLS ClientHello, and
// the server name it asks for.
type hello struct {
	silent, tls bool
	sni         string
}

// firstByteWait is how long a client may take to send its first byte.
// An HTTPS client sends its ClientHello as soon as it is connected; a
// client that waits for the server to speak first is not a Kubernetes
// client, and its flow goes as the target's undecoded setting says once
// this has passed.
const firstByteWait = time.Second

// helloTimeout bounds the wait for a client's TLS ClientHello.
const helloTimeout = 30 * time.Second

// errHelloRead stops the TLS server once it has the ClientHello.
var errHelloRead = errors.New("client hello read")

// peekHello reads the client's TLS ClientHello and says what it asks
// for, and returns a connection that replays what was read before the
// rest of the client's bytes. The ClientHello is parsed by crypto/tls
// itself, on a connection that keeps what it reads and sends nothing.
// Bytes that are not TLS, or no bytes within firstByteWait, are said too:
// such a flow is not decoded. An error is a connection that failed.
func peekHello(c net.Conn) (hello, net.Conn, error) {
	c.SetReadDeadline(time.Now().Add(firstByteWait))
	first := make([]byte, 1)
	n, err := c.Read(first)
	c.SetReadDeadline(time.Time{})
	if n == 0 {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return hello{silent: true}, c, nil
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return hello{}, nil, err
	}
	if first[0] != 0x16 { // a TLS handshake record
		return hello{}, &replayConn{Conn: c, pre: first}, nil
	}
	rec := &recordingConn{Conn: &replayConn{Conn: c, pre: first}}
	var h hello
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	srv := tls.Server(rec, &tls.Config{GetConfigForClient: func(ch *tls.ClientHelloInfo) (*tls.Config, error) {
		h.sni, h.tls = ch.ServerName, true
		return nil, errHelloRead
	}})
	err = srv.Handshake()
	c.SetReadDeadline(time.Time{})
	if !h.tls {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return hello{}, nil, fmt.Errorf("no complete TLS ClientHello within %v", helloTimeout)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
			return hello{}, nil, err
		}
		// Not a ClientHello after all: relayed or refused as it is.
		return hello{}, &replayConn{Conn: c, pre: rec.buf}, nil
	}
	return h, &replayConn{Conn: c, pre: rec.buf}, nil
}

// recordingConn keeps what is read from it and writes nothing.
type recordingConn struct {
	net.Conn
	buf []byte
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (r *recordingConn) Write(p []byte) (int, error) { return len(p), nil }

// replayConn reads pre before the connection itself.
type replayConn struct {
	net.Conn
	pre []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

var _ io.Reader = (*replayConn)(nil)
