package export

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
)

func TestWritePCAP(t *testing.T) {
	s := newSession(t)
	for _, tc := range []struct {
		name           string
		client, server string
	}{
		{"ipv4 default port", "10.1.2.3:51234", "10.9.8.7:5432"},
		{"ipv4 other port", "10.1.2.3:51234", "10.9.8.7:6543"},
		{"ipv6", "[fd00::1]:40000", "[fd00::2]:5432"},
		{"ipv4-mapped", "[::ffff:127.0.0.1]:40000", "127.0.0.1:15432"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := netip.MustParseAddrPort(tc.client), netip.MustParseAddrPort(tc.server)
			var buf bytes.Buffer
			if err := WritePCAP(&buf, s.events, client, server); err != nil {
				t.Fatalf("WritePCAP: %v", err)
			}
			c2s, s2c := checkConversation(t, buf.Bytes(), s.events, client.Port(), client.Addr().Unmap().Is4())
			if !bytes.Equal(c2s, s.c2s) {
				t.Errorf("client stream: got %d bytes, want the recorded %d", len(c2s), len(s.c2s))
			}
			if !bytes.Equal(s2c, s.s2c) {
				t.Errorf("server stream: got %d bytes, want the recorded %d", len(s2c), len(s.s2c))
			}

			path := filepath.Join(t.TempDir(), "session.pcap")
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			queries := tshark(t, path, server.Port(), "-Y", "pgsql.query", "-T", "fields", "-e", "pgsql.query")
			for _, want := range []string{"SELECT 42", "SELECT repeat('x', 150000)", "DROP TABLE users;"} {
				if !strings.Contains(queries, want) {
					t.Errorf("tshark shows queries %q; want %q among them", queries, want)
				}
			}
			// Every checksum verifies, and TCP analysis finds nothing
			// amiss (no lost segment, out-of-order, window full ...).
			bad := tshark(t, path, server.Port(), "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
				"-Y", "ip.checksum.status == 0 || tcp.checksum.status == 0 || tcp.analysis.flags || _ws.malformed")
			if bad != "" {
				t.Errorf("tshark flags packets:\n%s", bad)
			}
			// The whole reply to the large SELECT reassembles into one
			// DataRow of the recorded size.
			rows := tshark(t, path, server.Port(), "-Y", "pgsql.type == \"Data row\"", "-T", "fields", "-e", "pgsql.val.length")
			if !strings.Contains(rows, strconv.Itoa(bigRowBytes)) {
				t.Errorf("tshark data row lengths %q; want one of %d", rows, bigRowBytes)
			}
		})
	}
}

// tshark runs tshark on path, decoding the server port as PostgreSQL, and
// returns its standard output. Without tshark it skips the test, unless
// SLUICE_E2E=required.
func tshark(t *testing.T, path string, port uint16, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("tshark")
	testenv.Need(t, err == nil, "tshark not installed (apt-get install tshark)")
	argv := []string{"-n", "-r", path}
	if port != 5432 {
		argv = append(argv, "-d", "tcp.port=="+strconv.Itoa(int(port))+",pgsql")
	}
	cmd := exec.Command(bin, append(argv, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user preferences
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark %v: %v\n%s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// checkConversation reads a capture WritePCAP wrote and checks it is one
// well-formed TCP connection: handshake, data whose sequence and
// acknowledgement numbers follow the byte streams exactly with no side
// exceeding the window, and the close, with timestamps from the wire
// events. It returns the reassembled client and server streams.
func checkConversation(t *testing.T, capture []byte, events []record.Event, clientPort uint16, v4 bool) (c2s, s2c []byte) {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(capture))
	if err != nil {
		t.Fatalf("read pcap: %v", err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("link type %v, want Ethernet", r.LinkType())
	}
	var wireTimes []time.Time
	for _, e := range events {
		if e.Type == record.TypeWire && len(e.Data) > 0 {
			wireTimes = append(wireTimes, e.Time)
		}
	}

	type seg struct {
		ts      time.Time
		from    int
		tcp     *layers.TCP
		payload []byte
	}
	var segs []seg
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read packet %d: %v", len(segs), err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		if el := p.ErrorLayer(); el != nil {
			t.Fatalf("packet %d does not decode: %v", len(segs), el.Error())
		}
		if (p.Layer(layers.LayerTypeIPv4) != nil) != v4 {
			t.Fatalf("packet %d: IPv4 is %v, want %v", len(segs), !v4, v4)
		}
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			t.Fatalf("packet %d has no TCP layer", len(segs))
		}
		from := fromServer
		if uint16(tcp.SrcPort) == clientPort {
			from = fromClient
		}
		segs = append(segs, seg{ci.Timestamp, from, tcp, tcp.Payload})
	}
	if len(segs) < 6 {
		t.Fatalf("%d packets; want at least a handshake and a close", len(segs))
	}

	// Handshake.
	open := segs[:3]
	if f := open[0]; f.from != fromClient || !f.tcp.SYN || f.tcp.ACK {
		t.Fatalf("packet 0 is not the client's SYN")
	}
	if f := open[1]; f.from != fromServer || !f.tcp.SYN || !f.tcp.ACK || f.tcp.Ack != open[0].tcp.Seq+1 {
		t.Fatalf("packet 1 is not the server's SYN-ACK")
	}
	next := [2]uint32{open[0].tcp.Seq + 1, open[1].tcp.Seq + 1}
	if f := open[2]; f.from != fromClient || f.tcp.SYN || !f.tcp.ACK || f.tcp.Seq != next[0] || f.tcp.Ack != next[1] {
		t.Fatalf("packet 2 is not the client's ACK")
	}
	for _, f := range open {
		if !f.ts.Equal(wireTimes[0]) {
			t.Errorf("handshake at %v, want the first wire event's time %v", f.ts, wireTimes[0])
		}
	}

	// Data, in order, acknowledging everything the other side sent.
	var streams [2][]byte
	var acked [2]uint32 = next
	prev := segs[0].ts
	for i, f := range segs[3 : len(segs)-3] {
		i += 3
		if f.ts.Before(prev) {
			t.Errorf("packet %d: time goes back from %v to %v", i, prev, f.ts)
		}
		prev = f.ts
		to := 1 - f.from
		if f.tcp.SYN || f.tcp.FIN || !f.tcp.ACK {
			t.Fatalf("packet %d: flags SYN=%v FIN=%v ACK=%v in the data phase", i, f.tcp.SYN, f.tcp.FIN, f.tcp.ACK)
		}
		if f.tcp.Seq != next[f.from] || f.tcp.Ack != next[to] {
			t.Fatalf("packet %d: seq %d ack %d, want seq %d ack %d", i, f.tcp.Seq, f.tcp.Ack, next[f.from], next[to])
		}
		acked[to] = f.tcp.Ack
		if len(f.payload) > maxSegment {
			t.Errorf("packet %d carries %d bytes, more than %d", i, len(f.payload), maxSegment)
		}
		if len(f.payload) > 0 && !f.tcp.PSH {
			t.Errorf("packet %d carries data without PSH", i)
		}
		next[f.from] += uint32(len(f.payload))
		if inFlight := next[f.from] - acked[f.from]; inFlight > uint32(f.tcp.Window) {
			t.Errorf("packet %d: %d bytes unacknowledged, more than the %d-byte window", i, inFlight, f.tcp.Window)
		}
		streams[f.from] = append(streams[f.from], f.payload...)
	}

	// Close: client FIN, server FIN, client ACK of the server's FIN.
	fin := segs[len(segs)-3:]
	if f := fin[0]; f.from != fromClient || !f.tcp.FIN || f.tcp.Seq != next[0] || f.tcp.Ack != next[1] {
		t.Fatalf("third-last packet is not the client's FIN")
	}
	if f := fin[1]; f.from != fromServer || !f.tcp.FIN || f.tcp.Seq != next[1] || f.tcp.Ack != next[0]+1 {
		t.Fatalf("second-last packet is not the server's FIN")
	}
	if f := fin[2]; f.from != fromClient || f.tcp.FIN || !f.tcp.ACK || f.tcp.Ack != next[1]+1 {
		t.Fatalf("last packet is not the client's ACK of the server's FIN")
	}
	for _, f := range fin {
		if last := wireTimes[len(wireTimes)-1]; !f.ts.Equal(last) {
			t.Errorf("close at %v, want the last wire event's time %v", f.ts, last)
		}
	}
	return streams[fromClient], streams[fromServer]
}

func TestWritePCAPErrors(t *testing.T) {
	v4, v4b := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:5432")
	v6 := netip.MustParseAddrPort("[fd00::2]:5432")
	wire := []record.Event{{Type: record.TypeWire, Dir: record.DirClientToServer, Data: []byte("x"), Time: t0}}
	for _, tc := range []struct {
		name           string
		events         []record.Event
		client, server netip.AddrPort
		want           error
	}{
		{"no wire events", []record.Event{{Type: record.TypeStatement, Text: "SELECT 1"}}, v4, v4b, ErrNoWire},
		{"only empty wire events", []record.Event{{Type: record.TypeWire, Dir: record.DirClientToServer}}, v4, v4b, ErrNoWire},
		{"mixed families", wire, v4, v6, nil},
		{"port 0", wire, netip.AddrPortFrom(v4.Addr(), 0), v4b, nil},
		{"invalid address", wire, netip.AddrPort{}, v4b, nil},
		{"unknown direction", []record.Event{{Type: record.TypeWire, Dir: "up", Data: []byte("x")}}, v4, v4b, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WritePCAP(&buf, tc.events, tc.client, tc.server)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("WritePCAP = %v, want an error (%v)", err, tc.want)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes before failing; want nothing", buf.Len())
			}
		})
	}
}

func TestEndpoints(t *testing.T) {
	s := newSession(t)
	c, srv, err := Endpoints(s.events)
	if err != nil || c.String() != "10.1.2.3:51234" || srv.String() != "10.9.8.7:5432" {
		t.Fatalf("Endpoints = %v, %v, %v", c, srv, err)
	}
	if _, _, err := Endpoints(s.events[1:]); err == nil {
		t.Fatal("Endpoints without session_start: no error")
	}
}

// FuzzWritePCAP checks that any split of any bytes into wire events in
// either direction reassembles to exactly those bytes.
func FuzzWritePCAP(f *testing.F) {
	f.Add([]byte("Q\x00\x00\x00\x0eSELECT 42\x00"), []byte{3, 0, 200})
	f.Add(bytes.Repeat([]byte{0xa5}, 70000), []byte{255, 255, 255, 1})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		var events []record.Event
		var want [2][]byte
		for i := 0; len(data) > 0; i++ {
			n := len(data)
			if i < len(cuts) {
				n = min(n, int(cuts[i])*300+1)
			}
			from, dir := fromClient, record.DirClientToServer
			if i%2 == 1 {
				from, dir = fromServer, record.DirServerToClient
			}
			events = append(events, record.Event{Type: record.TypeWire, Dir: dir, Data: data[:n],
				Time: t0.Add(time.Duration(i) * time.Millisecond)})
			want[from] = append(want[from], data[:n]...)
			data = data[n:]
		}
		if len(events) == 0 {
			return
		}
		client, server := netip.MustParseAddrPort("192.0.2.1:40000"), netip.MustParseAddrPort("192.0.2.2:5432")
		var buf bytes.Buffer
		if err := WritePCAP(&buf, events, client, server); err != nil {
			t.Fatal(err)
		}
		c2s, s2c := checkConversation(t, buf.Bytes(), events, client.Port(), true)
		if !bytes.Equal(c2s, want[fromClient]) || !bytes.Equal(s2c, want[fromServer]) {
			t.Fatalf("streams of %d and %d bytes, want %d and %d", len(c2s), len(s2c), len(want[0]), len(want[1]))
		}
	})
}
