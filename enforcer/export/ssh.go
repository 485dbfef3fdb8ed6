package export

import (
	"slices"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// An SSH session (its session_start event's protocol field is "ssh") is
// recorded as requests: statement events whose Kind is the ssh request's
// (shell, exec, subsystem, direct_tcpip, tcpip_forward, agent_forward,
// x11) or "sftp" for one SFTP file operation. A channel that runs a
// shell, a command or a subsystem ends in a result event with its
// channel, its exit ("exit N", "signal NAME", "" for status 0) and the
// bytes sent to the job; an SFTP operation ends in a result of its own
// ("sftp N" when the host answered with an error status). Notes give a
// terminal's size (pty-req, window-change), and at level full wire
// events carry each channel's decrypted bytes, with Fields naming the
// channel and the stream: stdin, stdout, stderr, or tty both ways for a
// channel with a terminal ("data" for a forward's bytes).

// Wire streams of an SSH channel (a wire event's Fields["stream"]).
const (
	streamStdin  = "stdin"
	streamStdout = "stdout"
	streamStderr = "stderr"
	streamTTY    = "tty"
)

// isSSH reports whether events are an SSH session's.
func isSSH(events []record.Event) bool {
	for i := range events {
		if events[i].Type == record.TypeSessionStart {
			return events[i].Fields["protocol"] == ruleset.ProtoSSH
		}
	}
	return false
}

// startsChannel reports whether a request of kind starts a session
// channel's program: a shell, a command or a subsystem.
func startsChannel(kind string) bool {
	return kind == ruleset.SSHShell || kind == ruleset.SSHExec || kind == ruleset.SSHSubsystem
}

// sessionStream reports whether a wire stream is a session channel's.
func sessionStream(s string) bool {
	return s == streamStdin || s == streamStdout || s == streamStderr || s == streamTTY
}

// sshIndex is what an SSH session's events say about each other: which
// channel each request started, and which request a result without a
// channel (an SFTP operation's, a forward's) ends.
//
// A statement, a result or a wire event that names its channel
// (Fields["channel"]) says so itself. For statements that do not, the
// channel is inferred from the order of events: a request that follows a
// pty-req is that terminal's channel's; otherwise an allowed request (or
// a held one once its hold's note approves it) takes the first channel
// that then shows a shell's, command's or subsystem's stream, or ends
// in a result of its kind. An SFTP subsystem records no stream (its
// operations are requests of their own), so only its result claims it.
// Requests whose channel stays unknown are shown without one.
type sshIndex struct {
	// channel is the channel a shell, exec or subsystem statement
	// started, by the statement's event index.
	channel map[int]string
	// request is the statement that started a channel, by channel.
	request map[string]int
	// pty holds the channels that asked for a terminal.
	pty map[string]bool
	// result is the statement a result without a channel ends, by the
	// result's event index: an SFTP operation's or a forward's, or a
	// channel's whose result does not name it (the oldest channel of
	// its kind still going).
	result map[int]int
	// ends is the channel a result ends, by the result's event index:
	// the one it names, or its request's when known.
	ends map[int]string
}

// resultChannel is the channel the result at event i ends, or "".
func (x *sshIndex) resultChannel(i int) string { return x.ends[i] }

// allowed reports whether a request's verdict lets it go on without a
// hold. A mask verdict applies only to a command's output: on anything
// else the decoder refuses it.
func allowed(e *record.Event) bool {
	return e.Verdict == "allow" || (e.Verdict == "mask" && e.Kind == ruleset.SSHExec)
}

func indexSSH(events []record.Event) *sshIndex {
	x := &sshIndex{channel: map[int]string{}, request: map[string]int{}, pty: map[string]bool{}, result: map[int]int{},
		ends: map[int]string{}}
	type wait struct {
		i    int
		kind string
		wire bool // a stream of its channel may claim it
	}
	var (
		ptyWait []string // channels with a terminal and no request yet
		pending []wait   // allowed channel requests whose channel is unknown
		live    []int    // allowed channel requests not yet ended
		held    []int    // held requests awaiting their hold's outcome
		// open are the requests without a channel awaiting their
		// result, by kind.
		open    = map[string][]int{}
		lastReq = -1 // the last statement or result
	)
	assign := func(i int, ch string) {
		if _, taken := x.request[ch]; !taken {
			x.channel[i], x.request[ch] = ch, i
		}
	}
	claim := func(ch, kind string) {
		if _, known := x.request[ch]; known || ch == "" {
			return
		}
		for k, p := range pending {
			if (kind == "" && p.wire) || (kind != "" && p.kind == kind) {
				assign(p.i, ch)
				pending = append(pending[:k], pending[k+1:]...)
				return
			}
		}
	}
	goOn := func(i int) {
		e := &events[i]
		if startsChannel(e.Kind) {
			live = append(live, i)
			if _, known := x.channel[i]; !known {
				pending = append(pending, wait{i, e.Kind, e.Kind != ruleset.SSHSubsystem || e.Text != "subsystem sftp"})
			}
		} else {
			open[e.Kind] = append(open[e.Kind], i)
		}
	}
	for i := range events {
		e := &events[i]
		ch := e.Fields["channel"]
		switch e.Type {
		case record.TypeNote:
			switch {
			case e.Reason == "pty-req" && ch != "":
				x.pty[ch] = true
				if _, known := x.request[ch]; !known {
					ptyWait = append(ptyWait, ch)
				}
			case strings.HasPrefix(e.Reason, "hold (before)"):
				// The outcome of the oldest held request of its kind.
				for k, h := range held {
					if events[h].Kind == e.Kind {
						held = append(held[:k], held[k+1:]...)
						if e.Verdict == "allow" {
							goOn(h)
						}
						break
					}
				}
			}
		case record.TypeStatement:
			lastReq = i
			switch {
			case ch != "":
				assign(i, ch)
			case startsChannel(e.Kind) && len(ptyWait) > 0:
				assign(i, ptyWait[0])
				ptyWait = ptyWait[1:]
			}
			switch {
			case e.Verdict == "hold":
				held = append(held, i)
			case allowed(e):
				goOn(i)
			}
		case record.TypeResult:
			if ch != "" {
				claim(ch, e.Kind)
				if j, ok := x.request[ch]; ok {
					live = slices.DeleteFunc(live, func(r int) bool { return r == j })
				}
				x.ends[i] = ch
				lastReq = i
				break
			}
			if startsChannel(e.Kind) {
				// A channel's end that does not name the channel: the
				// oldest channel of its kind still going.
				if k := slices.IndexFunc(live, func(r int) bool { return events[r].Kind == e.Kind }); k >= 0 {
					j := live[k]
					x.result[i] = j
					if c, ok := x.channel[j]; ok {
						x.ends[i] = c
					}
					live = slices.Delete(live, k, k+1)
					pending = slices.DeleteFunc(pending, func(p wait) bool { return p.i == j })
				}
				lastReq = i
				break
			}
			list := open[e.Kind]
			k := -1
			for j, r := range list {
				if r == lastReq {
					k = j // the result of the request just made
					break
				}
			}
			if k < 0 {
				// An SFTP open ends when the job closes its handle,
				// after other operations maybe.
				for j, r := range list {
					if e.Kind != ruleset.KindSFTP || strings.HasPrefix(events[r].Text, "open ") {
						k = j
						break
					}
				}
			}
			if k >= 0 {
				x.result[i] = list[k]
				open[e.Kind] = append(list[:k], list[k+1:]...)
			}
			lastReq = i
		case record.TypeWire:
			if sessionStream(e.Fields["stream"]) {
				claim(ch, "")
			}
		}
	}
	return x
}

// requestText is how a request is named: its text, or its kind when
// the text was not recorded (below level commands).
func requestText(e *record.Event) string {
	if e.Text != "" {
		return e.Text
	}
	kind := e.Kind
	if kind == "" {
		kind = "ssh"
	}
	return "(" + kind + " request; text not recorded)"
}

// sftpStatus names SFTP's status codes (draft-ietf-secsh-filexfer-02).
var sftpStatus = map[string]string{
	"1": "end of file", "2": "no such file", "3": "permission denied", "4": "failure",
	"5": "bad message", "6": "no connection", "7": "connection lost", "8": "operation unsupported",
}

// sftpFailure is "no such file (sftp 2)" for a result's "sftp 2".
func sftpFailure(code string) string {
	if n, ok := strings.CutPrefix(code, "sftp "); ok && sftpStatus[n] != "" {
		return sftpStatus[n] + " (" + code + ")"
	}
	return safe(code)
}

// sshOutcome is "exit 3, 120 bytes, 3.200 ms" for a channel's result,
// "failed: no such file (sftp 2), 0.210 ms" for an SFTP operation's, and
// the bytes and duration for the session's end.
func sshOutcome(e *record.Event) string {
	var parts []string
	switch {
	case e.Type == record.TypeResult && e.Kind == ruleset.KindSFTP && e.ErrCode != "":
		parts = append(parts, "failed: "+sftpFailure(e.ErrCode))
	case e.ErrCode != "":
		parts = append(parts, safe(e.ErrCode))
	case e.Type == record.TypeResult && startsChannel(e.Kind):
		parts = append(parts, "exit 0")
	}
	if e.Bytes != 0 {
		parts = append(parts, strconv.FormatInt(e.Bytes, 10)+" bytes")
	}
	if e.DurationUS != 0 {
		parts = append(parts, formatDuration(e.DurationUS))
	}
	return strings.Join(parts, ", ")
}
