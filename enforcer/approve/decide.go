package approve

import (
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Reasons Decide refuses a decision. Check them with errors.Is; the
// returned error is a *RefusedError that says which request and why.
var (
	ErrUnknownRequest  = errors.New("unknown hold request")
	ErrNotPending      = errors.New("hold request is no longer pending")
	ErrInvalidApprover = errors.New("approver identity is incomplete")
	ErrNotApprover     = errors.New("not an approver for this hold")
	ErrSelfApproval    = errors.New("a job cannot approve its own hold")
)

// RefusedError is a decision Decide did not accept.
type RefusedError struct {
	ID     string
	Err    error  // one of the Err* sentinels
	Detail string // what to do about it, or which identity matched
}

func (e *RefusedError) Error() string {
	s := "decide " + e.ID + ": " + e.Err.Error()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

func (e *RefusedError) Unwrap() error { return e.Err }

// check applies the package doc's rules for who may decide on r.
func check(r *Request, by Approver, approve bool) *RefusedError {
	switch {
	case by.Kind != KindLocal && by.Kind != KindOIDC:
		return &RefusedError{Err: ErrInvalidApprover, Detail: "kind " + strconv.Quote(by.Kind)}
	case by.Kind == KindOIDC && by.Subject == "":
		return &RefusedError{Err: ErrInvalidApprover, Detail: "token without a subject"}
	case by.Kind == KindLocal && by.UID < 0:
		return &RefusedError{Err: ErrInvalidApprover, Detail: "local user without a UID"}
	}
	if approve {
		if why := selfApproval(r.Requester, by); why != "" {
			return &RefusedError{Err: ErrSelfApproval, Detail: why}
		}
	}
	// Refusing is always safe: the runner's local admin (root or the
	// admin group, as the caller checked) may deny any request, so a hold
	// whose approvers are unreachable never has to run out its timeout.
	if !approve && by.Kind == KindLocal {
		return nil
	}
	approvers := r.Approvers
	if len(approvers) == 0 {
		approvers = []string{LocalAdmin}
	}
	if !slices.ContainsFunc(approvers, func(p string) bool { return matches(p, by) }) {
		return &RefusedError{Err: ErrNotApprover, Detail: "needs one of " + strings.Join(approvers, ", ")}
	}
	return nil
}

// selfApproval says why by is the requesting job's own identity, or "".
func selfApproval(req Requester, by Approver) string {
	switch {
	case by.Subject != "" && by.Subject == req.Subject:
		return "the approver's subject is the job's token subject"
	case by.Kind == KindOIDC && req.Actor != "" &&
		(strings.EqualFold(by.Subject, req.Actor) || strings.EqualFold(by.Email, req.Actor)):
		return "the approver is the job's CI actor"
	case by.Kind == KindLocal && uint64(by.UID) == uint64(req.UID):
		if by.UID == 0 {
			return "the job runs as root, so root cannot approve it locally; it needs a remote approver"
		}
		return "the approver's UID is the job's UID"
	}
	return ""
}

// matches reports whether by is the approver principal p.
func matches(p string, by Approver) bool {
	if p == LocalAdmin {
		return by.Kind == KindLocal
	}
	kind, name, ok := strings.Cut(p, ":")
	if !ok || name == "" {
		return false
	}
	switch kind {
	case "group":
		return slices.Contains(by.Groups, name)
	case "email":
		return by.Email != "" && strings.EqualFold(by.Email, name)
	case "user":
		return by.Subject != "" && by.Subject == name
	}
	return false
}

// key tells approvers apart for counting: local users by UID, token
// holders by subject.
func (a Approver) key() string {
	if a.Kind == KindLocal {
		return "local:" + strconv.Itoa(a.UID)
	}
	return a.Kind + ":" + a.Subject
}

// display names the approver in reasons and logs.
func (a Approver) display() string {
	switch {
	case a.Kind == KindOIDC && a.Email != "":
		return a.Email
	case a.Subject != "":
		return a.Subject
	case a.Kind == KindLocal:
		return "uid " + strconv.Itoa(a.UID)
	}
	return a.Email
}
