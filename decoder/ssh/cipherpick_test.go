package ssh

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// pickServer accepts one connection on a loopback listener, picks its
// ciphers as the proxy does and completes the handshake; it sends the
// cipher the job's side negotiated, or the error.
func pickServer(t *testing.T) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		cc, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer cc.Close()
		deadline := time.Now().Add(10 * time.Second)
		cc.SetDeadline(deadline)
		jc, ciphers := pickJobCiphers(cc, deadline)
		cfg := &ssh.ServerConfig{NoClientAuth: true, ServerVersion: version}
		cfg.Ciphers = ciphers
		cfg.AddHostKey(signer)
		conn, chans, reqs, err := ssh.NewServerConn(jc, cfg)
		if err != nil {
			got <- "handshake: " + err.Error()
			return
		}
		go ssh.DiscardRequests(reqs)
		go func() {
			for c := range chans {
				c.Reject(ssh.Prohibited, "no")
			}
		}()
		got <- conn.Conn.(ssh.AlgorithmsConnMetadata).Algorithms().Read.Cipher
		conn.Wait()
	}()
	return ln.Addr().String(), got
}

// TestPickJobCiphers: a client with GCM gets GCM whatever its order,
// one without gets CTR, and the handshake completes on the replayed bytes
// both ways.
func TestPickJobCiphers(t *testing.T) {
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"}, "aes128-gcm@openssh.com"},
		{[]string{"aes256-ctr", "aes256-gcm@openssh.com"}, "aes256-gcm@openssh.com"},
		{[]string{"aes128-ctr", "aes256-ctr"}, "aes128-ctr"},
	} {
		addr, got := pickServer(t)
		c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "ci", HostKeyCallback: ssh.InsecureIgnoreHostKey(),
			Config: ssh.Config{Ciphers: tc.offer}, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("%v: %v", tc.offer, err)
		}
		if sv := string(c.ServerVersion()); sv != version {
			t.Errorf("server version %q, want one %q", sv, version)
		}
		if g := <-got; g != tc.want {
			t.Errorf("client offering %v negotiated %q, want %q", tc.offer, g, tc.want)
		}
		c.Close()
	}
}

// TestPickJobCiphersSilentClient: a client that sends its version line
// and waits for the server's KEXINIT gets it after the peek's wait.
func TestPickJobCiphersSilentClient(t *testing.T) {
	addr, got := pickServer(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("SSH-2.0-waiting\r\n"))
	c.SetReadDeadline(time.Now().Add(kexPeekWait + 5*time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != version {
		t.Fatalf("version line %q: %v", line, err)
	}
	var hdr [6]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatalf("no KEXINIT from the server: %v", err)
	}
	if hdr[5] != 20 {
		t.Fatalf("first packet type %d, want KEXINIT", hdr[5])
	}
	if d := time.Since(start); d < kexPeekWait-100*time.Millisecond {
		t.Errorf("the server's KEXINIT came after %v, before the peek could have ended", d)
	}
	c.Close()
	if g := <-got; !strings.HasPrefix(g, "handshake: ") {
		t.Errorf("got %q", g)
	}
}
