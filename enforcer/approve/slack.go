package approve

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// slackStatement is how many bytes of the statement a Slack message shows.
const slackStatement = 500

// Slack incoming-webhook message types (Block Kit).
type (
	slackMsg struct {
		Text   string       `json:"text"` // the notification's fallback
		Blocks []slackBlock `json:"blocks"`
	}
	slackBlock struct {
		Type     string      `json:"type"`
		Text     *slackText  `json:"text,omitempty"`
		Fields   []slackText `json:"fields,omitempty"`
		Elements []slackText `json:"elements,omitempty"`
	}
	slackText struct {
		Type string `json:"type"` // "mrkdwn" or "plain_text"
		Text string `json:"text"`
	}
)

// slackAlert is an alert as a Slack message: the summary, then the fields.
func slackAlert(a *Alert) slackMsg {
	keys := make([]string, 0, len(a.Fields))
	for k := range a.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(":rotating_light: Sluice alert (" + a.Kind + "): " + a.Summary)
	for _, k := range keys {
		b.WriteString("\n" + k + ": " + a.Fields[k])
	}
	return slackMsg{Text: b.String()}
}

// slackMessage summarises an event for people: what is held, where, for
// whom, and the commands to decide; or how it ended.
func slackMessage(ev Event) slackMsg {
	r := ev.Request
	var title, text string
	if ev.Kind == EventRequest {
		title = "Statement held for approval: " + r.ID
		text = fmt.Sprintf("Statement held for approval (%s): rule %s on %s. Approve: sluice approve %s", r.ID, r.Rule, r.Target, r.ID)
	} else {
		title = "Hold " + r.ID + " " + r.State
		text = fmt.Sprintf("Hold %s %s: rule %s on %s", r.ID, r.State, r.Rule, r.Target)
	}

	requester := r.Requester.Repository
	if r.Requester.Actor != "" {
		requester += " by " + r.Requester.Actor
	}
	if r.Requester.Job != "" {
		requester += " (job " + r.Requester.Job + ")"
	}
	if strings.TrimSpace(requester) == "" {
		requester = fmt.Sprintf("%s pid %d uid %d", r.Requester.Comm, r.Requester.PID, r.Requester.UID)
	}
	stage := "before it runs"
	if r.Stage == StageResult {
		stage = fmt.Sprintf("mid-result, after %d rows", r.Rows)
	}
	approvers := strings.Join(r.Approvers, ", ")
	if approvers == "" {
		approvers = LocalAdmin
	}
	field := func(name, value string) slackText {
		return slackText{Type: "mrkdwn", Text: "*" + name + "*\n" + slackEscape(value)}
	}
	blocks := []slackBlock{
		{Type: "header", Text: &slackText{Type: "plain_text", Text: title}},
		{Type: "section", Fields: []slackText{
			field("Target", r.Target),
			field("Rule", r.Rule),
			field("Requester", requester),
			field("Held", stage),
			field("Approvers", fmt.Sprintf("%s (%d needed)", approvers, r.MinApprovals)),
			field("Deadline", r.Deadline.UTC().Format(time.RFC3339)),
		}},
	}
	if r.Reason != "" {
		blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: "*Reason:* " + slackEscape(r.Reason)}})
	}
	stmt, cut := truncate(r.Statement, slackStatement)
	if cut {
		stmt += " …"
	}
	// Three backticks inside the statement would end the code block.
	stmt = strings.ReplaceAll(slackEscape(stmt), "```", "`\u200b``")
	blocks = append(blocks, slackBlock{Type: "section", Text: &slackText{Type: "mrkdwn", Text: "```" + stmt + "```"}})

	if ev.Kind == EventRequest {
		blocks = append(blocks, slackBlock{Type: "context", Elements: []slackText{{Type: "mrkdwn",
			Text: "Approve: `sluice approve " + r.ID + "`   Deny: `sluice deny " + r.ID + "`"}}})
	} else {
		var lines []string
		for _, d := range r.Decisions {
			verb := "denied"
			if d.Approve {
				verb = "approved"
			}
			line := d.By.display() + " " + verb
			if d.Comment != "" {
				line += ": " + d.Comment
			}
			lines = append(lines, slackEscape(line))
		}
		if len(lines) == 0 {
			lines = []string{"no decisions (" + r.State + ")"}
		}
		blocks = append(blocks, slackBlock{Type: "context", Elements: []slackText{{Type: "mrkdwn", Text: strings.Join(lines, "\n")}}})
	}
	return slackMsg{Text: slackEscape(text), Blocks: blocks}
}

// slackEscape escapes the three characters Slack's mrkdwn gives meaning
// to as controls.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
