package postgres

import (
	"bufio"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/ruleset"
)

// SQLSTATEs Sluice answers with.
const (
	codeInsufficientPrivilege = "42501"
	codeProtocolViolation     = "08P01"
	codeConnectionFailure     = "08006"
	codeInvalidAuthorization  = "28000"
)

// errorBody encodes an ErrorResponse body (without type and length).
func errorBody(severity, code, msg, detail, hint string) []byte {
	e := &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: msg, Detail: detail, Hint: hint}
	b, err := e.Encode(nil)
	if err != nil {
		// Encode fails only on invalid field content, which ours never is.
		panic(err)
	}
	return b[5:]
}

// denialBody is the ErrorResponse a client gets for a refused statement:
// SQLSTATE 42501 naming the rule and its reason.
func denialBody(v enforcer.Verdict) []byte { return denialWith(v, "ERROR") }

// denialWith is denialBody with a severity: FATAL when the session ends.
func denialWith(v enforcer.Verdict, severity string) []byte {
	d := v.Decision
	msg := fmt.Sprintf("sluice: statement denied by rule %q", d.Rule.ID)
	hint := "The runner's security ruleset refused this statement; the server never saw it. `sluice rules explain` shows why."
	if v.Action == ruleset.Hold {
		msg = fmt.Sprintf("sluice: statement needs approval under rule %q, and this build has no approval holds: denied", d.Rule.ID)
	}
	return errorBody(severity, codeInsufficientPrivilege, msg, d.Reason, hint)
}

// fatal writes a FATAL ErrorResponse and flushes.
func fatal(w *bufio.Writer, code, msg string) error {
	if err := writeMsg(w, 'E', errorBody("FATAL", code, msg, "", "")); err != nil {
		return err
	}
	return w.Flush()
}
