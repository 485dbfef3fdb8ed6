package mask

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// benchRow is a 100-byte row of ten 10-byte values.
func benchRow() [][]byte {
	row := make([][]byte, 10)
	for i := range row {
		row[i] = []byte(fmt.Sprintf("value-%04d", i))
	}
	row[3] = []byte("al@ex.com ")
	row[7] = []byte("4111111111")
	return row
}

func benchCols() []Column {
	cols := make([]Column, 10)
	for i := range cols {
		cols[i] = Column{Schema: "public", Table: "users", Name: fmt.Sprintf("c%d", i), Type: OIDText}
	}
	cols[3].Name, cols[7].Name = "email", "card"
	return cols
}

func benchRows(b *testing.B, rules ...*ruleset.Rule) {
	m := mustNew(b, rules...)
	p := m.Plan(benchCols())
	row := benchRow()
	dst := make([]byte, 0, 256)
	b.SetBytes(100)
	b.ReportAllocs()
	for b.Loop() {
		out := dst[:0]
		for i, v := range row {
			o, _, changed := p.Apply(i, v, out)
			if changed {
				out = o
			}
		}
	}
}

// BenchmarkRow masks a 100-byte row with 2 masked columns of 10, the
// others relayed as they are.
func BenchmarkRow(b *testing.B) {
	b.Run("hash+partial", func(b *testing.B) {
		benchRows(b,
			maskRule("h", ruleset.MaskSpec{Columns: []string{"users.email"}, Using: "hash"}),
			maskRule("p", ruleset.MaskSpec{Columns: []string{"users.card"}, Using: "partial"}))
	})
	// The same, with every built-in detector scanning the other 8.
	b.Run("hash+partial+detectors", func(b *testing.B) {
		benchRows(b,
			maskRule("h", ruleset.MaskSpec{Columns: []string{"users.email"}, Using: "hash"}),
			maskRule("p", ruleset.MaskSpec{Columns: []string{"users.card"}, Using: "partial"}),
			maskRule("d", ruleset.MaskSpec{Detect: ruleset.Detectors()}))
	})
}

// BenchmarkCopyText masks the same row as COPY text data.
func BenchmarkCopyText(b *testing.B) {
	m := mustNew(b,
		maskRule("h", ruleset.MaskSpec{Columns: []string{"users.email"}, Using: "hash"}),
		maskRule("p", ruleset.MaskSpec{Columns: []string{"users.card"}, Using: "partial"}))
	p := m.Plan(benchCols())
	var line []byte
	for i, v := range benchRow() {
		if i > 0 {
			line = append(line, '\t')
		}
		line = append(line, v...)
	}
	line = append(line, '\n')
	dst := make([]byte, 0, 256)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.CopyText(line, dst[:0], CopyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDetect scans 1 KB of text with every built-in detector: log
// text with nothing to find, and the same with an email, a card number
// and a token in it.
func BenchmarkDetect(b *testing.B) {
	m := mustNew(b, maskRule("d", ruleset.MaskSpec{Detect: ruleset.Detectors()}))
	clean := strings.Repeat("2024-01-15 10:30:00 INFO request id=42 path=/api/v1/items status=200 took 3.2ms user 1234 ok\n", 12)[:1024]
	const secrets = " alice@example.com 4111 1111 1111 1111 ghp_R7x2Kq9LmZp4Wt8Yv3Nb6Hd1Fs5Gj0Ac "
	dirty := clean[:300] + secrets + clean[300+len(secrets):]
	for _, tt := range []struct{ name, text string }{{"clean", clean}, {"dirty", dirty}} {
		b.Run(tt.name, func(b *testing.B) {
			p := m.Plan([]Column{{Name: "msg"}})
			v := []byte(tt.text)
			dst := make([]byte, 0, 2048)
			b.SetBytes(int64(len(v)))
			b.ReportAllocs()
			for b.Loop() {
				p.Apply(0, v, dst[:0])
			}
		})
	}
}

// BenchmarkDefaultDetect runs the default ruleset's detectors over the
// values of bench/pgbench.sh's bulk table (an int4 id, an e-mail
// address, an md5 token and a 120-byte payload; 4 values a row) and over
// typical short values: numbers, names, timestamps, hex ids.
func BenchmarkDefaultDetect(b *testing.B) {
	r := ruleset.Default().Rule("baseline/mask/secrets-and-personal-data")
	if r == nil || r.Mask == nil {
		b.Fatal("the default ruleset has no baseline mask rule")
	}
	m := mustNew(b, r)
	for _, tt := range []struct {
		name string
		cols []Column
		row  []string
	}{
		{"bulk-row", []Column{{Name: "id", Type: OIDInt4}, {Name: "email", Type: OIDText}, {Name: "token", Type: OIDText}, {Name: "payload", Type: OIDText}},
			[]string{"12345", "person12345@example.com", "827ccb0eea8a706c4c34a16891f84e7b", strings.Repeat("x", 120)}},
		// sysbench's sbtest rows (bench/mysql.sh): an id, k, and c and pad,
		// groups of 11 random digits joined by dashes, which every
		// digit-based detector has to look at.
		{"sysbench-row", []Column{{Name: "id", Type: OIDInt4}, {Name: "k", Type: OIDInt4}, {Name: "c", Type: OIDText}, {Name: "pad", Type: OIDText}},
			[]string{"5021", "4987", "83868641912-28773972837-60736120486-75867961291-34954843101-50541209574-29567325108-20151813584-08472431726-51324165613",
				"67847967377-48000963322-62604785301-91415491898-96926520291"}},
		{"short-values", []Column{{Name: "n", Type: OIDInt8}, {Name: "name", Type: OIDText}, {Name: "ts", Type: OIDText}, {Name: "hex", Type: OIDText}},
			[]string{"1700000000123", "Alice Smith", "2024-01-15 10:30:00.123+00", "5d41402abc4b2a76b9719d911017c592"}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			p := m.Plan(tt.cols)
			row := make([][]byte, len(tt.row))
			n := 0
			for i, v := range tt.row {
				row[i] = []byte(v)
				n += len(v)
			}
			dst := make([]byte, 0, 256)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				for i, v := range row {
					p.Apply(i, v, dst[:0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(row)), "ns/value")
		})
	}
}

// BenchmarkProfileOf is the pre-scan every text value gets before the
// detectors: a long plain value, a hex token (digits: the run pass too)
// and an e-mail address.
func BenchmarkProfileOf(b *testing.B) {
	for name, v := range map[string]string{
		"payload120": strings.Repeat("x", 120),
		"md5":        "c4ca4238a0b923820dcc509a6f75849b",
		"email":      "person12345@example.com",
	} {
		b.Run(name, func(b *testing.B) {
			bs := []byte(v)
			b.SetBytes(int64(len(bs)))
			for b.Loop() {
				profileOf(bs)
			}
		})
	}
}

// BenchmarkEachDetector runs each built-in detector alone, and the
// profile pass, over sysbench's c column (digit groups joined by dashes:
// every digit-based detector's need is met) and over a line of log text.
func BenchmarkEachDetector(b *testing.B) {
	for _, v := range []struct{ name, text string }{
		{"sysbench-c", "83868641912-28773972837-60736120486-75867961291-34954843101-50541209574-29567325108-20151813584-08472431726-51324165613"},
		{"log", "2024-01-15 10:30:00 INFO request id=42 path=/api/v1/items status=200 took 3.2ms user 1234 ok"},
	} {
		bs := []byte(v.text)
		b.Run(v.name+"/profile", func(b *testing.B) {
			b.SetBytes(int64(len(bs)))
			for b.Loop() {
				profileOf(bs)
			}
		})
		for _, name := range ruleset.Detectors() {
			find := builtins[name]
			b.Run(v.name+"/"+name, func(b *testing.B) {
				out := make([]span, 0, 8)
				b.SetBytes(int64(len(bs)))
				for b.Loop() {
					out = find(bs, 0, out[:0])
				}
			})
		}
	}
}
