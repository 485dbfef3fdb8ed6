package mask

import (
	"bytes"
	"strings"

	"github.com/sluicehq/sluice/ruleset"
)

// Text masks a free-text message, such as the message, detail or hint
// field of an error or notice, and reports whether it changed anything.
// Under monitor mode, callers keep s and use changed.
//
// Two PostgreSQL detail shapes carry column values and are handled
// before the detectors run:
//
//   - "Key (col, ...)=(value, ...) ..." (unique, foreign-key and
//     exclusion violations): when any listed column's name matches a
//     column pattern of the masker (by column part only: the message
//     does not say which table), the values part is replaced with that
//     pattern's function applied to the whole values text.
//   - "Failing row contains (...)" (not-null and check violations): when
//     the masker has any column pattern, the row's values are redacted,
//     since the message does not say which value is which column.
//
// Detected spans are then replaced by their rule's function; a null
// rule's span is replaced with ruleset.DefaultReplacement.
func (m *Masker) Text(s string) (string, bool) {
	if !m.hasCol && len(m.dets) == 0 {
		return s, false
	}
	b := []byte(s)
	changed := false
	if m.hasCol {
		b, changed = m.keyDetail(b)
		if c := m.failingRow(&b); c {
			changed = true
		}
	}
	if len(m.dets) > 0 {
		spans := m.scan(b, nil)
		if len(spans) > 0 {
			changed = true
			out, prev := make([]byte, 0, len(b)), 0
			for _, sp := range spans {
				out = append(out, b[prev:sp.lo]...)
				d := &m.dets[sp.det]
				if d.null {
					out = append(out, ruleset.DefaultReplacement...)
				} else {
					out, _ = d.fn(out, b[sp.lo:sp.hi])
				}
				prev = sp.hi
			}
			b = append(out, b[prev:]...)
		}
	}
	if !changed {
		return s, false
	}
	return string(b), true
}

// keyDetail masks the values of "Key (cols)=(values)".
func (m *Masker) keyDetail(b []byte) ([]byte, bool) {
	start := bytes.Index(b, []byte("Key ("))
	if start < 0 {
		return b, false
	}
	mid := bytes.Index(b[start:], []byte(")=("))
	if mid < 0 {
		return b, false
	}
	mid += start
	lo := mid + len(")=(")
	hi := bytes.LastIndexByte(b, ')')
	if hi < lo {
		return b, false
	}
	var fn Func
	for _, name := range strings.Split(string(b[start+len("Key ("):mid]), ",") {
		name = strings.Trim(strings.TrimSpace(name), `"`)
		c := Column{Name: name}
		for i := range m.columns {
			if globFold(m.columns[i].parts[2], c.Name) {
				fn = m.columns[i].fn
				break
			}
		}
		if fn != nil {
			break
		}
	}
	if fn == nil {
		return b, false
	}
	out := append([]byte(nil), b[:lo]...)
	n := len(out)
	out, null := fn(out, b[lo:hi])
	if null {
		out = append(out[:n], ruleset.DefaultReplacement...)
	}
	return append(out, b[hi:]...), true
}

// failingRow redacts the values of "Failing row contains (...)".
func (m *Masker) failingRow(b *[]byte) bool {
	const prefix = "Failing row contains ("
	start := bytes.Index(*b, []byte(prefix))
	if start < 0 {
		return false
	}
	lo := start + len(prefix)
	hi := bytes.LastIndexByte(*b, ')')
	if hi < lo {
		return false
	}
	out := append([]byte(nil), (*b)[:lo]...)
	out = append(out, ruleset.DefaultReplacement...)
	*b = append(out, (*b)[hi:]...)
	return true
}
