package postgres

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// repeat reads b n times, then reports EOF.
type repeat struct {
	b   []byte
	off int
	n   int
}

func (r *repeat) Read(p []byte) (int, error) {
	total := 0
	for len(p) > 0 && r.n > 0 {
		k := copy(p, r.b[r.off:])
		p, total, r.off = p[k:], total+k, r.off+k
		if r.off == len(r.b) {
			r.off, r.n = 0, r.n-1
		}
	}
	if total == 0 {
		return 0, io.EOF
	}
	return total, nil
}

// BenchmarkRelay runs the statement relay over one simple query and its
// ten-row text result per op, both sides through in-memory streams: the
// per-statement cost of classification (a cache hit), the verdict, the
// queue, and for mask the result's plan (reused) and each row through the
// value detectors. allocs/op is what one statement costs the relay.
func BenchmarkRelay(b *testing.B) {
	query := msg('Q', "SELECT email FROM users WHERE id = 1\x00")
	desc := oneColumn("email", 0, 0, 25, -1) // text, of no table
	answer := msg('T', string(desc))
	for i := range 10 {
		v := "a plain value of some length"
		if i%2 == 0 {
			v = "someone@example.com"
		}
		row := binary.BigEndian.AppendUint16(nil, 1)
		row = binary.BigEndian.AppendUint32(row, uint32(len(v)))
		answer = append(answer, msg('D', string(append(row, v...)))...)
	}
	answer = append(answer, msg('C', "SELECT 10\x00")...)
	answer = append(answer, msg('Z', "I")...)

	for _, bc := range []struct{ name, rules string }{
		{"allow", ""},
		{"mask", `mask "emails" {
    detect = ["email"]
    using  = "redact"
  }`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(`
target "postgres" {
  protocol = "postgres"
  address  = ["10.0.0.5:5432"]
}
policy "ci" {
  targets = ["postgres"]
  ` + bc.rules + `
}
`)})
			if diags.HasErrors() {
				b.Fatal(diags)
			}
			r := testRelay(rs, &repeat{b: query, n: b.N}, &repeat{b: answer, n: b.N}, io.Discard, &leakCheck{b: b}, DefaultMaxMessage)
			b.SetBytes(int64(len(query) + len(answer)))
			b.ReportAllocs()
			b.ResetTimer()
			if err := r.clientLoop(); err != io.EOF {
				b.Fatal(err)
			}
			if err := r.serverLoop(); err != io.EOF {
				b.Fatal(err)
			}
		})
	}
}

// leakCheck fails the benchmark when a write holds the unmasked address
// while masking (the relay writes each row in one piece).
type leakCheck struct{ b *testing.B }

func (w *leakCheck) Write(p []byte) (int, error) {
	if strings.Contains(w.b.Name(), "mask") && bytes.Contains(p, []byte("someone@example.com")) {
		w.b.Fatal("an address passed unmasked")
	}
	return len(p), nil
}

// BenchmarkRelayPgbench runs the relay over what pgbench -S sends and gets
// per transaction in each of its protocols, unrecorded, under the default
// ruleset: the decoder's own cost per transaction, without the sockets.
func BenchmarkRelayPgbench(b *testing.B) {
	const text = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
	desc := oneColumn("abalance", 16400, 3, 23, 4) // int4, pgbench_accounts' third column
	row := string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint16(nil, 1), 1)) + "0"
	parse := func(name string) []byte {
		return msg('P', name+"\x00"+text+"\x00\x00\x01\x00\x00\x00\x17")
	}
	bind := func(stmt string) []byte {
		return msg('B', "\x00"+stmt+"\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0512345\x00\x00")
	}
	cat := func(m ...[]byte) []byte { return bytes.Join(m, nil) }
	end := cat(msg('D', row), msg('C', "SELECT 1\x00"), msg('Z', "I"))
	for _, bc := range []struct {
		name                             string
		once, client, onceServer, server []byte
	}{
		{name: "simple",
			client: msg('Q', "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\x00"),
			server: cat(msg('T', string(desc)), end)},
		{name: "extended",
			client: cat(parse(""), bind(""), msg('D', "P\x00"), msg('E', "\x00\x00\x00\x00\x00"), msg('S', "")),
			server: cat(msg('1', ""), msg('2', ""), msg('T', string(desc)), end)},
		{name: "prepared",
			once: cat(parse("P0_1"), msg('S', "")), onceServer: cat(msg('1', ""), msg('Z', "I")),
			client: cat(bind("P0_1"), msg('E', "\x00\x00\x00\x00\x00"), msg('S', "")),
			// The proxy asks for each portal's description (the default
			// ruleset's detectors mask by column): one more message.
			server: cat(msg('2', ""), msg('T', string(desc)), end)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client := io.MultiReader(bytes.NewReader(bc.once), &repeat{b: bc.client, n: b.N})
			server := io.MultiReader(bytes.NewReader(bc.onceServer), &repeat{b: bc.server, n: b.N})
			r := testRelay(ruleset.Default(), client, server, io.Discard, io.Discard, DefaultMaxMessage)
			b.ReportAllocs()
			b.ResetTimer()
			if err := r.clientLoop(); err != io.EOF {
				b.Fatal(err)
			}
			if err := r.serverLoop(); err != io.EOF {
				b.Fatal(err)
			}
		})
	}
}

// oneColumn is a RowDescription body of one text-format column: its name,
// table OID and attribute number (0 for none), type OID and size.
func oneColumn(name string, table uint32, attnum int16, typ uint32, size int16) []byte {
	desc := binary.BigEndian.AppendUint16(nil, 1)
	desc = append(append(desc, name...), 0)
	desc = binary.BigEndian.AppendUint32(desc, table)
	desc = binary.BigEndian.AppendUint16(desc, uint16(attnum))
	desc = binary.BigEndian.AppendUint32(desc, typ)
	desc = binary.BigEndian.AppendUint16(desc, uint16(size))
	desc = binary.BigEndian.AppendUint32(desc, 0xffffffff) // type modifier
	return binary.BigEndian.AppendUint16(desc, 0)          // text
}
