package mask

// Reference versions of detectors that were rewritten for speed: the
// straightforward scans they replaced. checkGates requires the fast
// versions to find exactly what these find.
var refFinders = map[string]finder{
	"ssn":   findSSNRef,
	"phone": findPhoneRef,
}

// findPhoneRef tests each byte and the one before it (the version before
// findPhone looked both up in one table).
func findPhoneRef(b []byte, d int, out []span) []span {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '+' && c != '(' && !isDigit(c) {
			continue
		}
		if wordAt(b, i-1) || (i > 0 && (b[i-1] == '+' || b[i-1] == '-' || b[i-1] == '.' || b[i-1] == '/')) {
			continue
		}
		if e := matchPhone(b, i); e > 0 {
			out = append(out, span{i, e, d})
			i = e - 1
		}
	}
	return out
}

// runsRef measures the digit runs profileOf measures, byte by byte: the
// most digits in one stretch of digits, ' ' and '-' (card) and in one of
// digits and " -.()" (phone).
func runsRef(b []byte) (card, phone int) {
	c, ph := 0, 0
	for _, x := range b {
		isD := x >= '0' && x <= '9'
		switch {
		case isD:
			c++
			ph++
		case x == ' ' || x == '-':
		case x == '.' || x == '(' || x == ')':
			c = 0
		default:
			c, ph = 0, 0
		}
		card, phone = max(card, c), max(phone, ph)
	}
	return card, phone
}

// findSSNRef tests every position (the version before findSSN searched
// for dashes).
func findSSNRef(b []byte, d int, out []span) []span {
	for i := 0; i+11 <= len(b); i++ {
		if !isDigit(b[i]) {
			continue
		}
		if wordAt(b, i-1) || (i > 0 && b[i-1] == '-') {
			continue
		}
		s := b[i : i+11]
		if !(isDigit(s[1]) && isDigit(s[2]) && s[3] == '-' && isDigit(s[4]) && isDigit(s[5]) && s[6] == '-' &&
			isDigit(s[7]) && isDigit(s[8]) && isDigit(s[9]) && isDigit(s[10])) {
			continue
		}
		if wordAt(b, i+11) || (i+11 < len(b) && b[i+11] == '-' && i+12 < len(b) && isDigit(b[i+12])) {
			continue
		}
		area := string(s[0:3])
		if area == "000" || area == "666" || s[0] == '9' || string(s[4:6]) == "00" || string(s[7:11]) == "0000" {
			continue
		}
		out = append(out, span{i, i + 11, d})
		i += 10
	}
	return out
}
