// Package export renders a session recording (package record) in formats
// other tools read: JSON lines for SIEMs, a pcap capture for Wireshark and
// tshark, an asciicast v2 terminal recording, and a plain-text transcript
// that Replay prints paced by the recorded timing. SSH sessions have forms
// of their own (see SSH sessions below).
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
//	kind         string   statement kind (select, insert, ddl ...; for
//	                      SSH the request's: shell, exec, subsystem,
//	                      direct_tcpip, tcpip_forward, agent_forward,
//	                      x11, or sftp for an SFTP file operation)
//	verdict      string   allow, mask, hold or deny
//	rule         string   id of the deciding rule
//	reason       string   why, in a sentence Sluice or the ruleset wrote
//	rows         number   rows returned or affected
//	bytes        number   result bytes
//	duration_us  number   duration in microseconds
//	err_code     string   the server's error code (a PostgreSQL SQLSTATE;
//	                      for an SSH channel "exit N" or "signal NAME",
//	                      for an SFTP operation "sftp N")
//	dir          string   wire direction: c2s (client to server) or s2c
//	data         string   wire bytes, standard base64 with padding
//	fields       object   string to string facts (session_start, notes;
//	                      an SSH channel's events: "channel", and on
//	                      wire events "stream": stdin, stdout, stderr,
//	                      tty, or data for a forward)
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
//
// # SSH sessions
//
// A session whose session_start names protocol "ssh" is requests on
// channels rather than statements on one connection. Its transcript shows
// each request ("=> make test", "=> open /srv/app.tar (read)") with its
// verdict, each channel's end as "(exit 3, 120 bytes, 2.000 ms)" and an
// SFTP operation's as its bytes or "failed: no such file (sftp 2)", notes
// with their fields (the login's user and credential, a terminal's size),
// and at level full what the job was shown: a terminal's output and a
// command's stdout as "   | " lines, its stderr as "   ! " lines, as a
// terminal would show them (carriage returns, backspaces and line erases
// applied, colours and other escape sequences dropped, what is left
// escaped), at most MaxShownOutput bytes of each. What the job sent is not
// shown. Output or an end that does not follow its own request is
// introduced by "<= TEXT (channel N)".
//
// WriteAsciicast and Replay play an SSH session as the terminal the job
// saw: a channel's terminal byte for byte, commands without one as a
// "$ COMMAND" line and their output, refusals as the "sluice: ... denied
// by rule ..." line the job was sent, and other requests as "-- TEXT"
// lines. Only JSON lines carry what the job sent on a command's stdin.
//
// The channel of a request is the one its event names. Where it names
// none, the order of the events tells: a request that follows a
// terminal's pty-req is that channel's, and otherwise the first channel
// to show output or end takes the oldest allowed request still without
// one, which channels opened at once can get wrong.
//
// WritePCAP refuses an SSH session with ErrNotAStream: what is recorded
// is the channels' decrypted contents, not the connection's packets.
//
// # Kubernetes sessions
//
// A session whose session_start names protocol "k8s" is API requests;
// an exec, attach or port-forward among them upgrades the connection and
// is recorded as streams, with the SSH channel's field names (see
// k8s.go). WriteAsciicast and Replay play it as a terminal: an exec as
// "$ COMMAND" and then its terminal byte for byte, or its stdout and
// stderr and "[exit N]" when the command failed; the other requests as
// "-- METHOD URI" lines and refusals as the "sluice: ... denied by rule
// ..." line. Its transcript is the generic one (requests, verdicts,
// results). WritePCAP refuses it with ErrNotAStream, as an SSH
// session's: the recorded bytes are the decoded requests, bodies and
// exec streams, not the TLS connection's packets.
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

// ErrNotAStream is WritePCAP's error for a session recorded as decoded
// contents (an SSH session's channels, a Kubernetes session's requests
// and exec streams) rather than as the bytes of one TCP stream.
var ErrNotAStream = errors.New("an SSH or Kubernetes session is recorded as its decoded contents (channels, API requests, exec streams), not as one TCP stream: export it as jsonl (every byte, by channel and stream) or asciicast (the terminal and the commands' output)")

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
