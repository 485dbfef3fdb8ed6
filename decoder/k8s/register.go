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
		sni, pc, err := peekServerName(client)
		if err != nil {
			client.Close()
			return decoder.Result{Err: fmt.Errorf("read the tls client hello: %w", err)}
		}
		if sni != ServerName {
			return undecoded(ctx, f, pc, dial, sni, flog)
		}
		if env.ClientTLS == nil {
			pc.Close()
			return decoder.Result{Err: errors.New("the daemon has no CA to terminate TLS with")}
		}
		return serve(ctx, f, pc, dial, env, masks, refused, flog)
	}
}

// undecoded relays or refuses a flow whose client does not trust Sluice's
// CA, as its target's undecoded setting says (refuse by default); in
// monitor mode it is relayed. Relayed, the flow is recorded as metadata:
// its TLS server name and its byte counts.
func undecoded(ctx context.Context, f *decoder.Flow, client net.Conn, dial decoder.DialFunc, sni string, log hclog.Logger) decoder.Result {
	t := f.Target
	why := fmt.Sprintf("the job's client does not trust Sluice's CA (TLS server name %q, not %s; a kubeconfig from sluice kubeconfig sends it)", sni, ServerName)
	if sni == "" {
		why = fmt.Sprintf("the job's client does not trust Sluice's CA (it sent no TLS server name, not %s; a kubeconfig from sluice kubeconfig sends it)", ServerName)
	}
	fields := []any{"inspected", false, "undecoded", t.Undecoded, "sni", sni}
	if t.Undecoded != ruleset.UndecodedRelay {
		rule := decoder.UndecodedRule(t)
		reason := why + ", and target " + t.Name + " refuses flows it cannot inspect"
		if f.Match.Ruleset().Mode() != ruleset.Monitor {
			log.Warn("flow refused: it cannot be decoded", "rule", rule, "reason", reason)
			client.Close()
			return decoder.Result{Err: fmt.Errorf("refused by rule %s: %s", rule, reason), Fields: append(fields, "rule", rule)}
		}
		log.Warn("flow would be refused (monitor mode): it cannot be decoded", "rule", rule, "reason", reason)
	}
	log.Info("flow not inspected: relaying it opaquely", "why", why)
	up, err := dial(ctx)
	if err != nil {
		client.Close()
		return decoder.Result{Err: fmt.Errorf("dial upstream %s: %w", f.Dest, err), Fields: fields}
	}
	c, err := decoder.Relay(ctx, client, up)
	return decoder.Result{BytesFromClient: c.ClientToServer, BytesToClient: c.ServerToClient, Err: err, Fields: fields}
}

// helloTimeout bounds the wait for a client's TLS ClientHello.
const helloTimeout = 30 * time.Second

// errHelloRead stops the TLS server once it has the ClientHello.
var errHelloRead = errors.New("client hello read")

// peekServerName reads the client's TLS ClientHello and returns the server
// name it asks for, and a connection that replays what was read before
// the rest of the client's bytes. The ClientHello is parsed by
// crypto/tls itself, on a connection that keeps what it reads and sends
// nothing.
func peekServerName(c net.Conn) (string, net.Conn, error) {
	rec := &recordingConn{Conn: c}
	var sni string
	got := false
	c.SetReadDeadline(time.Now().Add(helloTimeout))
	srv := tls.Server(rec, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni, got = h.ServerName, true
		return nil, errHelloRead
	}})
	err := srv.Handshake()
	c.SetReadDeadline(time.Time{})
	if !got {
		if err == nil {
			err = errors.New("no client hello")
		}
		return "", nil, err
	}
	return sni, &replayConn{Conn: c, pre: rec.buf}, nil
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
