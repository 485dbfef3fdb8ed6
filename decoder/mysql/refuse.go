// Package mysql holds Sluice's MySQL wire code. This build has no MySQL
// decoder yet: what is here is the refusal a ruleset may ask for, which
// needs nothing of the protocol but its first packet.
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
