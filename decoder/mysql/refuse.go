// Package mysql speaks the MySQL protocol (MySQL and MariaDB servers) for
// the proxy: the greeting and the login relayed with TLS on either hop,
// every command decided by the ruleset (COM_QUERY and COM_STMT_PREPARE
// classified with TiDB's MySQL parser, classify.go), results masked by
// the column origins their definitions carry, and its own ERR packets
// for whatever it refuses. The shared layer (package decoder) does the
// deciding, the holds, the masking plans, TLS and the recording tap.
package mysql

import (
	"fmt"
	"net"
	"time"
)

// codeHostNotPrivileged is ER_HOST_NOT_PRIVILEGED (1130), the error a
// MySQL or MariaDB server sends in place of its greeting to a host it
// does not let connect.
const codeHostNotPrivileged = 1130

// maxMessage keeps the message within what clients keep of an error
// (MYSQL_ERRMSG_SIZE is 512 bytes with its terminator).
const maxMessage = 500

// Refuse tells a MySQL client that the ruleset refuses its connection and
// closes c. The server speaks first in MySQL, so the refusal takes the
// greeting's place: an ERR packet (sequence 0, 0xFF, error 1130, and the
// message) as a server sends to a host it does not admit. No SQL state
// follows the code, since no capabilities are agreed yet; clients report
// it as HY000, for example "ERROR 1130 (HY000): sluice: ...".
func Refuse(c net.Conn, rule, reason string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(AppendRefusal(nil, rule, reason))
}

// AppendRefusal appends the ERR packet Refuse sends to b.
func AppendRefusal(b []byte, rule, reason string) []byte {
	msg := fmt.Sprintf("sluice: connection refused by rule %q: %s", rule, reason)
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	n := 1 + 2 + len(msg)
	b = append(b, byte(n), byte(n>>8), byte(n>>16), 0) // length, sequence 0
	b = append(b, 0xff, codeHostNotPrivileged&0xff, codeHostNotPrivileged>>8)
	return append(b, msg...)
}

// codeTooManyConnections is ER_CON_COUNT_ERROR (1040), "Too many
// connections", which a full server sends in place of its greeting.
const codeTooManyConnections = 1040

// RefuseBusy answers a client past the daemon's cap on open sessions as
// a full server does: an ERR packet in place of the greeting, error 1040,
// naming the cap and its setting. Nothing reaches the server. It closes c.
func RefuseBusy(c net.Conn, limit int) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := fmt.Sprintf("sluice: too many sessions through the proxy (max_sessions = %d); close idle connections or raise max_sessions", limit)
	c.Write(framed(appendErr(nil, codeTooManyConnections, "", msg, false), 0))
}
