// Package approve is the approval broker for held statements: a `hold`
// rule (see ruleset.HoldSpec) makes a risky statement wait until enough
// human approvers say yes, any one of them says no, the rule's timeout
// passes, or the session goes away.
//
// The broker is protocol-neutral. A decoder calls Broker.Hold with a
// Request and waits on the returned channel, which delivers exactly one
// Outcome. Approvers reach Broker.Decide through the daemon's API (`sluice
// approve ID`, `sluice deny ID`), authenticated either as a local user or
// by an OIDC token, or through the fleet's NATS bucket (package fleet,
// which verifies the OIDC token itself); the caller turns that into an
// Approver. A Notifier
// (for example Webhook) tells people that a request is waiting and how it
// ended; notifications are informational only and can never approve
// anything.
//
// # Who may decide
//
// Decide accepts a decision only from an approver that matches one of the
// request's Approvers (from the rule):
//
//	group:NAME   Approver.Groups contains NAME
//	email:ADDR   Approver.Email equals ADDR (case-insensitive)
//	user:NAME    Approver.Subject equals NAME (a local user name or a token sub)
//	local-admin  Approver.Kind is "local"; the caller has already checked
//	             that the local user is root or in the admin group
//
// An empty Approvers list means local-admin only. The caller fills Email
// and Groups only from verified sources (a verified token's claims, the
// local user database).
//
// The job's own identity can never approve its own request. Decide refuses
// an approval (ErrSelfApproval) when the approver's Subject equals the
// requester's verified token subject; when an OIDC approver's Subject or
// Email equals the requester's CI actor; and when a local approver's UID is
// the job's UID. So a job running as root cannot be approved by root
// locally: it needs a remote (OIDC) approver. A job whose UID is not known
// has UID 0 and is treated the same way. Denying is always safe, so a
// matching approver may deny even a request that is their own.
//
// Each approver counts once, whatever they decide twice; local approvers
// are told apart by UID, OIDC approvers by token subject. Any accepted
// deny ends the request as denied at once; approvals from distinct
// approvers are counted until MinApprovals (default 1) is reached.
//
// # Lifetime
//
// Requests live only in the daemon's memory. A daemon restart fails every
// pending hold closed: the sessions waiting on them die with the daemon,
// so their statements never run, and nothing is left to approve. The last
// 100 finished requests are kept for List and Get.
//
// # Webhook schema (stable)
//
// Webhook with format "json" POSTs one JSON object per event, with
// Content-Type application/json. Fields are only ever added to it:
//
//	{
//	  "kind": "request" | "decision",      // request: a hold is waiting; decision: it ended
//	  "request": {
//	    "id": "h-abcd2345",                // what approvers type
//	    "session": "...",                  // the session ID
//	    "target": "...",                   // the database target
//	    "rule": "...",                     // the hold rule's ID
//	    "reason": "...",                   // the rule's reason
//	    "statement": "...",                // at most 8192 bytes
//	    "statement_truncated": false,      // true when cut to that size
//	    "stage": "before" | "result",      // held before it runs, or paused mid-result
//	    "rows": 0,                         // rows already sent (stage result)
//	    "approvers": ["group:security"],
//	    "min_approvals": 1,
//	    "requester": {
//	      "identity_level": "...", "subject": "...", "repository": "...",
//	      "actor": "...", "job": "...", "uid": 1001, "comm": "psql", "pid": 4242
//	    },
//	    "created": "2006-01-02T15:04:05Z", // RFC 3339, UTC
//	    "deadline": "2006-01-02T15:19:05Z",
//	    "state": "pending" | "approved" | "denied" | "expired" | "cancelled",
//	    "decisions": [
//	      {"by": {"kind": "local" | "oidc", "subject": "...", "uid": 0,
//	              "email": "...", "groups": ["..."]},
//	       "approve": true, "comment": "...", "at": "2006-01-02T15:05:00Z"}
//	    ]
//	  },
//	  "approve_command": "sluice approve h-abcd2345",
//	  "deny_command": "sluice deny h-abcd2345"
//	}
//
// An approver's other token claims are never sent. Format "slack" POSTs
// an incoming-webhook message ({"text": ..., "blocks": [...]}) with a
// readable summary and the statement cut short.
package approve
