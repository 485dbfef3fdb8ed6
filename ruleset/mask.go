package ruleset

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// Limits on mask block arguments.
const (
	maxKeep        = 64
	maxReplacement = 256
)

var detectorName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// Detector returns the compiled pattern of the ruleset's detector block
// name, or nil when the ruleset defines no such detector (built-in
// detectors have no pattern here; see Detectors). The pattern is shared
// and safe for concurrent use.
func (rs *Ruleset) Detector(name string) *regexp.Regexp { return rs.custom[name] }

// CustomDetectors returns the names of the ruleset's detector blocks,
// sorted.
func (rs *Ruleset) CustomDetectors() []string {
	names := make([]string, 0, len(rs.custom))
	for n := range rs.custom {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// detector compiles a top-level detector block: a named RE2 pattern that
// mask blocks may list in detect.
func (c *compiler) detector(b *hcl.Block) {
	name := b.Labels[0]
	content, d := b.Body.Content(detectorSchema)
	c.diags = append(c.diags, d...)
	switch {
	case !detectorName.MatchString(name):
		c.errorf(b.LabelRanges[0], "Invalid detector name", "A detector name starts with a letter and holds only letters, digits, \"_\" and \"-\"; got %q.", name)
		return
	case hasString(detectors, name):
		c.errorf(b.LabelRanges[0], "Built-in detector name", "%q is a built-in detector; give this detector another name, or use the built-in one in detect.", name)
		return
	case !c.define("detector", name, b.LabelRanges[0]):
		return
	}
	a := content.Attributes["pattern"]
	if a == nil {
		return // HCL reported the missing argument
	}
	s, ok := c.str(a)
	if !ok {
		return
	}
	re, err := regexp.Compile(s)
	if err != nil {
		c.errorf(a.Expr.Range(), "Invalid regular expression", "The pattern does not compile: %s. Patterns use Go's RE2 syntax.", err)
		return
	}
	if re.MatchString("") {
		c.errorf(a.Expr.Range(), "Pattern matches empty text", "A detector's pattern must match at least one character, or it would find a match in every value; use + rather than * for the repeated part.")
		return
	}
	c.rs.custom[name] = re
}

// mask compiles a mask block's arguments. headerErr says the block's
// content already had errors, so a missing columns or detect may be one
// of them.
func (c *compiler) mask(hb *hcl.Block, content *hcl.BodyContent, headerErr bool) *MaskSpec {
	m := &MaskSpec{Using: "redact", Keep: DefaultKeep, Replacement: DefaultReplacement}
	if a := content.Attributes["columns"]; a != nil {
		list, ranges, _ := c.strList(a)
		for i, s := range list {
			if err := checkColumnPattern(s); err != "" {
				c.errorf(ranges[i], "Invalid column pattern", "%s Write \"column\", \"table.column\" or \"schema.table.column\"; each part may be a glob such as \"*\" or \"*_token\".", err)
			}
		}
		m.Columns = list
	}
	if a := content.Attributes["detect"]; a != nil {
		list, ranges, _ := c.strList(a)
		for i, s := range list {
			if re := c.rs.custom[s]; re != nil {
				if m.Custom == nil {
					m.Custom = map[string]*regexp.Regexp{}
				}
				m.Custom[s] = re
				continue
			}
			if hasString(detectors, s) {
				continue
			}
			known := append(Detectors(), c.rs.CustomDetectors()...)
			detail := fmt.Sprintf("No detector is named %q. The detectors are %s; a detector block defines a new one.", s, strings.Join(known, ", "))
			if sg := suggest(s, known); sg != "" {
				detail = fmt.Sprintf("No detector is named %q. Did you mean %q?", s, sg)
			}
			c.errorf(ranges[i], "Unknown detector", "%s", detail)
		}
		m.Detect = list
	}
	if a := content.Attributes["using"]; a != nil {
		m.Using, _ = c.keyword(a, maskFuncs)
	}
	if a := content.Attributes["keep"]; a != nil {
		if n, ok := c.number(a); ok {
			if n < 0 || n > maxKeep {
				c.errorf(a.Expr.Range(), "Invalid keep", "keep must be between 0 and %d characters; got %d.", maxKeep, n)
			}
			m.Keep = int(n)
		}
		if m.Using != "partial" && m.Using != "" {
			c.errorf(a.NameRange, "Unused argument", "keep applies only to using = \"partial\", and this block uses %q; remove keep or use partial.", m.Using)
		}
	}
	if a := content.Attributes["replacement"]; a != nil {
		if s, ok := c.str(a); ok {
			switch {
			case len(s) > maxReplacement:
				c.errorf(a.Expr.Range(), "Invalid replacement", "replacement must be at most %d bytes; got %d.", maxReplacement, len(s))
			case !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0:
				c.errorf(a.Expr.Range(), "Invalid replacement", "replacement must be valid UTF-8 without NUL characters, since it is sent as text.")
			}
			m.Replacement = s
		}
		if m.Using != "redact" && m.Using != "" {
			c.errorf(a.NameRange, "Unused argument", "replacement applies only to using = \"redact\", and this block uses %q; remove replacement or use redact.", m.Using)
		}
	}
	if len(m.Columns) == 0 && len(m.Detect) == 0 && !headerErr {
		c.errorf(hb.DefRange, "Nothing to mask", "A mask block needs columns, detect or both; it masks nothing as written.")
	}
	return m
}

// checkColumnPattern returns why s is not a column pattern, or "".
func checkColumnPattern(s string) string {
	parts := SplitColumnPattern(s)
	if len(parts) > 3 {
		return fmt.Sprintf("%q has %d dot-separated parts; at most 3 are allowed.", s, len(parts))
	}
	for _, p := range parts {
		if p == "" {
			return fmt.Sprintf("%q has an empty part.", s)
		}
		if strings.HasSuffix(p, `\`) && !strings.HasSuffix(p, `\\`) {
			return fmt.Sprintf("%q ends a part in an unfinished escape.", s)
		}
	}
	return ""
}

// SplitColumnPattern splits a column pattern ("schema.table.column",
// "table.column", "column") at dots not escaped with a backslash.
func SplitColumnPattern(s string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '.':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}
