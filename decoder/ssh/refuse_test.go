package ssh

import (
	"context"
	"encoding/binary"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAppendRefusal(t *testing.T) {
	for _, reason := range []string{"", "x", "no decoder", strings.Repeat("y", 1000)} {
		b := AppendRefusal(nil, "target/git/undecoded", reason)
		line, pkt, ok := strings.Cut(string(b), "\r\n")
		if !ok || line != serverVersion {
			t.Fatalf("version line %q", line)
		}
		n := binary.BigEndian.Uint32([]byte(pkt))
		pad := int(pkt[4])
		if int(n)+4 != len(pkt) || len(pkt)%blockSize != 0 || pad < minPadding || pad >= minPadding+blockSize {
			t.Fatalf("packet_length %d, %d bytes, padding %d: not a valid binary packet", n, len(pkt), pad)
		}
		payload := pkt[5 : 4+int(n)-pad]
		if payload[0] != msgDisconnect || binary.BigEndian.Uint32([]byte(payload[1:])) != reasonHostNotAllowed {
			t.Fatalf("payload %q is not a disconnect for host not allowed", payload)
		}
		dl := int(binary.BigEndian.Uint32([]byte(payload[5:])))
		desc := payload[9 : 9+dl]
		if !strings.HasPrefix(desc, "sluice: connection refused by rule target/git/undecoded: ") || len(desc) > maxDescription {
			t.Fatalf("description %q", desc)
		}
		if rest := payload[9+dl:]; rest != "\x00\x00\x00\x00" {
			t.Fatalf("language tag %q, want empty", rest)
		}
	}
}

// TestRefuseRealClient: OpenSSH's client prints the refusal.
func TestRefuseRealClient(t *testing.T) {
	client, err := exec.LookPath("ssh")
	if err != nil {
		t.Skip("no ssh client (apt-get install openssh-client)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			Refuse(c, "target/git/undecoded", "this build has no decoder for ssh")
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	out, err := exec.CommandContext(ctx, client, "-F", "/dev/null", "-p", port, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "git@127.0.0.1", "true").CombinedOutput()
	if err == nil {
		t.Fatalf("ssh succeeded: %s", out)
	}
	want := "Received disconnect from 127.0.0.1 port " + port + ":1: sluice: connection refused by rule target/git/undecoded: this build has no decoder for ssh"
	if !strings.Contains(string(out), want) {
		t.Fatalf("ssh said %q, want it to contain %q", out, want)
	}
}
