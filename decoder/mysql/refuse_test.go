package mysql

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAppendRefusal(t *testing.T) {
	got := AppendRefusal(nil, "target/db/undecoded", "no decoder")
	msg := `sluice: connection refused by rule "target/db/undecoded": no decoder`
	want := append([]byte{byte(3 + len(msg)), 0, 0, 0, 0xff, 0x6a, 0x04}, msg...)
	if !bytes.Equal(got, want) {
		t.Fatalf("packet\n got %q\nwant %q", got, want)
	}
	long := AppendRefusal(nil, "r", strings.Repeat("x", 2000))
	if n := int(long[0]) | int(long[1])<<8; n != 3+maxMessage || len(long) != 4+n {
		t.Fatalf("long message: length field %d, packet %d bytes; want %d", n, len(long), 4+3+maxMessage)
	}
}

// TestRefuseRealClient: the MariaDB client prints the refusal as a server
// error, not a lost connection. A client that wants TLS (MariaDB 10.11's
// default) prints it with a warning that the error came before TLS; one
// without TLS prints it as any server error.
func TestRefuseRealClient(t *testing.T) {
	client, err := exec.LookPath("mariadb")
	if err != nil {
		t.Skip("no mariadb client (apt-get install mariadb-client; scripts/install-deps.sh does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			Refuse(c, "target/db/undecoded", "this build has no decoder for mysql")
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	msg := `sluice: connection refused by rule "target/db/undecoded": this build has no decoder for mysql`
	for _, tt := range []struct {
		ssl  string
		want string
	}{
		{"--ssl", "ERROR 2002 (HY000): Received error packet before completion of TLS handshake. The authenticity of the following error cannot be verified: 1130 - " + msg},
		{"--skip-ssl", "ERROR 1130 (HY000): " + msg},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, client, "--no-defaults", tt.ssl, "-h", "127.0.0.1", "-P", port, "-u", "ci", "-e", "select 1").CombinedOutput()
		cancel()
		if err == nil {
			t.Fatalf("mariadb %s succeeded: %s", tt.ssl, out)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("mariadb %s said\n %q\nwant\n %q", tt.ssl, got, tt.want)
		}
	}
}
