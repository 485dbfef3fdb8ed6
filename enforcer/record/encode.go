package record

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

const (
	magic       = "SLUICEREC1\n"
	frameHeader = 12 // length, crc, headcrc
	hashSize    = sha256.Size
	version     = 1
	sigDomain   = "sluice-recording-v1\x00"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrameHeader appends the 12-byte header of a frame with payload p.
func appendFrameHeader(b []byte, p []byte) []byte {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(p, castagnoli))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:start+8], castagnoli))
}

// appendEventFrame appends the frame of e chained to prev and returns the
// buffer and the frame's chain hash. The payload is built in place after a
// reserved header, which is filled in last.
func appendEventFrame(b []byte, prev *[hashSize]byte, e *Event) ([]byte, [hashSize]byte, error) {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
	b = append(b, prev[:]...)
	b = appendEventJSON(b, e)
	p := b[start+frameHeader:]
	if len(p) > MaxFrame {
		return b[:start], [hashSize]byte{}, ErrFrameTooLarge
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(p)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(p, castagnoli))
	binary.BigEndian.PutUint32(b[start+8:], crc32.Checksum(b[start:start+8], castagnoli))
	return b, sha256.Sum256(p), nil
}

// sigMessage is what a checkpoint or seal signature covers.
func sigMessage(typ, session string, seq uint64, t time.Time, prev *[hashSize]byte) []byte {
	m := make([]byte, 0, len(sigDomain)+len(typ)+len(session)+2+8+8+hashSize)
	m = append(m, sigDomain...)
	m = append(m, typ...)
	m = append(m, 0)
	m = append(m, session...)
	m = append(m, 0)
	m = binary.BigEndian.AppendUint64(m, seq)
	m = binary.BigEndian.AppendUint64(m, uint64(t.UnixNano()))
	return append(m, prev[:]...)
}

// appendEventJSON appends e as a JSON object with the keys and omitempty
// behaviour of Event's struct tags, so encoding/json decodes it back. Time
// is written in UTC with RFC 3339 nanoseconds; invalid UTF-8 in strings
// becomes U+FFFD, as encoding/json does.
func appendEventJSON(b []byte, e *Event) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","type":`...)
	b = appendString(b, e.Type)
	b = appendStringField(b, `,"text":`, e.Text)
	b = appendIntField(b, `,"text_bytes":`, e.TextBytes)
	b = appendStringField(b, `,"kind":`, e.Kind)
	b = appendStringField(b, `,"verdict":`, e.Verdict)
	b = appendStringField(b, `,"rule":`, e.Rule)
	b = appendStringField(b, `,"reason":`, e.Reason)
	b = appendIntField(b, `,"rows":`, e.Rows)
	b = appendIntField(b, `,"bytes":`, e.Bytes)
	b = appendIntField(b, `,"duration_us":`, e.DurationUS)
	b = appendStringField(b, `,"err_code":`, e.ErrCode)
	b = appendStringField(b, `,"dir":`, e.Dir)
	b = appendBytesField(b, `,"data":`, e.Data)
	if len(e.Fields) > 0 {
		b = append(b, `,"fields":{`...)
		keys := make([]string, 0, len(e.Fields))
		for k := range e.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, e.Fields[k])
		}
		b = append(b, '}')
	}
	b = appendBytesField(b, `,"sig":`, e.Sig)
	return append(b, '}')
}

func appendStringField(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, key...), s)
}

func appendIntField(b []byte, key string, v int64) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), v, 10)
}

func appendBytesField(b []byte, key string, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(b, key...)
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
