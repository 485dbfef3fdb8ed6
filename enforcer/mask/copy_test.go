package mask

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

func copyPlan(t testing.TB) *Plan {
	t.Helper()
	m := mustNew(t,
		maskRule("c", ruleset.MaskSpec{Columns: []string{"t.secret"}}),
		maskRule("n", ruleset.MaskSpec{Columns: []string{"t.gone"}, Using: "null"}),
		maskRule("d", ruleset.MaskSpec{Detect: []string{"email"}, Replacement: "a\tb,\"c\"\n\\"}))
	return m.Plan([]Column{
		{Table: "t", Name: "id", Type: OIDInt4},
		{Table: "t", Name: "secret", Type: OIDText},
		{Table: "t", Name: "gone", Type: OIDText},
		{Table: "t", Name: "notes", Type: OIDText},
	})
}

// The detector's replacement holds every character the formats escape,
// so re-encoding is exercised.
const tricky = "a\tb,\"c\"\n\\"

func TestCopyText(t *testing.T) {
	p := copyPlan(t)
	in := "1\tpw\\tx\tbye\tmail alice@example.com\\nnext\n" +
		"2\t\\N\t\\N\t\\\\N plain\\x41\\101\n"
	// \N in a masked column: NULL stays NULL (not masked).
	want := "1\t[REDACTED]\t\\N\tmail a\\tb,\"c\"\\n\\\\\\nnext\n" +
		"2\t\\N\t\\N\t\\\\N plain\\x41\\101\n"
	out, err := p.CopyText([]byte(in), nil, CopyOptions{})
	if err != nil || string(out) != want {
		t.Fatalf("CopyText =\n%q, %v\nwant\n%q", out, err, want)
	}
	// Decoding the output gives the masked values.
	fields := bytes.Split(bytes.TrimSuffix(bytes.SplitN(out, []byte("\n"), 2)[0], nil), []byte("\t"))
	if got := string(unescapeText(nil, fields[3])); got != "mail "+tricky+"\nnext" {
		t.Errorf("decoded %q", got)
	}

	// Header, custom delimiter and null marker.
	null := "NULL"
	p = copyPlan(t)
	out, err = p.CopyText([]byte("id|secret|gone|notes\n1|x|y|NULL\n"), nil, CopyOptions{Delimiter: '|', Null: &null, Header: true})
	if err != nil || string(out) != "id|secret|gone|notes\n1|[REDACTED]|NULL|NULL\n" {
		t.Errorf("header: %q, %v", out, err)
	}

	for _, bad := range []string{"1\tx\ty\tz", "1\tx\ty\n", "1\tx\ty\tz\tw\n"} {
		if _, err := copyPlan(t).CopyText([]byte(bad), nil, CopyOptions{}); err == nil {
			t.Errorf("CopyText(%q) accepted", bad)
		}
	}
	if _, err := copyPlan(t).CopyText([]byte("1\tx\ty\tz"), nil, CopyOptions{}); !errors.Is(err, ErrPartialRow) {
		t.Errorf("partial row: %v", err)
	}
}

func TestCopyCSV(t *testing.T) {
	p := copyPlan(t)
	in := "1,pw,bye,\"mail alice@example.com\nsecond line\"\r\n" +
		"2,,\"\",plain\n" +
		"3,\"\",x,\"q\"\"uote\"\n"
	want := "1,[REDACTED],,\"mail " + "a\tb,\"\"c\"\"\n\\" + "\nsecond line\"\r\n" +
		"2,,,plain\n" +
		"3,[REDACTED],,\"q\"\"uote\"\n"
	out, err := p.CopyCSV([]byte(in), nil, CopyOptions{})
	if err != nil || string(out) != want {
		t.Fatalf("CopyCSV =\n%q, %v\nwant\n%q", out, err, want)
	}
	if _, err := copyPlan(t).CopyCSV([]byte("1,a,b,\"open\nquote"), nil, CopyOptions{}); !errors.Is(err, ErrPartialRow) {
		t.Errorf("open quote: %v", err)
	}
	if _, err := copyPlan(t).CopyCSV([]byte("1,a,b,\"x\"y\n"), nil, CopyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("text after quote: %v", err)
	}
	// Header with quoted names passes through.
	p = copyPlan(t)
	out, err = p.CopyCSV([]byte("id,\"se,cret\",gone,notes\n1,x,y,z\n"), nil, CopyOptions{Header: true})
	if err != nil || string(out) != "id,\"se,cret\",gone,notes\n1,[REDACTED],,z\n" {
		t.Errorf("header: %q, %v", out, err)
	}
	// Escape character other than the quote.
	p = copyPlan(t)
	out, err = p.CopyCSV([]byte("1,\"a\\\"b\",x,\"bob@example.com\"\n"), nil, CopyOptions{Escape: '\\'})
	if err != nil || string(out) != "1,[REDACTED],,\"a\tb,\\\"c\\\"\n\\\\\"\n" {
		t.Errorf("escape: %q, %v", out, err)
	}
}

func binTuple(fields ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(fields)))
	for _, f := range fields {
		if f == nil {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func binHeader() []byte { return append(append([]byte(nil), copySignature...), 0, 0, 0, 0, 0, 0, 0, 0) }

func TestCopyBinary(t *testing.T) {
	p := copyPlan(t)
	id := []byte{0, 0, 0, 1}
	in := append(binHeader(), binTuple(id, []byte("pw"), []byte("bye"), []byte("hi bob@example.com"))...)
	want := append(binHeader(), binTuple(id, []byte("[REDACTED]"), nil, []byte("hi "+tricky))...)
	out, err := p.CopyBinary(in, nil)
	if err != nil || !bytes.Equal(out, want) {
		t.Fatalf("CopyBinary = %q, %v\nwant %q", out, err, want)
	}
	// Next message: one more tuple and the trailer.
	in2 := append(binTuple(id, nil, nil, []byte("x")), 0xff, 0xff)
	out, err = p.CopyBinary(in2, nil)
	if err != nil || !bytes.Equal(out, in2) {
		t.Errorf("second chunk = %q, %v", out, err)
	}
	if _, err := copyPlan(t).CopyBinary(append(binHeader(), binTuple(id)...), nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("wrong field count: %v", err)
	}
	trunc := append(binHeader(), binTuple(id, []byte("pw"), []byte("bye"), []byte("hi"))...)
	if _, err := copyPlan(t).CopyBinary(trunc[:len(trunc)-1], nil); !errors.Is(err, ErrPartialRow) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := copyPlan(t).CopyBinary([]byte("PGCOPX\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"), nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad signature: %v", err)
	}
}

// parseText splits COPY text data into decoded rows; nil fields are NULL.
func parseText(data []byte) ([][]*string, bool) {
	var rows [][]*string
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return nil, false
		}
		var row []*string
		for _, f := range bytes.Split(data[:nl], []byte("\t")) {
			if string(f) == `\N` {
				row = append(row, nil)
				continue
			}
			s := string(unescapeText(nil, f))
			row = append(row, &s)
		}
		rows = append(rows, row)
		data = data[nl+1:]
	}
	return rows, true
}

func FuzzCopyText(f *testing.F) {
	f.Add([]byte("1\tpw\tbye\tmail alice@example.com\n"))
	f.Add([]byte("1\t\\N\t\\x41\\101\\\\\t\\n\\t\n2\ta\tb\tc\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := copyPlan(t)
		out, err := p.CopyText(data, nil, CopyOptions{})
		if err != nil {
			return
		}
		rows, ok := parseText(out)
		if !ok {
			t.Fatalf("output %q does not parse", out)
		}
		in, _ := parseText(data)
		if len(rows) != len(in) {
			t.Fatalf("%d rows in, %d out", len(in), len(rows))
		}
		for i, r := range rows {
			if len(r) != 4 {
				t.Fatalf("row %d has %d fields", i, len(r))
			}
			if r[1] != nil && *r[1] != "[REDACTED]" || r[2] != nil {
				t.Fatalf("row %d not masked: %q", i, out)
			}
			if r[3] != nil && *r[3] != "" {
				// Masking is idempotent here: no email survives.
				if len(builtins["email"]([]byte(*r[3]), 0, nil)) > 0 {
					t.Fatalf("email survived in %q", *r[3])
				}
			}
		}
		// Masking the masked output changes nothing more.
		again, err := copyPlan(t).CopyText(out, nil, CopyOptions{})
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second pass: %q, %v; first %q", again, err, out)
		}
	})
}

func FuzzCopyCSV(f *testing.F) {
	f.Add([]byte("1,pw,bye,\"mail alice@example.com\nx\"\r\n"))
	f.Add([]byte("2,,\"\",\"q\"\"uote\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := copyPlan(t).CopyCSV(data, nil, CopyOptions{})
		if err != nil {
			return
		}
		again, err := copyPlan(t).CopyCSV(out, nil, CopyOptions{})
		if err != nil {
			t.Fatalf("output %q does not parse: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("second pass changed %q to %q", out, again)
		}
	})
}

func FuzzCopyBinary(f *testing.F) {
	id := []byte{0, 0, 0, 1}
	f.Add(append(append(binHeader(), binTuple(id, []byte("pw"), []byte("bye"), []byte("hi bob@example.com"))...), 0xff, 0xff))
	f.Add(append(binHeader(), binTuple(id, nil, nil, nil)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := copyPlan(t).CopyBinary(data, nil)
		if err != nil {
			return
		}
		again, err := copyPlan(t).CopyBinary(out, nil)
		if err != nil {
			t.Fatalf("output %q does not parse: %v", out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("second pass changed %q to %q", out, again)
		}
	})
}
