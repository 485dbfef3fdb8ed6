// Package ssh decodes SSH for the proxy with golang.org/x/crypto/ssh:
// Sluice is the server towards the job (a host certificate from the
// runner's Sluice host CA) and the client towards the host (the
// credential the ruleset grants), and every channel and request between
// them is decided by the ruleset (proxy.go, session.go, sftp.go). Flows
// it cannot log in for are relayed or refused as their target says; a
// refusal needs only the unencrypted start of the protocol (RFC 4253).
package ssh

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// Protocol constants from RFC 4253 (sections 4.2, 6, 11.1 and 12).
const (
	msgDisconnect              = 1
	reasonHostNotAllowed       = 1 // SSH_DISCONNECT_HOST_NOT_ALLOWED_TO_CONNECT
	blockSize                  = 8 // before key exchange
	minPadding                 = 4
	serverVersion              = "SSH-2.0-Sluice"
	maxDescription             = 400 // what OpenSSH prints of it
	drainLimit           int64 = 64 << 10
)

// Refuse tells an SSH client that the ruleset refuses its connection and
// closes c. It sends a version line and then, still unencrypted as the
// protocol allows before key exchange, an SSH_MSG_DISCONNECT with reason
// "host not allowed to connect" and a description naming the rule.
// OpenSSH prints it as "Received disconnect from HOST port 22:1: sluice:
// ..." and exits 255; git shows that line. What the client sent meanwhile
// is read and dropped before closing, so the close is a FIN and not a
// reset that could discard the message in the client's kernel.
func Refuse(c net.Conn, rule, reason string) {
	refuse(c, "sluice: connection refused by rule "+rule+": "+reason)
}

// refuse ends a connection before key exchange with an SSH disconnect
// whose description is desc. What the client sent meanwhile is read and
// dropped before closing, so the close is a FIN and not a reset that
// could discard the message in the client's kernel.
func refuse(c net.Conn, desc string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(appendDisconnect(nil, desc)); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, io.LimitReader(c, drainLimit))
	}
}

// AppendRefusal appends what Refuse sends to b: the version line and the
// disconnect packet.
func AppendRefusal(b []byte, rule, reason string) []byte {
	return appendDisconnect(b, "sluice: connection refused by rule "+rule+": "+reason)
}

// RefuseBusy tells a client past the daemon's cap on open sessions why it
// is refused, as a disconnect ("too many connections") before key
// exchange. It closes c.
func RefuseBusy(c net.Conn, limit int) {
	refuse(c, fmt.Sprintf("sluice: too many sessions through the proxy (max_sessions = %d); close idle connections or raise max_sessions", limit))
}

// appendDisconnect appends a version line and an unencrypted disconnect
// message with desc to b.
func appendDisconnect(b []byte, desc string) []byte {
	if len(desc) > maxDescription {
		desc = desc[:maxDescription]
	}
	b = append(b, serverVersion+"\r\n"...)
	var payload []byte
	payload = append(payload, msgDisconnect)
	payload = binary.BigEndian.AppendUint32(payload, reasonHostNotAllowed)
	payload = binary.BigEndian.AppendUint32(payload, uint32(len(desc)))
	payload = append(payload, desc...)
	payload = binary.BigEndian.AppendUint32(payload, 0) // language tag ""
	// packet_length (4) + padding_length (1) + payload + padding is a
	// multiple of the block size, with at least 4 bytes of padding. No
	// MAC: none is agreed before key exchange.
	pad := blockSize - (4+1+len(payload))%blockSize
	if pad < minPadding {
		pad += blockSize
	}
	b = binary.BigEndian.AppendUint32(b, uint32(1+len(payload)+pad))
	b = append(b, byte(pad))
	b = append(b, payload...)
	return append(b, make([]byte, pad)...)
}
