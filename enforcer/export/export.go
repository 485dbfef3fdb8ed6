// Package export renders a session recording (package record) in formats
// other tools read: JSON lines for SIEMs, a pcap capture for Wireshark and
// tshark, an asciicast v2 terminal recording, and a plain-text transcript
// that Replay prints paced by the recorded timing.
//
// Every function takes the events as Open or NewReader returned them, in
// recording order, and writes to a caller's io.Writer; none of them closes
// it, keeps it, or starts a goroutine. They are safe to call concurrently
// on different writers. They export what was recorded: a session recorded
// below level full has no wire events, so WritePCAP returns ErrNoWire for
// it, and below level commands the transcript shows statements without
// their text.
//
// # JSON lines
//
// WriteJSONL writes one JSON object per event, one per line, with these
// names (absent when zero or empty, except the first four):
//
//	session      string   the recording's session id
//	seq          number   the event's frame index in the recording
//	time         string   RFC 3339 with nanoseconds, UTC
//	type         string   session_start, statement, result, error, wire,
//	                      session_end, note, checkpoint, seal
//	text         string   statement text or server error message
//	text_bytes   number   original length of text when it was cut
//	kind         string   statement kind (select, insert, ddl ...)
//	verdict      string   allow, mask, hold or deny
//	rule         string   id of the deciding rule
//	reason       string   why, in a sentence Sluice or the ruleset wrote
//	rows         number   rows returned or affected
//	bytes        number   result bytes
//	duration_us  number   duration in microseconds
//	err_code     string   the server's error code (a PostgreSQL SQLSTATE)
//	dir          string   wire direction: c2s (client to server) or s2c
//	data         string   wire bytes, standard base64 with padding
//	fields       object   string to string facts (session_start, ...)
//	sig          string   checkpoint or seal signature, standard base64
//
// Which fields each type carries is documented on record.Event. The names
// are the recording's own and are kept stable: a new field may be added,
// none is renamed or removed.
//
// # pcap
//
// WritePCAP synthesizes the TCP connection the client saw, from the wire
// events, as a classic pcap file (nanosecond timestamps, Ethernet link
// type). See WritePCAP for the packets it writes. Wireshark and tshark
// dissect PostgreSQL on port 5432 by default; for a server on any other
// port tell them with a decode-as option, for example
//
//	tshark -r session.pcap -d tcp.port==6543,pgsql -Y pgsql -T fields -e pgsql.query
//
// # Transcript, asciicast and replay
//
// Transcript, WriteAsciicast and Replay share one rendering: statements as
// "=> SQL" followed by their verdict and result, server errors as
// "!! ERROR", and the session's start, end and notes as "--" lines. Wire
// bytes and integrity events are not shown. Text comes from clients and
// servers, so control characters in it are escaped (\x1b, \r ...) and
// invalid UTF-8 replaced before it can reach a terminal.
package export

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sluicehq/sluice/enforcer/record"
)

// ErrNoWire means the events hold no wire bytes to export: the session was
// recorded below level full, or no bytes crossed the connection.
var ErrNoWire = errors.New("recording has no wire bytes (record level full keeps them)")

// Endpoints returns the client and server addresses of a session from its
// session_start event's "client" and "orig_dst" fields, for WritePCAP.
func Endpoints(events []record.Event) (client, server netip.AddrPort, err error) {
	for _, e := range events {
		if e.Type != record.TypeSessionStart {
			continue
		}
		if client, err = netip.ParseAddrPort(e.Fields["client"]); err != nil {
			return client, server, fmt.Errorf("parse session_start client: %w", err)
		}
		if server, err = netip.ParseAddrPort(e.Fields["orig_dst"]); err != nil {
			return client, server, fmt.Errorf("parse session_start orig_dst: %w", err)
		}
		return client, server, nil
	}
	return client, server, errors.New("find endpoints: recording has no session_start event")
}
