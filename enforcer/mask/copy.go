package mask

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// CopyOptions are the COPY ... TO STDOUT options that shape its data.
// The zero value means PostgreSQL's defaults for the format.
type CopyOptions struct {
	// Delimiter separates fields: tab for text, ',' for csv when 0.
	Delimiter byte
	// Null is the NULL marker: `\N` for text, "" (an unquoted empty
	// field) for csv when nil.
	Null *string
	// Quote and Escape are csv's quote character ('"' when 0) and escape
	// character (the quote when 0).
	Quote, Escape byte
	// Header says the data starts with a header line (HEADER), which is
	// passed through unmasked. The plan remembers having passed it, so
	// set Header on every call of one COPY.
	Header bool
}

func (o *CopyOptions) null(def string) []byte {
	if o.Null != nil {
		return []byte(*o.Null)
	}
	return []byte(def)
}

// CopyText masks COPY text-format data: one or more whole rows, each
// ending in a newline, fields separated by the delimiter, NULL as the
// null marker and backslash escapes in values. Each field is decoded,
// masked as Apply masks it, and re-encoded as PostgreSQL would; fields
// that need no masking keep their bytes. The result is appended to dst.
//
// The proxy hands whole CopyData messages, which PostgreSQL fills with
// whole rows; data that ends inside a row returns ErrPartialRow, and a row
// whose field count differs from the plan's columns ErrMalformed. Either
// way the caller must fail closed: nothing of data was masked.
func (p *Plan) CopyText(data, dst []byte, o CopyOptions) ([]byte, error) {
	if !p.decode {
		return append(dst, data...), nil
	}
	delim := o.Delimiter
	if delim == 0 {
		delim = '\t'
	}
	nullMark := o.null(`\N`)
	out := dst
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return dst, ErrPartialRow
		}
		line := data[:nl]
		data = data[nl+1:]
		if o.Header && !p.copyStarted {
			p.copyStarted = true
			out = append(append(out, line...), '\n')
			continue
		}
		p.copyStarted = true
		col := 0
		for {
			end := bytes.IndexByte(line, delim)
			raw := line
			if end >= 0 {
				raw = line[:end]
			}
			if col >= len(p.cols) {
				return dst, fmt.Errorf("%w: row has more than %d fields", ErrMalformed, len(p.cols))
			}
			if bytes.Equal(raw, nullMark) {
				out = append(out, raw...)
			} else {
				p.buf = unescapeText(p.buf[:0], raw)
				v, null, changed := p.Apply(col, p.buf, p.tmp()[:0])
				switch {
				case null:
					out = append(out, nullMark...)
				case changed && !p.DryRun:
					out = escapeText(out, v, delim)
					p.keep(v)
				default:
					out = append(out, raw...)
				}
			}
			col++
			if end < 0 {
				break
			}
			out = append(out, delim)
			line = line[end+1:]
		}
		if col != len(p.cols) {
			return dst, fmt.Errorf("%w: row has %d fields, want %d", ErrMalformed, col, len(p.cols))
		}
		out = append(out, '\n')
	}
	return out, nil
}

// tmp and keep recycle the buffer masked values are built in.
func (p *Plan) tmp() []byte { return p.out }
func (p *Plan) keep(v []byte) {
	if cap(v) > cap(p.out) {
		p.out = v[:0]
	}
}

// unescapeText decodes a COPY text field's backslash escapes.
func unescapeText(dst, f []byte) []byte {
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '\\' || i+1 == len(f) {
			dst = append(dst, c)
			continue
		}
		i++
		switch c = f[i]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'v':
			dst = append(dst, '\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for k := 0; k < 2 && i+1 < len(f) && f[i+1] >= '0' && f[i+1] <= '7'; k++ {
				i++
				v = v*8 + int(f[i]-'0')
			}
			dst = append(dst, byte(v))
		case 'x':
			if i+1 < len(f) && isHex(f[i+1]) {
				i++
				v := unhex(f[i])
				if i+1 < len(f) && isHex(f[i+1]) {
					i++
					v = v*16 + unhex(f[i])
				}
				dst = append(dst, v)
			} else {
				dst = append(dst, 'x')
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func unhex(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// escapeText encodes v as a COPY text field, as PostgreSQL's COPY TO
// does: backslash, the delimiter and control characters escaped.
func escapeText(dst, v []byte, delim byte) []byte {
	for _, c := range v {
		switch c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\v':
			dst = append(dst, '\\', 'v')
		default:
			if c == delim {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		}
	}
	return dst
}

// CopyCSV masks COPY csv-format data: one or more whole records (RFC
// 4180 with PostgreSQL's options: quoted fields may hold delimiters,
// quotes and newlines; an unquoted field equal to the null marker is
// NULL, a quoted one is text). Fields are masked as Apply masks them and
// re-quoted when the masked text needs it; fields that need no masking
// keep their bytes, and record terminators (\n or \r\n) are kept. The
// result is appended to dst. Errors are as for CopyText.
func (p *Plan) CopyCSV(data, dst []byte, o CopyOptions) ([]byte, error) {
	if !p.decode {
		return append(dst, data...), nil
	}
	delim, quote, esc := o.Delimiter, o.Quote, o.Escape
	if delim == 0 {
		delim = ','
	}
	if quote == 0 {
		quote = '"'
	}
	if esc == 0 {
		esc = quote
	}
	nullMark := o.null("")
	out := dst
	for pos := 0; pos < len(data); {
		header := o.Header && !p.copyStarted
		p.copyStarted = true
		for col := 0; ; col++ {
			if col >= len(p.cols) && !header {
				return dst, fmt.Errorf("%w: record has more than %d fields", ErrMalformed, len(p.cols))
			}
			start := pos
			var raw []byte
			quoted := pos < len(data) && data[pos] == quote
			if quoted {
				p.buf = p.buf[:0]
				j := pos + 1
				for {
					if j >= len(data) {
						return dst, ErrPartialRow
					}
					c := data[j]
					if esc != quote && c == esc && j+1 < len(data) && (data[j+1] == quote || data[j+1] == esc) {
						p.buf = append(p.buf, data[j+1])
						j += 2
						continue
					}
					if c == quote {
						if j+1 >= len(data) {
							return dst, ErrPartialRow
						}
						if esc == quote && data[j+1] == quote {
							p.buf = append(p.buf, quote)
							j += 2
							continue
						}
						j++
						break
					}
					p.buf = append(p.buf, c)
					j++
				}
				pos = j
				raw = data[start:pos]
			} else {
				j := pos
				for j < len(data) && data[j] != delim && data[j] != '\n' {
					j++
				}
				if j >= len(data) {
					return dst, ErrPartialRow
				}
				e := j
				if data[j] == '\n' && e > pos && data[e-1] == '\r' {
					e--
				}
				raw = data[pos:e]
				pos = e
			}
			// pos is at the delimiter or the record terminator.
			var term []byte
			switch {
			case pos < len(data) && data[pos] == delim:
			case pos < len(data) && data[pos] == '\n':
				term = data[pos : pos+1]
			case pos+1 < len(data) && data[pos] == '\r' && data[pos+1] == '\n':
				term = data[pos : pos+2]
			case pos >= len(data) || (data[pos] == '\r' && pos+1 >= len(data)):
				return dst, ErrPartialRow
			default:
				return dst, fmt.Errorf("%w: text after a closing quote", ErrMalformed)
			}
			switch {
			case header:
				out = append(out, raw...)
			case !quoted && bytes.Equal(raw, nullMark):
				out = append(out, raw...)
			default:
				val := raw
				if quoted {
					val = p.buf
				}
				v, null, changed := p.Apply(col, val, p.tmp()[:0])
				switch {
				case null:
					out = append(out, nullMark...)
				case changed && !p.DryRun:
					out = quoteCSV(out, v, delim, quote, esc, nullMark)
					p.keep(v)
				default:
					out = append(out, raw...)
				}
			}
			if term == nil {
				out = append(out, delim)
				pos++
				continue
			}
			if !header && col+1 != len(p.cols) {
				return dst, fmt.Errorf("%w: record has %d fields, want %d", ErrMalformed, col+1, len(p.cols))
			}
			out = append(out, term...)
			pos += len(term)
			break
		}
	}
	return out, nil
}

// quoteCSV encodes v as a csv field, quoted when PostgreSQL would quote
// it: when it holds the delimiter, the quote or escape character, a
// carriage return or newline, equals the null marker, or is `\.`.
func quoteCSV(dst, v []byte, delim, quote, esc byte, nullMark []byte) []byte {
	need := bytes.Equal(v, nullMark) || bytes.Equal(v, []byte(`\.`))
	for _, c := range v {
		if c == delim || c == quote || c == esc || c == '\r' || c == '\n' {
			need = true
			break
		}
	}
	if !need {
		return append(dst, v...)
	}
	dst = append(dst, quote)
	for _, c := range v {
		if c == quote || c == esc {
			dst = append(dst, esc)
		}
		dst = append(dst, c)
	}
	return append(dst, quote)
}

// copySignature starts every binary COPY stream.
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

// CopyBinary masks COPY binary-format data: the first call's data starts
// with the header (signature, flags, header extension), then come whole
// tuples (a 16-bit field count, each field a 32-bit length, -1 for NULL,
// and its bytes) and, last, the -1 trailer. Each field is masked as
// ApplyBinary masks it, with the column's Type. The result is appended
// to dst. Errors are as for CopyText; a header that is not PGCOPY's is
// ErrMalformed.
func (p *Plan) CopyBinary(data, dst []byte) ([]byte, error) {
	if !p.decode {
		return append(dst, data...), nil
	}
	out := dst
	if !p.copyStarted {
		if len(data) < len(copySignature)+8 {
			return dst, ErrPartialRow
		}
		if !bytes.Equal(data[:len(copySignature)], copySignature) {
			return dst, fmt.Errorf("%w: no PGCOPY signature", ErrMalformed)
		}
		ext := binary.BigEndian.Uint32(data[len(copySignature)+4:])
		n := len(copySignature) + 8 + int(ext)
		if ext > 1<<20 || len(data) < n {
			return dst, ErrPartialRow
		}
		out = append(out, data[:n]...)
		data = data[n:]
		p.copyStarted = true
	}
	for len(data) > 0 {
		if len(data) < 2 {
			return dst, ErrPartialRow
		}
		n := int16(binary.BigEndian.Uint16(data))
		if n == -1 {
			if len(data) != 2 {
				return dst, fmt.Errorf("%w: data after the trailer", ErrMalformed)
			}
			return append(out, data...), nil
		}
		if int(n) != len(p.cols) {
			return dst, fmt.Errorf("%w: tuple has %d fields, want %d", ErrMalformed, n, len(p.cols))
		}
		out = append(out, data[:2]...)
		data = data[2:]
		for col := range p.cols {
			if len(data) < 4 {
				return dst, ErrPartialRow
			}
			l := int32(binary.BigEndian.Uint32(data))
			if l == -1 {
				out = append(out, data[:4]...)
				data = data[4:]
				continue
			}
			if l < 0 {
				return dst, fmt.Errorf("%w: field length %d", ErrMalformed, l)
			}
			if int(l) > len(data)-4 {
				return dst, ErrPartialRow
			}
			v := data[4 : 4+l]
			m, null, changed := p.ApplyBinary(col, 0, v, p.tmp()[:0])
			switch {
			case null:
				out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			case changed && !p.DryRun:
				out = binary.BigEndian.AppendUint32(out, uint32(len(m)))
				out = append(out, m...)
				p.keep(m)
			default:
				out = append(out, data[:4+l]...)
			}
			data = data[4+l:]
		}
	}
	return out, nil
}
