package ruleset

import (
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Action is what a rule does to a statement. Actions are ordered by
// strength, Allow < Mask < Hold < Deny, and across every policy that
// matches a flow the strongest firing rule decides.
type Action uint8

const (
	// Allow lets the statement run unchanged.
	Allow Action = iota
	// Mask lets the statement run and masks values in its result.
	Mask
	// Hold parks the statement until enough approvers allow it, or the
	// timeout denies it.
	Hold
	// Deny refuses the statement with an error in the client's protocol.
	Deny
)

var actionNames = [...]string{Allow: "allow", Mask: "mask", Hold: "hold", Deny: "deny"}

// String returns the action's HCL keyword.
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", a)
}

// ParseAction parses an action keyword.
func ParseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if n == s {
			return Action(i), true
		}
	}
	return 0, false
}

// RecordLevel is how much of a session is recorded, ordered from least to
// most. Across the policies and rules that apply, the highest level wins.
type RecordLevel uint8

const (
	// RecordNone records nothing beyond the daemon log.
	RecordNone RecordLevel = iota
	// RecordMetadata records who connected where, when, and every verdict.
	RecordMetadata
	// RecordCommands adds every statement's text.
	RecordCommands
	// RecordFull adds results (after masking).
	RecordFull
)

var recordNames = [...]string{"none", "metadata", "commands", "full"}

// String returns the level's HCL keyword.
func (l RecordLevel) String() string {
	if int(l) < len(recordNames) {
		return recordNames[l]
	}
	return fmt.Sprintf("RecordLevel(%d)", l)
}

// ParseRecordLevel parses a record level keyword.
func ParseRecordLevel(s string) (RecordLevel, bool) {
	for i, n := range recordNames {
		if n == s {
			return RecordLevel(i), true
		}
	}
	return 0, false
}

// DefaultRecord is the record level of a policy or default block that
// does not set one.
const DefaultRecord = RecordCommands

// Rule is one compiled deny, hold, mask or allow block, a policy's
// implicit default, or the ruleset's default block. Rules are shared,
// read-only values owned by their Ruleset.
type Rule struct {
	// ID names the rule in decisions, recordings and test expectations:
	//   policy/deny/label   a labelled block: deny "label" { ... }
	//   policy/deny[0]      an unlabelled block, by its index among the
	//                       policy's blocks of that kind
	//   policy/default      the policy matched and none of its deny, hold
	//                       or allow blocks fired (its default_action)
	//   default             no policy matched the flow (the default block)
	ID     string
	Policy string // policy name; empty for the default block
	Action Action
	Label  string    // block label, if any
	Range  hcl.Range // the block's header, or the policy's for policy/default
	Reason string    // the block's reason, or a generated one

	// Record is the block's own record level, if it set one (RecordSet).
	Record    RecordLevel
	RecordSet bool

	// Hold is set for hold rules; Mask for mask rules.
	Hold *HoldSpec
	Mask *MaskSpec

	// AfterResult says the rule's when uses result.*: it can only fire once
	// the statement has produced (part of) its result.
	AfterResult bool

	when *expr // nil: always fires
	// reason is Reason or the generated one, made at compile time.
	reason string
}

// String returns the ID and where the rule is defined, as "ID (file:line)".
func (r *Rule) String() string {
	if r.Range.Filename == "" {
		return r.ID
	}
	return fmt.Sprintf("%s (%s:%d)", r.ID, r.Range.Filename, r.Range.Start.Line)
}

// DefaultHoldTimeout is how long a hold waits for approval when its block
// sets no timeout; when it expires the statement is denied.
const DefaultHoldTimeout = 15 * time.Minute

// HoldSpec is how a held statement gets approved.
type HoldSpec struct {
	Approvers    []string      // opaque principals, e.g. "group:security"; never empty
	Timeout      time.Duration // then deny; DefaultHoldTimeout unless set
	MinApprovals int           // at least 1
}

// MaskSpec is what a mask rule masks in a result and how. See the package
// documentation's Masking section for the semantics the enforcer gives it.
type MaskSpec struct {
	// Columns are column patterns: "column", "table.column" or
	// "schema.table.column", each part a glob ("*.password_hash",
	// "public.users.email", "users.*_token"). A part left out matches
	// anything.
	Columns []string
	// Detect names value detectors (see Detectors, and the ruleset's own
	// detector blocks) run over every value no column pattern masks, and
	// over error and notice messages.
	Detect []string
	// Using is the masking function: redact, partial, hash, email, null or
	// digits; redact unless set.
	Using string
	// Keep is how many trailing characters partial keeps; DefaultKeep
	// unless set.
	Keep int
	// Replacement is the text redact puts in place of a value;
	// DefaultReplacement unless set.
	Replacement string
	// Custom holds the compiled patterns of the custom detectors (detector
	// blocks) that Detect names, keyed by name; nil when Detect names only
	// built-in detectors. The patterns are shared and safe for concurrent
	// use.
	Custom map[string]*regexp.Regexp
}

// Defaults of a mask block.
const (
	// DefaultKeep is how many trailing characters partial keeps.
	DefaultKeep = 4
	// DefaultReplacement is what redact puts in place of a value.
	DefaultReplacement = "[REDACTED]"
)

// Masking functions a mask block's using may name.
var maskFuncs = []string{"redact", "partial", "hash", "email", "null", "digits"}

// MaskFuncs returns the masking function names a mask block's using may
// name; the enforcer implements them.
func MaskFuncs() []string { return append([]string(nil), maskFuncs...) }

var detectors = []string{"email", "card_number", "ssn", "phone", "iban", "secret", "jwt", "ip_address", "aws_access_key", "private_key"}

// Detectors returns the built-in value detector names a mask block's
// detect list may use; the enforcer implements them. A ruleset may add
// its own with detector blocks (see Ruleset.Detector).
func Detectors() []string { return append([]string(nil), detectors...) }

// policy is one compiled policy block.
type policy struct {
	name    string
	rng     hcl.Range
	all     bool // targets = ["*"]
	targets []string
	// targetsBad is set while loading when a listed target is unknown,
	// so checks on what the targets speak are skipped.
	targetsBad bool
	when       *expr // nil: matches every flow to its targets
	record     RecordLevel
	defAction  Action // Allow or Deny
	def        *Rule  // policy/default
	deny       []*Rule
	hold       []*Rule
	allow      []*Rule
	mask       []*Rule
	grants     []*grant // credential blocks, in source order
}
