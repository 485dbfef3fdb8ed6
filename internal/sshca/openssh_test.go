package sshca

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestOpenSSHTrustsLine: OpenSSH's ssh, with the known_hosts file
// AddToFile wrote as its global known hosts, accepts a host certificate of
// the CA under StrictHostKeyChecking=yes, even though the user's
// known_hosts pins another plain key for the address; once RemoveFromFile
// took the line out, it refuses the host.
func TestOpenSSHTrustsLine(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh client (Debian's openssh-client)")
	}
	dir := t.TempDir()
	ca, _, err := LoadOrCreate(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveCertified(t, ca)
	host, port, _ := net.SplitHostPort(addr)

	global := filepath.Join(dir, "ssh_known_hosts")
	if _, err := AddToFile(global, "", ca.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	pinned, _, _ := ed25519.GenerateKey(rand.Reader)
	user := filepath.Join(dir, "known_hosts")
	os.WriteFile(user, []byte("["+host+"]:"+port+" "+PublicLine(pinned)+"\n"), 0o600)

	ssh := func() (string, error) {
		out, err := exec.Command("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
			"-o", "GlobalKnownHostsFile="+global, "-o", "UserKnownHostsFile="+user, "-o", "ConnectTimeout=10",
			"-p", port, "-l", "ci", host, "true").CombinedOutput()
		return string(out), err
	}
	if out, err := ssh(); err != nil {
		t.Fatalf("ssh with the CA line: %v\n%s", err, out)
	}
	if _, err := RemoveFromFile(global, ""); err != nil {
		t.Fatal(err)
	}
	if out, err := ssh(); err == nil || !strings.Contains(out, "verification failed") {
		t.Errorf("ssh without the CA line: %v\n%s\nwant host key verification to fail", err, out)
	}
}

// serveCertified serves SSH on loopback with a host certificate signed by
// ca, letting anyone in and answering every exec with exit status 0.
func serveCertified(t *testing.T, ca ed25519.PrivateKey) string {
	t.Helper()
	caSigner, err := ssh.NewSignerFromKey(ca)
	if err != nil {
		t.Fatal(err)
	}
	_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostKey)
	now := time.Now()
	cert := &ssh.Certificate{
		Key: hostSigner.PublicKey(), CertType: ssh.HostCert, KeyId: "test host",
		ValidPrincipals: []string{"127.0.0.1"},
		ValidAfter:      uint64(now.Add(-time.Hour).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		t.Fatal(err)
	}
	certSigner, err := ssh.NewCertSigner(cert, hostSigner)
	if err != nil {
		t.Fatal(err)
	}
	conf := &ssh.ServerConfig{NoClientAuth: true}
	conf.AddHostKey(certSigner)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				_, chans, reqs, err := ssh.NewServerConn(c, conf)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					if nc.ChannelType() != "session" {
						nc.Reject(ssh.UnknownChannelType, "session only")
						continue
					}
					ch, creqs, err := nc.Accept()
					if err != nil {
						return
					}
					for r := range creqs {
						r.Reply(r.Type == "exec", nil)
						if r.Type == "exec" {
							ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, 0))
							ch.Close()
						}
					}
				}
			}()
		}
	}()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}
