package export

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/sluicehq/sluice/enforcer/record"
)

// pcap choices; see WritePCAP.
const (
	// maxSegment is the most payload one synthesized TCP segment carries:
	// under the 65535-byte IP length limit with room for headers.
	maxSegment = 60000
	// window is the receive window both sides advertise (no window
	// scaling), and the most unacknowledged data WritePCAP lets one side
	// have in flight.
	window = 65535
	// snaplen is the pcap file's snapshot length; no packet is cut.
	snaplen = 262144
	// Initial sequence numbers. Wireshark shows them relative.
	clientISN = 0x5c1ce000
	serverISN = 0x0d5e0000
)

// Fixed, locally administered MAC addresses of the two ends.
var (
	clientMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	serverMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// WritePCAP writes the session's wire events as a pcap capture of one TCP
// connection between client and server, so Wireshark and tshark dissect
// the protocol from the first byte. Events of other types are ignored.
//
// The capture holds, with timestamps from the events:
//
//   - the three-way handshake (SYN, SYN-ACK, ACK) at the first wire
//     event's time;
//   - each wire event's Data in order, from client to server (Dir "c2s")
//     or back ("s2c"), as PSH-ACK segments of at most 60000 bytes whose
//     sequence and acknowledgement numbers continue the byte streams
//     exactly, so reassembling each direction gives the recorded bytes;
//   - a pure ACK from the receiver only where a side would otherwise have
//     more than a 65535-byte window of data unacknowledged;
//   - the close (client FIN, server FIN, client ACK) at the last wire
//     event's time.
//
// Frames are Ethernet II between fixed locally administered MAC addresses
// (02:00:00:00:00:01 client, :02 server) carrying IPv4 or IPv6 as the
// addresses are, with computed lengths and checksums. Both addresses must be
// of the same family (IPv4-mapped IPv6 counts as IPv4). An event's time
// earlier than the one before it is raised to it, so timestamps never go
// back. Synthesized: no retransmission, loss or TCP options, and the
// recorded bytes are after masking.
//
// It returns ErrNoWire, having written nothing, when no event carries wire
// bytes, and ErrNotAStream for an SSH or a Kubernetes session, whose
// recorded bytes are decoded contents (an SSH channel's, an API request
// line and body, an exec's streams), not a TCP stream Wireshark could
// read.
func WritePCAP(w io.Writer, events []record.Event, client, server netip.AddrPort) error {
	if isSSH(events) || isK8s(events) {
		return ErrNotAStream
	}
	first, last := -1, -1
	for i, e := range events {
		if e.Type != record.TypeWire || len(e.Data) == 0 {
			continue
		}
		if e.Dir != record.DirClientToServer && e.Dir != record.DirServerToClient {
			return fmt.Errorf("write pcap: wire event %d: unknown direction %q", e.Seq, e.Dir)
		}
		if first < 0 {
			first = i
		}
		last = i
	}
	if first < 0 {
		return ErrNoWire
	}
	c, err := newConn(client, server)
	if err != nil {
		return fmt.Errorf("write pcap: %w", err)
	}
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(snaplen, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write pcap header: %w", err)
	}
	c.w = pw

	// Open: SYN, SYN-ACK, ACK.
	c.at(events[first].Time)
	c.send(fromClient, flags{syn: true}, nil)
	c.send(fromServer, flags{syn: true, ack: true}, nil)
	c.send(fromClient, flags{ack: true}, nil)

	// Relay every wire event's bytes in recording order.
	for _, e := range events[first : last+1] {
		if e.Type != record.TypeWire || len(e.Data) == 0 {
			continue
		}
		c.at(e.Time)
		from := fromClient
		if e.Dir == record.DirServerToClient {
			from = fromServer
		}
		for data := e.Data; len(data) > 0; {
			n := min(len(data), maxSegment)
			if c.inFlight[from]+n > window {
				// The receiver acknowledges what it has before the
				// sender overruns its window.
				c.send(1-from, flags{ack: true}, nil)
			}
			c.send(from, flags{psh: true, ack: true}, data[:n])
			data = data[n:]
		}
	}

	// Close: the client ends the session, the server closes its side.
	c.at(events[last].Time)
	c.send(fromClient, flags{fin: true, ack: true}, nil)
	c.send(fromServer, flags{fin: true, ack: true}, nil)
	c.send(fromClient, flags{ack: true}, nil)
	if c.err != nil {
		return fmt.Errorf("write pcap: %w", c.err)
	}
	return nil
}

const (
	fromClient = 0
	fromServer = 1
)

type flags struct{ syn, ack, psh, fin bool }

// conn is the state of the synthesized connection: per side (fromClient,
// fromServer) the next sequence number it sends and how much of what it
// sent is not yet acknowledged.
type conn struct {
	w    *pcapgo.Writer
	v6   bool
	ip   [2]net.IP
	mac  [2]net.HardwareAddr
	port [2]layers.TCPPort

	now      time.Time
	nextSeq  [2]uint32
	inFlight [2]int
	ipID     [2]uint16

	buf gopacket.SerializeBuffer
	err error
}

func newConn(client, server netip.AddrPort) (*conn, error) {
	ca, sa := client.Addr().Unmap(), server.Addr().Unmap()
	switch {
	case !client.IsValid() || !server.IsValid():
		return nil, fmt.Errorf("invalid endpoints %v and %v", client, server)
	case ca.Is4() != sa.Is4():
		return nil, fmt.Errorf("endpoints %v and %v are of different address families", client, server)
	case client.Port() == 0 || server.Port() == 0:
		return nil, fmt.Errorf("endpoints %v and %v: port 0", client, server)
	}
	return &conn{
		v6:      !ca.Is4(),
		ip:      [2]net.IP{ca.AsSlice(), sa.AsSlice()},
		mac:     [2]net.HardwareAddr{clientMAC, serverMAC},
		port:    [2]layers.TCPPort{layers.TCPPort(client.Port()), layers.TCPPort(server.Port())},
		nextSeq: [2]uint32{clientISN, serverISN},
		buf:     gopacket.NewSerializeBuffer(),
	}, nil
}

// at moves the capture clock to t, never backwards.
func (c *conn) at(t time.Time) {
	if t.After(c.now) {
		c.now = t
	}
}

// send writes one segment from side from, acknowledging everything the
// other side sent when f.ack is set. After the first error it does nothing;
// the error is in c.err.
func (c *conn) send(from int, f flags, payload []byte) {
	if c.err != nil {
		return
	}
	to := 1 - from
	tcp := &layers.TCP{
		SrcPort: c.port[from], DstPort: c.port[to],
		Seq: c.nextSeq[from], Window: window,
		SYN: f.syn, ACK: f.ack, PSH: f.psh, FIN: f.fin,
	}
	if f.ack {
		tcp.Ack = c.nextSeq[to]
		c.inFlight[to] = 0
	}
	eth := &layers.Ethernet{SrcMAC: c.mac[from], DstMAC: c.mac[to]}
	var ip gopacket.SerializableLayer
	if c.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, NextHeader: layers.IPProtocolTCP, HopLimit: 64, SrcIP: c.ip[from], DstIP: c.ip[to]}
		c.err = tcp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	} else {
		eth.EthernetType = layers.EthernetTypeIPv4
		c.ipID[from]++
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, Id: c.ipID[from],
			Protocol: layers.IPProtocolTCP, SrcIP: c.ip[from], DstIP: c.ip[to]}
		c.err = tcp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	}
	if c.err != nil {
		return
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if c.err = gopacket.SerializeLayers(c.buf, opts, eth, ip, tcp, gopacket.Payload(payload)); c.err != nil {
		return
	}
	b := c.buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: c.now, CaptureLength: len(b), Length: len(b)}
	if c.err = c.w.WritePacket(ci, b); c.err != nil {
		return
	}
	// SYN and FIN each take one sequence number.
	c.nextSeq[from] += uint32(len(payload))
	if f.syn || f.fin {
		c.nextSeq[from]++
	}
	c.inFlight[from] += len(payload)
}
