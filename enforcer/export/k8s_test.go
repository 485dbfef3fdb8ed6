package export

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
)

// k8sSession is a recording as the Kubernetes decoder makes it at level
// full: kubectl get pod web, then kubectl exec -it web -- bash (WebSocket
// v5, a terminal: stream tty both ways, the first window change its
// size) with a resize and a successful status; or without a terminal, a
// refused exec into another pod and kubectl exec web -- sh -c 'make
// test' exiting with status 3.
func k8sSession(tty bool) (record.Header, []record.Event) {
	hdr := record.Header{Version: 1, Session: "s-k8s0001", Start: t0}
	var ev []record.Event
	at := time.Duration(0)
	add := func(e record.Event) {
		at += 10 * time.Millisecond
		e.Time = t0.Add(at)
		e.Seq = uint64(len(ev) + 1)
		ev = append(ev, e)
	}
	ch := func(kv ...string) map[string]string {
		m := map[string]string{"channel": "0"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	wire := func(dir, stream, data string) {
		add(record.Event{Type: record.TypeWire, Dir: dir, Data: []byte(data), Fields: ch("stream", stream)})
	}
	add(record.Event{Type: record.TypeSessionStart, Verdict: "allow", Rule: "default",
		Fields: map[string]string{"protocol": "k8s", "target": "prod-cluster", "client": "127.0.0.1:50000", "orig_dst": "10.0.0.9:6443"}})
	get := "GET /api/v1/namespaces/ci/pods/web"
	add(record.Event{Type: record.TypeStatement, Kind: "get", Text: get, Verdict: "allow", Rule: "ci/read"})
	// The request line as recorded at level full: no stream field.
	add(record.Event{Type: record.TypeWire, Dir: record.DirClientToServer, Data: []byte(get + " HTTP/2.0\n")})
	add(record.Event{Type: record.TypeWire, Dir: record.DirServerToClient, Data: []byte(`{"kind":"Pod"}`)})
	add(record.Event{Type: record.TypeResult, Kind: "get", Bytes: 14, DurationUS: 3000, Fields: map[string]string{"status": "200"}})
	if tty {
		add(record.Event{Type: record.TypeStatement, Kind: "get", Verdict: "allow", Rule: "ci/exec",
			Text: "GET /api/v1/namespaces/ci/pods/web/exec?command=bash&container=app&stdin=true&stdout=true&tty=true"})
		add(record.Event{Type: record.TypeNote, Reason: "window-change", Fields: ch("cols", "80", "rows", "24")})
		wire(record.DirServerToClient, "tty", "$ ")
		wire(record.DirClientToServer, "tty", "l")
		wire(record.DirClientToServer, "tty", "s\r")
		wire(record.DirServerToClient, "tty", "ls\r\napp.py caf\xc3")
		wire(record.DirServerToClient, "tty", "\xa9\r\n$ ")
		add(record.Event{Type: record.TypeNote, Reason: "window-change", Fields: ch("cols", "120", "rows", "40")})
		wire(record.DirClientToServer, "tty", "exit\r")
		wire(record.DirServerToClient, "tty", "exit\r\n")
		wire(record.DirServerToClient, "error", `{"metadata":{},"status":"Success"}`)
		add(record.Event{Type: record.TypeResult, Kind: "get", Bytes: 30, DurationUS: 900_000,
			Fields: ch("status", "101", "upgrade", "websocket", "protocol", "v5.channel.k8s.io")})
	} else {
		add(record.Event{Type: record.TypeStatement, Kind: "create", Verdict: "deny", Rule: "ci/deny/db", Reason: "no exec into the database",
			Text: "POST /api/v1/namespaces/ci/pods/db-0/exec?command=cat&command=%2Fetc%2Fshadow&stdout=true"})
		add(record.Event{Type: record.TypeResult, Kind: "create", ErrCode: "403", Fields: map[string]string{"status": "403"}})
		add(record.Event{Type: record.TypeStatement, Kind: "create", Verdict: "allow", Rule: "ci/exec",
			Text: "POST /api/v1/namespaces/ci/pods/web/exec?command=sh&command=-c&command=make+test&container=app&stderr=true&stdout=true"})
		wire(record.DirServerToClient, "stdout", "ok 1\nok 2\r")
		wire(record.DirServerToClient, "stdout", "\n")
		wire(record.DirServerToClient, "stderr", "warning: flaky\n")
		wire(record.DirServerToClient, "error", `{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit 3",`)
		wire(record.DirServerToClient, "error", `"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}`)
		add(record.Event{Type: record.TypeResult, Kind: "create", Bytes: 40, DurationUS: 1_200_000,
			Fields: ch("status", "101", "upgrade", "spdy", "protocol", "v4.channel.k8s.io")})
	}
	add(record.Event{Type: record.TypeSessionEnd, Reason: "client closed the connection"})
	return hdr, ev
}

func TestK8sAsciicast(t *testing.T) {
	cases := []struct {
		name          string
		tty           bool
		width, height int
		out, in       string
		resizes       []string
	}{
		{name: "terminal", tty: true, width: 80, height: 24,
			out: "-- GET /api/v1/namespaces/ci/pods/web\r\n" +
				"$ bash\r\n" +
				"$ ls\r\napp.py café\r\n$ exit\r\n",
			in:      "ls\rexit\r",
			resizes: []string{"120x40"}},
		{name: "command", width: DefaultWidth, height: DefaultHeight,
			out: "-- GET /api/v1/namespaces/ci/pods/web\r\n" +
				"sluice: POST /api/v1/namespaces/ci/pods/db-0/exec?command=cat&command=%2Fetc%2Fshadow&stdout=true denied by rule ci/deny/db: no exec into the database\r\n" +
				"$ sh -c 'make test'\r\n" +
				"ok 1\r\nok 2\r\nwarning: flaky\r\n" +
				"[exit 3]\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr, ev := k8sSession(tc.tty)
			var b bytes.Buffer
			if err := WriteAsciicast(&b, hdr, ev, 0, 0); err != nil {
				t.Fatal(err)
			}
			c := parseCast(t, b.Bytes())
			if c.Width != tc.width || c.Height != tc.height {
				t.Errorf("size %dx%d, want %dx%d", c.Width, c.Height, tc.width, tc.height)
			}
			if c.out != tc.out {
				t.Errorf("output\n%q\nwant\n%q", c.out, tc.out)
			}
			if c.in != tc.in {
				t.Errorf("input %q, want %q", c.in, tc.in)
			}
			if strings.Join(c.resizes, " ") != strings.Join(tc.resizes, " ") {
				t.Errorf("resizes %v, want %v", c.resizes, tc.resizes)
			}

			// Replay shows the same output.
			var r bytes.Buffer
			if err := Replay(context.Background(), &r, ev, 1e6); err != nil {
				t.Fatal(err)
			}
			if r.String() != tc.out {
				t.Errorf("replay\n%q\nwant\n%q", r.String(), tc.out)
			}
		})
	}
}

func TestK8sRequestLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"POST /api/v1/namespaces/ci/pods/web/exec?command=ls&command=-l&command=%2Ftmp", "$ ls -l /tmp"},
		{"GET /api/v1/namespaces/ci/pods/web/exec?command=sh&command=-c&command=echo+%27hi%27%3B+id", `$ sh -c 'echo '\''hi'\''; id'`},
		{"POST /api/v1/namespaces/ci/pods/web/exec?stdin=true", "-- exec ci/web"},
		{"POST /api/v1/namespaces/ci/pods/web/attach?stdin=true&tty=true", "-- attach ci/web"},
		{"POST /api/v1/namespaces/ci/pods/web/portforward?ports=8080&ports=9090", "-- port-forward ci/web 8080,9090"},
		{"GET /api/v1/namespaces/ci/pods/web/log", "-- GET /api/v1/namespaces/ci/pods/web/log"},
		{"GET /apis/apps/v1/namespaces/ci/deployments/web", "-- GET /apis/apps/v1/namespaces/ci/deployments/web"},
		{"", "-- (get request; text not recorded)"},
	} {
		e := record.Event{Type: record.TypeStatement, Kind: "get", Text: tc.text}
		if got := k8sRequestLine(e.Text, requestText(&e)); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.text, got, tc.want)
		}
	}
}

func TestK8sNoPCAP(t *testing.T) {
	_, ev := k8sSession(false)
	var b bytes.Buffer
	err := WritePCAP(&b, ev, netip.MustParseAddrPort("127.0.0.1:50000"), netip.MustParseAddrPort("10.0.0.9:6443"))
	if !errors.Is(err, ErrNotAStream) || b.Len() != 0 {
		t.Fatalf("pcap of a Kubernetes session: %v, %d bytes written", err, b.Len())
	}
}
