package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkGoroutines fails the test if it ends with more goroutines than it
// started with. Tests using it must not run in parallel.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines at the end, %d at the start:\n%s", n, before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// localAddrConn reports a chosen local address, the way a proxy hands
// tls.Server a connection showing the client's original destination.
type localAddrConn struct {
	net.Conn
	local net.Addr
}

func (c localAddrConn) LocalAddr() net.Addr { return c.local }

// handshake runs a real TLS handshake over loopback TCP and returns the
// client's and the server's errors. wrap, if set, wraps the accepted
// connection before tls.Server sees it.
func handshake(t *testing.T, server, client *tls.Config, wrap func(net.Conn) net.Conn) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if wrap != nil {
			c = wrap(c)
		}
		done <- tls.Server(c, server).Handshake()
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	clientErr = tls.Client(c, client).Handshake()
	c.Close() // a client that gave up unblocks the server
	return clientErr, <-done
}

func testCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestUpstream checks each mode against a server whose certificate, from
// a CA the process does not otherwise trust, names db.internal, localhost
// and 127.0.0.1.
func TestUpstream(t *testing.T) {
	checkGoroutines(t)
	serverCA, otherCA := testCA(t), testCA(t)
	cert, err := serverCA.leaf("db.internal", net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}

	tests := []struct {
		mode, name string
		roots      string // "server", "other" or "system"
		required   bool
		ok         bool
	}{
		{ModePrefer, "wrong.example", "system", false, true},
		{ModeRequire, "wrong.example", "system", true, true},
		{ModeVerifyCA, "db.internal", "server", true, true},
		{ModeVerifyCA, "wrong.example", "server", true, true}, // host names are not checked
		{ModeVerifyCA, "db.internal", "other", true, false},
		{ModeVerifyCA, "db.internal", "system", true, false}, // the system pool does not know the test CA
		{ModeVerifyFull, "db.internal", "server", true, true},
		{ModeVerifyFull, "127.0.0.1", "server", true, true}, // IP SAN
		{ModeVerifyFull, "localhost", "server", true, true},
		{ModeVerifyFull, "wrong.example", "server", true, false},
		{ModeVerifyFull, "127.0.0.2", "server", true, false},
		{ModeVerifyFull, "db.internal", "other", true, false},
		{ModeVerifyFull, "db.internal", "system", true, false},
	}
	pools := map[string]*x509.CertPool{"server": serverCA.Pool(), "other": otherCA.Pool(), "system": nil}
	for _, tt := range tests {
		t.Run(tt.mode+"/"+tt.name+"/"+tt.roots, func(t *testing.T) {
			cfg, attempt, required, err := Upstream(tt.mode, tt.name, pools[tt.roots])
			if err != nil || !attempt || required != tt.required || cfg == nil {
				t.Fatalf("Upstream = %v, attempt %v, required %v, %v; want a config, attempt, required %v", cfg, attempt, required, err, tt.required)
			}
			if cfg.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion %x, want TLS 1.2", cfg.MinVersion)
			}
			cerr, _ := handshake(t, server, cfg, nil)
			if tt.ok && cerr != nil {
				t.Errorf("handshake failed: %v", cerr)
			}
			if !tt.ok && (cerr == nil || !strings.Contains(cerr.Error(), "certificate")) {
				t.Errorf("handshake error %v; want a certificate verification failure", cerr)
			}
		})
	}
}

func TestUpstreamNoTLS(t *testing.T) {
	cfg, attempt, required, err := Upstream(ModeDisable, "db.internal", nil)
	if cfg != nil || attempt || required || err != nil {
		t.Errorf("disable: %v, %v, %v, %v; want nothing", cfg, attempt, required, err)
	}
	for _, mode := range []string{"", "allow", "verify_full", "VERIFY-FULL"} {
		if _, _, _, err := Upstream(mode, "db.internal", nil); !errors.Is(err, ErrUnknownMode) {
			t.Errorf("mode %q: error %v, want ErrUnknownMode", mode, err)
		}
	}
	if _, _, _, err := Upstream(ModeVerifyFull, "", nil); err == nil {
		t.Error("verify-full without a server name: no error")
	}
}

// TestServerConfig checks that what clients verifying with the CA's pool
// see: leaves naming whatever the client dialed.
func TestServerConfig(t *testing.T) {
	checkGoroutines(t)
	ca := testCA(t)
	dest := func(c net.Conn) net.Conn {
		return localAddrConn{c, &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 5432}}
	}
	tests := []struct {
		name string
		sni  string // the name the client verifies
		wrap func(net.Conn) net.Conn
		ok   bool
	}{
		{"dns name", "db.internal", nil, true},
		{"dns name with trailing dot", "db.internal.", nil, true},
		{"loopback ip", "127.0.0.1", nil, true},
		{"localhost", "localhost", nil, true},
		{"original destination", "10.0.0.5", dest, true},
		{"ip not ours", "10.0.0.6", dest, false},
		{"proxy ip when wrapped", "127.0.0.1", dest, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := &tls.Config{ServerName: tt.sni, RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
			cerr, serr := handshake(t, ca.ServerConfig(), client, tt.wrap)
			if tt.ok && (cerr != nil || serr != nil) {
				t.Errorf("handshake: client %v, server %v", cerr, serr)
			}
			if !tt.ok && (cerr == nil || !strings.Contains(cerr.Error(), "certificate")) {
				t.Errorf("handshake error %v; want a certificate verification failure", cerr)
			}
		})
	}

	// An older TLS version is refused.
	old := &tls.Config{ServerName: "db.internal", RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}
	if cerr, _ := handshake(t, ca.ServerConfig(), old, nil); cerr == nil {
		t.Error("TLS 1.1 client accepted")
	}
}

func TestLeaf(t *testing.T) {
	ca := testCA(t)
	ip := net.IPv4(127, 0, 0, 1)
	c, err := ca.leaf("DB.Internal", ip)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Leaf
	opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := l.Verify(opts); err != nil {
		t.Errorf("leaf does not verify against the CA: %v", err)
	}
	for _, h := range []string{"db.internal", "localhost", "127.0.0.1"} {
		if err := l.VerifyHostname(h); err != nil {
			t.Errorf("leaf does not name %s: %v", h, err)
		}
	}
	if got := l.NotAfter.Sub(l.NotBefore); got < 7*24*time.Hour || got > 7*24*time.Hour+2*time.Hour {
		t.Errorf("leaf valid for %s, want about 7 days", got)
	}
	if l.IsCA || len(l.ExtKeyUsage) != 1 || l.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("leaf IsCA %v, ExtKeyUsage %v; want a server-auth leaf", l.IsCA, l.ExtKeyUsage)
	}

	// Cached, and renewed when less than a day is left.
	if c2, _ := ca.leaf("db.internal", ip); c2 != c {
		t.Error("second leaf for the same name was issued anew, want the cached one")
	}
	start := time.Now()
	ca.now = func() time.Time { return start.Add(6*24*time.Hour + 12*time.Hour) }
	c3, err := ca.leaf("db.internal", ip)
	if err != nil {
		t.Fatal(err)
	}
	if c3 == c || c3.Leaf.NotAfter.Before(start.Add(13*24*time.Hour)) {
		t.Errorf("leaf with half a day left was not renewed (not after %s)", c3.Leaf.NotAfter)
	}

	// A name that cannot be in a certificate is left out, not an error.
	c4, err := ca.leaf("bad name\x00", ip)
	if err != nil || c4.Leaf.VerifyHostname("127.0.0.1") != nil {
		t.Errorf("leaf for an unusable name: %v", err)
	}
}

func TestLeafCacheBounded(t *testing.T) {
	ca := testCA(t)
	for i := range maxLeaves + 50 {
		if _, err := ca.leaf("h"+strconv.Itoa(i)+".example", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(ca.leaves); n > maxLeaves {
		t.Errorf("%d cached leaves, want at most %d", n, maxLeaves)
	}
}
