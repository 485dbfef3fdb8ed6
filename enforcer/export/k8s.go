package export

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// A Kubernetes session (its session_start event's protocol field is
// "k8s") is recorded as API requests: one statement per request, whose
// Text is "METHOD REQUEST-URI" and Kind the request's verb, and one
// result. An exec, attach or port-forward upgrades its connection: its
// result's Fields name the "channel" its streams were recorded on (and
// "upgrade", "protocol", "status"), and at level full wire events carry
// the streams with the SSH decoder's field names: Fields "channel" and
// "stream" (stdin, stdout, stderr, or tty both ways for an exec with a
// terminal; "error" for the status the server sent at the end, "raw" for
// bytes the decoder could not take apart). A terminal's size changes are
// notes "window-change" with "channel", "cols" and "rows", the first one
// its initial size (Kubernetes has no pty-req). The other wire events of
// the session (requests and response bodies) have no "stream" field.

// Wire streams of a Kubernetes exec that are not an SSH channel's.
const (
	streamStatus = "error" // the remotecommand status (v1 Status JSON)
	streamRaw    = "raw"
)

// maxStatus is the most bytes of an exec's status stream kept to show
// its exit.
const maxStatus = 64 << 10

// isK8s reports whether events are a Kubernetes session's.
func isK8s(events []record.Event) bool {
	for i := range events {
		if events[i].Type == record.TypeSessionStart {
			return events[i].Fields["protocol"] == ruleset.ProtoK8s
		}
	}
	return false
}

// k8sTerminal plays a Kubernetes session as one terminal, the form of
// WriteAsciicast and Replay, the way sshTerminal plays an SSH session:
//
//   - an exec is a prompt line "$ COMMAND" (its command from the request's
//     command parameters), then with a terminal its bytes as they were
//     ("o" shown, "i" typed), without one its stdout and stderr with
//     each newline made "\r\n", then "[exit N]" when the status the
//     server sent says the command failed ("[error: MESSAGE]" when it
//     failed otherwise);
//   - an attach or a port-forward is a line "-- attach NAMESPACE/POD"
//     or "-- port-forward NAMESPACE/POD PORTS";
//   - a refused request is the line "sluice: TEXT denied by rule ID:
//     REASON" (a held one "... held for approval by rule ...", and its
//     outcome a line of its own);
//   - other API requests are a line "-- TEXT";
//   - a terminal's window change is a resize ("r"); the first sets the
//     size of the recording.
func k8sTerminal(events []record.Event) *sshTerm {
	t := &sshTerm{}
	p := &termPlay{t: t, events: events, col0: true, text: map[streamKey]*utf8Text{}, cr: map[streamKey]bool{}}
	for i := range events {
		e := &events[i]
		if e.Type == record.TypeNote && e.Reason == "window-change" {
			c, err1 := strconv.Atoi(e.Fields["cols"])
			r, err2 := strconv.Atoi(e.Fields["rows"])
			if err1 == nil && err2 == nil && c > 0 && r > 0 {
				t.cols, t.rows = c, r
				p.cols, p.rows = c, r
				break
			}
		}
	}
	k := &k8sPlay{termPlay: p, status: map[string][]byte{}}
	for i := range events {
		k.event(i)
	}
	if len(events) > 0 {
		p.flush(events[len(events)-1].Time, "")
	}
	return t
}

// k8sPlay is k8sTerminal's state.
type k8sPlay struct {
	*termPlay
	// status is each channel's status stream so far.
	status map[string][]byte
}

func (p *k8sPlay) event(i int) {
	e := &p.events[i]
	switch e.Type {
	case record.TypeStatement:
		text := requestText(e)
		switch {
		case e.Verdict == "deny":
			p.line(e.Time, "sluice: "+text+" denied by rule "+e.Rule+": "+e.Reason)
		case e.Verdict == "hold":
			p.line(e.Time, "sluice: "+text+" held for approval by rule "+e.Rule+": "+e.Reason)
		default:
			p.line(e.Time, k8sRequestLine(e.Text, text))
		}
	case record.TypeNote:
		switch {
		case e.Reason == "window-change":
			p.resize(e.Time, e.Fields["cols"], e.Fields["rows"])
		case strings.HasPrefix(e.Reason, "hold (") && e.Verdict == "deny":
			p.line(e.Time, "sluice: refused by rule "+e.Rule+": "+e.Reason)
		case strings.HasPrefix(e.Reason, "hold ("):
			p.line(e.Time, "sluice: approved: "+e.Reason)
		}
	case record.TypeResult:
		ch := e.Fields["channel"]
		if ch == "" {
			return
		}
		p.flush(e.Time, ch)
		if s := execExit(p.status[ch]); s != "" {
			p.line(e.Time, "["+s+"]")
		}
		delete(p.status, ch)
	case record.TypeWire:
		st := e.Fields["stream"]
		ch := e.Fields["channel"]
		k := streamKey{ch, st, e.Dir}
		switch {
		case st == streamTTY && e.Dir == record.DirServerToClient:
			p.emit(e.Time, "o", p.stream(k).text(e.Data))
		case st == streamTTY && e.Dir == record.DirClientToServer:
			p.emit(e.Time, "i", p.stream(k).text(e.Data))
		case (st == streamStdout || st == streamStderr) && e.Dir == record.DirServerToClient:
			p.emit(e.Time, "o", p.crlf(k, p.stream(k).text(e.Data)))
		case st == streamStatus && e.Dir == record.DirServerToClient:
			if len(p.status[ch])+len(e.Data) <= maxStatus {
				p.status[ch] = append(p.status[ch], e.Data...)
			}
		}
	case record.TypeSessionEnd:
		p.flush(e.Time, "")
	}
}

// crlf makes each "\n" of a stream without a terminal "\r\n", unless a
// "\r" came just before it, in s or at the end of the stream's last
// piece.
func (p *termPlay) crlf(k streamKey, s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	prevCR := p.cr[k]
	for j := 0; j < len(s); j++ {
		if s[j] == '\n' && !prevCR {
			b.WriteByte('\r')
		}
		b.WriteByte(s[j])
		prevCR = s[j] == '\r'
	}
	p.cr[k] = prevCR
	return b.String()
}

// k8sRequestLine is how a request is shown: "$ COMMAND" for an exec,
// "-- attach NS/POD", "-- port-forward NS/POD PORTS", else "-- TEXT".
// raw is the statement's text ("METHOD REQUEST-URI"), shown the
// request's text or what stands for it.
func k8sRequestLine(raw, shown string) string {
	_, uri, ok := strings.Cut(raw, " ")
	if !ok {
		return "-- " + shown
	}
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return "-- " + shown
	}
	// /api/v1/namespaces/NS/pods/NAME/SUBRESOURCE
	seg := strings.Split(strings.Trim(u.Path, "/"), "/")
	n := len(seg)
	if n < 7 || seg[0] != "api" || seg[n-5] != "namespaces" || seg[n-3] != "pods" {
		return "-- " + shown
	}
	pod := seg[n-4] + "/" + seg[n-2]
	q := u.Query()
	switch seg[n-1] {
	case "exec":
		var words []string
		for _, w := range q["command"] {
			words = append(words, shellWord(w))
		}
		if len(words) == 0 {
			return "-- exec " + pod
		}
		return "$ " + strings.Join(words, " ")
	case "attach":
		return "-- attach " + pod
	case "portforward":
		if ports := q["ports"]; len(ports) > 0 {
			return "-- port-forward " + pod + " " + strings.Join(ports, ",")
		}
		return "-- port-forward " + pod
	}
	return "-- " + shown
}

// shellWord quotes w as a POSIX shell would need it, in single quotes
// when it holds anything but letters, digits and -_./=:,+@%.
func shellWord(w string) string {
	if w == "" {
		return "''"
	}
	for _, r := range w {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r)) {
			return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
	}
	return w
}

// execExit is "exit 3" for the status an exec's server sent when its
// command exited with status 3, "error: MESSAGE" when it failed
// otherwise, and "" on success or when there is no status.
func execExit(b []byte) string {
	var st struct {
		Status  string `json:"status"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
		Details struct {
			Causes []struct {
				Type    string `json:"reason"`
				Message string `json:"message"`
			} `json:"causes"`
		} `json:"details"`
	}
	if len(b) == 0 || json.Unmarshal(b, &st) != nil || st.Status != "Failure" {
		return ""
	}
	if st.Reason == "NonZeroExitCode" {
		for _, c := range st.Details.Causes {
			if c.Type == "ExitCode" {
				return "exit " + c.Message
			}
		}
	}
	return "error: " + st.Message
}
