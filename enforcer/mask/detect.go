package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/netip"
	"regexp"
)

// span is a detected range [lo, hi) of a text and the index of the
// detector that found it.
type span struct{ lo, hi, det int }

// finder appends every span of b it detects to out, with det set to d.
// Spans it appends are sorted and do not overlap.
type finder func(b []byte, d int, out []span) []span

// profile is what one pass over a value learns about it: enough to rule
// out, without running them, the detectors that cannot find anything in
// it. Each detector's needs (below) are necessary conditions of its
// match, read off its definition.
type profile struct {
	n, digits, upper, lower int
	has                     uint8 // pAt, pDash, pDot, pColon present
	// cardRun is the most digits in one stretch of digits, spaces and
	// dashes (where card numbers and SSNs lie); phoneRun the most in one
	// stretch of digits and " -.()" (where phone numbers lie).
	cardRun, phoneRun int
}

// Byte kinds of a profile pass.
const (
	pAt = 1 << iota
	pDash
	pDot
	pColon
)

// profileTable packs, per byte, a count for digits (bits 0-15), upper-case
// (16-31) and lower-case letters (32-47), and the byte's p* flag (48-55),
// so one addition and one or per byte make the counts and the flags.
var profileTable = func() (t [256]uint64) {
	for c := range 256 {
		switch k := classes[c]; {
		case k&cDigit != 0:
			t[c] = 1
		case k&cUpper != 0:
			t[c] = 1 << 16
		case k&cLower != 0:
			t[c] = 1 << 32
		}
	}
	t['@'] = pAt << 48
	t['-'] = pDash << 48
	t['.'] = pDot << 48
	t[':'] = pColon << 48
	return t
}()

// runKinds says, per byte, whether it is a digit (bit 0), continues a
// card stretch (bit 1: digits, ' ', '-') and a phone stretch (bit 2:
// digits, " -.()").
var runKinds = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] = 7
	}
	t[' '], t['-'] = 6, 6
	t['.'], t['('], t[')'] = 4, 4, 4
	return t
}()

// minRunDigits is the fewest digits a run-based need asks for: below
// it the runs are not measured (the digit count bounds them).
const minRunDigits = 8

// profileOf makes b's profile: one pass for the counts and flags, and one
// more for the digit runs when b has enough digits to need them.
func profileOf(b []byte) profile {
	p := profile{n: len(b)}
	for rest := b; len(rest) > 0; {
		chunk := rest[:min(len(rest), 0xffff)] // the 16-bit counts cannot overflow
		rest = rest[len(chunk):]
		// Two sums and two ors, four bytes a round: the additions do not
		// wait on each other.
		var s0, s1, f0, f1 uint64
		i := 0
		for ; i+4 <= len(chunk); i += 4 {
			q := chunk[i : i+4 : i+4]
			v0, v1, v2, v3 := profileTable[q[0]], profileTable[q[1]], profileTable[q[2]], profileTable[q[3]]
			s0 += v0 + v2
			s1 += v1 + v3
			f0 |= v0 | v2
			f1 |= v1 | v3
		}
		for _, c := range chunk[i:] {
			v := profileTable[c]
			s0 += v
			f0 |= v
		}
		sum, flags := s0+s1, f0|f1
		p.digits += int(sum & 0xffff)
		p.upper += int(sum >> 16 & 0xffff)
		p.lower += int(sum >> 32 & 0xffff)
		p.has |= uint8(flags >> 48)
	}
	if p.digits < minRunDigits {
		p.cardRun, p.phoneRun = p.digits, p.digits // upper bounds, enough to rule out
		return p
	}
	// Runs: the digits of each stretch of digits and separators. A card
	// number or SSN lies within one stretch of digits, ' ' and '-', a phone
	// number within one of digits and " -.()", so these bound their digits
	// (loosely: the detectors allow only single or short separators).
	// The maxima are taken where a stretch ends, so the loop carries
	// only two additions from byte to byte; the branches go the same way
	// for long stretches (digit-dense values, the ones measured here).
	card, phone := 0, 0
	for _, c := range b {
		k := runKinds[c]
		d := int(k & 1)
		if k&2 != 0 {
			card += d
		} else {
			p.cardRun = max(p.cardRun, card)
			card = 0
		}
		if k&4 != 0 {
			phone += d
		} else {
			p.phoneRun = max(p.phoneRun, phone)
			phone = 0
		}
	}
	p.cardRun, p.phoneRun = max(p.cardRun, card), max(p.phoneRun, phone)
	return p
}

// need is what a value must have for a detector to find anything in it.
type need struct {
	n, digits, upper, lower int
	has                     uint8 // every one of these
	hasAny                  uint8 // at least one of these, if set
	cardRun, phoneRun       int
}

// met reports whether p can hold a match.
func (nd *need) met(p *profile) bool {
	return p.n >= nd.n && p.digits >= nd.digits && p.upper >= nd.upper && p.lower >= nd.lower &&
		p.has&nd.has == nd.has && (nd.hasAny == 0 || p.has&nd.hasAny != 0) &&
		p.cardRun >= nd.cardRun && p.phoneRun >= nd.phoneRun
}

// needs are the built-in detectors' necessary conditions; see each
// detector for its definition. A detector missing here always runs.
var needs = map[string]need{
	"email":          {n: 3, has: pAt},                           // local@domain
	"card_number":    {n: 13, digits: 13, cardRun: 13},           // 13+ digits in single-separated groups
	"ssn":            {n: 11, digits: 9, has: pDash, cardRun: 9}, // ddd-dd-dddd
	"iban":           {n: 15, digits: 2, upper: 2},               // CCdd + 11..30 more
	"phone":          {n: 8, digits: 8, phoneRun: 8},             // 8+ digits (E.164) or 10 (NANP)
	"jwt":            {n: 6, upper: 1, lower: 2, has: pDot},      // eyJ..., three dotted segments
	"aws_access_key": {n: 20, upper: 4},                          // AKIA/ASIA + 16
	"private_key":    {n: 27, upper: 15, has: pDash},             // -----BEGIN ...PRIVATE KEY-----
	"secret":         {n: 20, digits: 1, upper: 1, lower: 1},     // 20+ mixing upper, lower, digits
	"ip_address":     {n: 2, hasAny: pDot | pColon},              // a.b.c.d or with colons
}

// builtins are the value detectors ruleset.Detectors names.
var builtins = map[string]finder{
	"email":          findEmail,
	"card_number":    findCard,
	"ssn":            findSSN,
	"iban":           findIBAN,
	"phone":          findPhone,
	"jwt":            findJWT,
	"aws_access_key": findAWSKey,
	"private_key":    findPrivateKey,
	"secret":         findSecret,
	"ip_address":     findIP,
}

func regexFinder(re *regexp.Regexp) finder {
	return func(b []byte, d int, out []span) []span {
		for _, m := range re.FindAllIndex(b, -1) {
			if m[1] > m[0] {
				out = append(out, span{m[0], m[1], d})
			}
		}
		return out
	}
}

// Byte classes, looked up in one table: the detectors test every byte
// of every scanned value several times.
const (
	cDigit = 1 << iota
	cUpper
	cLower
	cHex
	cToken // letters, digits and + / _ -, the secret detector's tokens
)

var classes = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] |= cDigit | cHex | cToken
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] |= cUpper | cToken
		t[c+'a'-'A'] |= cLower | cToken
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] |= cHex
		t[c+'A'-'a'] |= cHex
	}
	for _, c := range "+/_-" {
		t[c] |= cToken
	}
	return t
}()

func isDigit(c byte) bool { return classes[c]&cDigit != 0 }
func isUpper(c byte) bool { return classes[c]&cUpper != 0 }
func isLower(c byte) bool { return classes[c]&cLower != 0 }
func isAlnum(c byte) bool { return classes[c]&(cDigit|cUpper|cLower) != 0 }

// wordAt reports whether b[i] exists and is a letter, digit or '_', so a
// match next to it would be part of a longer word.
func wordAt(b []byte, i int) bool {
	return i >= 0 && i < len(b) && (isAlnum(b[i]) || b[i] == '_')
}

// email: local@domain.tld, where the local part is letters, digits and
// ._%+-, the domain letters, digits, '-' and '.', and the last label
// (the TLD) at least two letters.
func findEmail(b []byte, d int, out []span) []span {
	isLocal := func(c byte) bool {
		return isAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'
	}
	isDomain := func(c byte) bool { return isAlnum(c) || c == '-' || c == '.' }
	for i := 0; i < len(b); {
		at := bytes.IndexByte(b[i:], '@')
		if at < 0 {
			break
		}
		at += i
		lo := at
		for lo > i && isLocal(b[lo-1]) {
			lo--
		}
		for lo < at && b[lo] == '.' {
			lo++
		}
		hi := at + 1
		for hi < len(b) && isDomain(b[hi]) {
			hi++
		}
		for hi > at+1 && (b[hi-1] == '.' || b[hi-1] == '-') {
			hi--
		}
		dot := bytes.LastIndexByte(b[at+1:hi], '.')
		ok := lo < at && dot > 0
		if ok {
			tld := b[at+1+dot+1 : hi]
			ok = len(tld) >= 2
			for _, c := range tld {
				if !isUpper(c) && !isLower(c) {
					ok = false
				}
			}
		}
		if ok {
			out = append(out, span{lo, hi, d})
			i = hi
		} else {
			i = at + 1
		}
	}
	return out
}

// card_number: 13 to 19 digits, optionally grouped by single spaces or
// dashes, starting with 2 to 6 (the major networks' ranges; this skips
// 13-digit millisecond timestamps, which start with 1), not part of a
// longer word or number, passing the Luhn check. Within a longer grouped
// run, the first run of whole groups that qualifies is taken.
func findCard(b []byte, d int, out []span) []span {
	var groups [24][2]int // start and end of each digit group
	for i := 0; i < len(b); {
		if !isDigit(b[i]) || wordAt(b, i-1) {
			i++
			continue
		}
		n := 0
		j := i
		for {
			s := j
			for j < len(b) && isDigit(b[j]) {
				j++
			}
			if n < len(groups) {
				groups[n] = [2]int{s, j}
			}
			n++
			if j+1 < len(b) && (b[j] == ' ' || b[j] == '-') && isDigit(b[j+1]) {
				j++
				continue
			}
			break
		}
		end := j
		if wordAt(b, end) || n > len(groups) {
			i = end
			continue
		}
		found := false
		for s := 0; s < n && !found; s++ {
			digits := 0
			for e := s; e < n; e++ {
				digits += groups[e][1] - groups[e][0]
				if digits > 19 {
					break
				}
				// Whole-word boundaries only: a window must end at the
				// run's end or before a separator, and start at a group.
				if digits >= 13 && b[groups[s][0]] >= '2' && b[groups[s][0]] <= '6' && luhn(b[groups[s][0]:groups[e][1]]) {
					out = append(out, span{groups[s][0], groups[e][1], d})
					found = true
					break
				}
			}
		}
		i = end
	}
	return out
}

// luhn checks the Luhn digit of the digits in b, ignoring separators.
func luhn(b []byte) bool {
	sum, double := 0, false
	for i := len(b) - 1; i >= 0; i-- {
		c := b[i]
		if !isDigit(c) {
			continue
		}
		v := int(c - '0')
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}

// ssn: US social security numbers written ddd-dd-dddd, excluding area
// numbers 000, 666 and 900-999, group 00 and serial 0000, which are never
// issued.
func findSSN(b []byte, d int, out []span) []span {
	// Every match has a dash 3 bytes in: the candidates are found by
	// searching for dashes (memchr), not by testing every byte, which
	// matters for values full of digits (ids, sysbench's rows).
	for k := 3; k+8 <= len(b); {
		j := bytes.IndexByte(b[k:len(b)-7], '-')
		if j < 0 {
			break
		}
		k += j
		i := k - 3
		if ssnAt(b, i) {
			out = append(out, span{i, i + 11, d})
			k += 11
			continue
		}
		k++
	}
	return out
}

// ssnAt reports whether an SSN starts at b[i] (i+11 <= len(b)).
func ssnAt(b []byte, i int) bool {
	s := b[i : i+11]
	if s[6] != '-' || !isDigit(s[0]) || wordAt(b, i-1) || (i > 0 && b[i-1] == '-') {
		return false
	}
	if !(isDigit(s[1]) && isDigit(s[2]) && s[3] == '-' && isDigit(s[4]) && isDigit(s[5]) &&
		isDigit(s[7]) && isDigit(s[8]) && isDigit(s[9]) && isDigit(s[10])) {
		return false
	}
	if wordAt(b, i+11) || (i+11 < len(b) && b[i+11] == '-' && i+12 < len(b) && isDigit(b[i+12])) {
		return false
	}
	area := string(s[0:3])
	return !(area == "000" || area == "666" || s[0] == '9' || string(s[4:6]) == "00" || string(s[7:11]) == "0000")
}

// iban: two capital letters, two check digits and 11 to 30 capital
// letters or digits (15 to 34 in all), optionally in groups separated by
// single spaces, passing the ISO 7064 mod-97 check. Lower-case IBANs are
// not detected.
func findIBAN(b []byte, d int, out []span) []span {
	var compact [34]byte
	var ends [34]int // ends[k]: offset in b just past compact char k
	for i := 0; i+15 <= len(b); i++ {
		if !isUpper(b[i]) || wordAt(b, i-1) || !isUpper(b[i+1]) || !isDigit(b[i+2]) || !isDigit(b[i+3]) {
			continue
		}
		n := 0
		j := i
		for j < len(b) && n < len(compact)+1 {
			c := b[j]
			if isUpper(c) || isDigit(c) {
				if n == len(compact) {
					n++ // too long
					break
				}
				compact[n] = c
				ends[n] = j + 1
				n++
				j++
				continue
			}
			if c == ' ' && j+1 < len(b) && (isUpper(b[j+1]) || isDigit(b[j+1])) && n >= 4 {
				j++
				continue
			}
			break
		}
		if n > len(compact) {
			i = j
			continue
		}
		// Longest candidate first, ending at a word boundary.
		for k := n; k >= 15; k-- {
			e := ends[k-1]
			if wordAt(b, e) {
				continue
			}
			if mod97(compact[:k]) == 1 {
				out = append(out, span{i, e, d})
				i = e - 1
				break
			}
		}
	}
	return out
}

func mod97(s []byte) int {
	r := 0
	add := func(c byte) {
		if isDigit(c) {
			r = (r*10 + int(c-'0')) % 97
		} else {
			r = (r*100 + int(c-'A'+10)) % 97
		}
	}
	for _, c := range s[4:] {
		add(c)
	}
	for _, c := range s[:4] {
		add(c)
	}
	return r
}

// phone: international numbers written E.164-style, '+' then 8 to 15
// digits optionally separated by single spaces, dashes or dots or with
// a parenthesised group (+1 212-555-0134, +44 20 7946 0958,
// +4915112345678); and North American numbers with separators,
// (212) 555-0134, 212-555-0134, 212.555.0134, 212 555 0134 or
// 1-212-555-0134, whose area code and exchange start with 2 to 9. Plain
// digit runs are never phone numbers here: they are too often ids,
// amounts or timestamps.
func findPhone(b []byte, d int, out []span) []span {
	// One table lookup a byte: whether a number may start at it, and
	// whether it keeps one from starting right after it.
	blocked := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		k := phoneKinds[c]
		if k&phoneStart == 0 || blocked {
			blocked = k&phoneBlocks != 0
			continue
		}
		if e := matchPhone(b, i); e > 0 {
			out = append(out, span{i, e, d})
			i = e - 1
			c = b[i]
		}
		blocked = phoneKinds[c]&phoneBlocks != 0
	}
	return out
}

// phoneKinds says, per byte, whether a phone number may start at it
// ('+', '(' and digits) and whether one may not start right after it
// (letters, digits, '_' and "+-./").
const (
	phoneStart = 1 << iota
	phoneBlocks
)

var phoneKinds = func() (t [256]uint8) {
	for c := range 256 {
		if isAlnum(byte(c)) || c == '_' || c == '+' || c == '-' || c == '.' || c == '/' {
			t[c] |= phoneBlocks
		}
		if isDigit(byte(c)) || c == '+' || c == '(' {
			t[c] |= phoneStart
		}
	}
	return t
}()

// matchPhone returns the end of the phone number that starts at b[i],
// or 0.
func matchPhone(b []byte, i int) int {
	if b[i] == '+' {
		return matchE164(b, i)
	}
	return matchNANP(b, i)
}

func matchE164(b []byte, i int) int {
	j := i + 1
	if j >= len(b) || b[j] < '1' || b[j] > '9' {
		return 0
	}
	digits, end := 0, 0
	for j < len(b) {
		c := b[j]
		switch {
		case isDigit(c):
			digits++
			j++
			end = j
			continue
		case c == '(' && j+1 < len(b) && isDigit(b[j+1]):
			k := j + 1
			for k < len(b) && isDigit(b[k]) {
				k++
			}
			if k < len(b) && b[k] == ')' && k-j-1 <= 4 {
				digits += k - j - 1
				j = k + 1
				end = j
				if j < len(b) && b[j] == ' ' && j+1 < len(b) && isDigit(b[j+1]) {
					j++
				}
				continue
			}
		case (c == ' ' || c == '-' || c == '.') && j+1 < len(b) && (isDigit(b[j+1]) || b[j+1] == '('):
			j++
			continue
		}
		break
	}
	if digits < 8 || digits > 15 || wordAt(b, end) || (end < len(b) && (b[end] == '-' || b[end] == '.') && end+1 < len(b) && isDigit(b[end+1])) {
		return 0
	}
	return end
}

func matchNANP(b []byte, i int) int {
	j := i
	digitsAt := func(j, n int) bool {
		if j+n > len(b) {
			return false
		}
		for k := j; k < j+n; k++ {
			if !isDigit(b[k]) {
				return false
			}
		}
		return true
	}
	isSep := func(c byte) bool { return c == '-' || c == '.' || c == ' ' }
	// Optional country code 1 and a separator.
	if b[j] == '1' && j+1 < len(b) && isSep(b[j+1]) && j+2 < len(b) && (isDigit(b[j+2]) || b[j+2] == '(') {
		j += 2
	}
	var sep byte
	switch {
	case b[j] == '(':
		if !digitsAt(j+1, 3) || j+4 >= len(b) || b[j+4] != ')' {
			return 0
		}
		if b[j+1] < '2' {
			return 0
		}
		j += 5
		if j < len(b) && b[j] == ' ' {
			j++
		}
		sep = '-'
	case digitsAt(j, 3) && j+3 < len(b) && isSep(b[j+3]):
		if b[j] < '2' {
			return 0
		}
		sep = b[j+3]
		j += 4
	default:
		return 0
	}
	if !digitsAt(j, 3) || b[j] < '2' || j+3 >= len(b) {
		return 0
	}
	j += 3
	if b[j] != sep && !(sep == '-' && b[j] == ' ') {
		return 0
	}
	j++
	if !digitsAt(j, 4) {
		return 0
	}
	j += 4
	if wordAt(b, j) || (j+1 < len(b) && isSep(b[j]) && isDigit(b[j+1])) {
		return 0
	}
	return j
}

func isB64URL(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

// jwt: three base64url segments joined by dots (the signature may be
// empty, as in unsecured tokens), whose first decodes to a JSON object
// with an "alg" member.
func findJWT(b []byte, d int, out []span) []span {
	for i := 0; i < len(b); {
		k := bytes.Index(b[i:], []byte("eyJ"))
		if k < 0 {
			break
		}
		k += i
		i = k + 1
		if k > 0 && (isB64URL(b[k-1]) || b[k-1] == '.') {
			continue
		}
		seg := func(j int) int {
			for j < len(b) && isB64URL(b[j]) {
				j++
			}
			return j
		}
		h := seg(k)
		if h >= len(b) || b[h] != '.' {
			continue
		}
		p := seg(h + 1)
		if p == h+1 || p >= len(b) || b[p] != '.' {
			continue
		}
		s := seg(p + 1)
		if !jwtHeader(b[k:h]) {
			continue
		}
		out = append(out, span{k, s, d})
		i = s
	}
	return out
}

func jwtHeader(seg []byte) bool {
	if len(seg) > 2048 {
		return false
	}
	var buf [1536]byte
	n, err := base64.RawURLEncoding.Decode(buf[:], seg)
	if err != nil {
		return false
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	return json.Unmarshal(buf[:n], &h) == nil && h.Alg != nil
}

// aws_access_key: AKIA (long-term) or ASIA (temporary) and 16 capital
// letters or digits, as a whole word.
func findAWSKey(b []byte, d int, out []span) []span {
	for i := 0; i+20 <= len(b); i++ {
		k := bytes.IndexByte(b[i:], 'A')
		if k < 0 {
			break
		}
		i += k
		if i+20 > len(b) {
			break
		}
		if !(b[i+1] == 'K' || b[i+1] == 'S') || b[i+2] != 'I' || b[i+3] != 'A' || wordAt(b, i-1) || wordAt(b, i+20) {
			continue
		}
		ok := true
		for _, c := range b[i+4 : i+20] {
			if !isUpper(c) && !isDigit(c) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, span{i, i + 20, d})
			i += 19
		}
	}
	return out
}

// private_key: a PEM block whose label ends in PRIVATE KEY (RSA, EC, DSA,
// OPENSSH, ENCRYPTED, PKCS#8), from its BEGIN line through its END line;
// to the end of the text when the END line is missing (a truncated key
// is still a secret).
func findPrivateKey(b []byte, d int, out []span) []span {
	begin := []byte("-----BEGIN ")
	for i := 0; i < len(b); {
		k := bytes.Index(b[i:], begin)
		if k < 0 {
			break
		}
		k += i
		i = k + len(begin)
		l := bytes.Index(b[i:], []byte("-----"))
		if l < 0 {
			break
		}
		label := b[i : i+l]
		if !bytes.HasSuffix(label, []byte("PRIVATE KEY")) || bytes.IndexByte(label, '\n') >= 0 {
			continue
		}
		end := append(append([]byte("-----END "), label...), "-----"...)
		e := bytes.Index(b[i+l:], end)
		if e < 0 {
			out = append(out, span{k, len(b), d})
			break
		}
		e += i + l + len(end)
		out = append(out, span{k, e, d})
		i = e
	}
	return out
}

// secretMinLen and secretMinEntropy are the secret detector's thresholds.
const (
	secretMinLen     = 20
	secretMinEntropy = 3.5 // bits per character
)

func isTokenByte(c byte) bool { return classes[c]&cToken != 0 }

// secret: generic high-entropy tokens, the shape of API keys, passwords
// and base64 key material. A token is a maximal run of letters, digits
// and + / _ - (with base64's trailing = padding); it is a secret when it is at least 20 characters long,
// holds an upper-case letter, a lower-case letter and a digit, has a
// Shannon entropy of at least 3.5 bits per character, and is not a UUID.
// Hex strings (hashes, ids) have no upper and lower case mix and are
// never secrets here, nor are words, dates and snake_case names;
// long camelCase identifiers with digits can be, which over-masks.
func findSecret(b []byte, d int, out []span) []span {
	for i := 0; i < len(b); {
		if !isTokenByte(b[i]) {
			i++
			continue
		}
		j := i
		var seen uint8
		for j < len(b) && isTokenByte(b[j]) {
			seen |= classes[b[j]]
			j++
		}
		upper, lower, digit := seen&cUpper != 0, seen&cLower != 0, seen&cDigit != 0
		for j < len(b) && b[j] == '=' && j-i < 1<<20 {
			j++
		}
		if j-i >= secretMinLen && upper && lower && digit && !isUUID(b[i:j]) && entropy(b[i:j]) >= secretMinEntropy {
			out = append(out, span{i, j, d})
		}
		i = j
	}
	return out
}

func isUUID(b []byte) bool {
	if len(b) != 36 {
		return false
	}
	for k, c := range b {
		switch k {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isDigit(c) && !(c >= 'a' && c <= 'f') && !(c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// entropy is the Shannon entropy of b's bytes, in bits per byte.
func entropy(b []byte) float64 {
	var counts [256]int
	for _, c := range b {
		counts[c]++
	}
	n := float64(len(b))
	h := 0.0
	for _, k := range counts {
		if k > 0 {
			p := float64(k) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// ip_address: dotted-quad IPv4 addresses (each part 0-255) and IPv6
// addresses (hex groups and colons, at least two colons, as
// net/netip parses them), as whole words. Version numbers with four
// parts look like IPv4 addresses and are masked too.
func findIP(b []byte, d int, out []span) []span {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !isHex(c) && c != ':' {
			continue
		}
		if i > 0 && (isAlnum(b[i-1]) || b[i-1] == '.' || b[i-1] == ':' || b[i-1] == '_') {
			continue
		}
		if e := matchIPv4(b, i); e > 0 {
			out = append(out, span{i, e, d})
			i = e - 1
			continue
		}
		j, colons := i, 0
		for j < len(b) && (isHex(b[j]) || b[j] == ':' || b[j] == '.') {
			if b[j] == ':' {
				colons++
			}
			j++
		}
		for j > i && b[j-1] == '.' {
			j--
		}
		// Without "::" an IPv6 address has 8 groups (7 colons), or 6
		// and an IPv4 tail: times (10:30:00) and MAC addresses never
		// reach the parser.
		if colons < 2 || j-i > 45 || wordAt(b, j) || (colons < 6 && !bytes.Contains(b[i:j], []byte("::"))) {
			continue
		}
		if a, err := netip.ParseAddr(string(b[i:j])); err == nil && a.Is6() {
			out = append(out, span{i, j, d})
			i = j - 1
		}
	}
	return out
}

func isHex(c byte) bool { return classes[c]&cHex != 0 }

func matchIPv4(b []byte, i int) int {
	j := i
	for part := 0; part < 4; part++ {
		if part > 0 {
			if j >= len(b) || b[j] != '.' {
				return 0
			}
			j++
		}
		v, n := 0, 0
		for j < len(b) && isDigit(b[j]) && n < 4 {
			v = v*10 + int(b[j]-'0')
			j++
			n++
		}
		if n == 0 || n > 3 || v > 255 {
			return 0
		}
	}
	if wordAt(b, j) || (j+1 < len(b) && b[j] == '.' && isDigit(b[j+1])) {
		return 0
	}
	return j
}
