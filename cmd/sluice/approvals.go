package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/enforcer/approve"
)

// approvalsCmd: sluice approvals list [--json].
func approvalsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, "usage: sluice approvals list [--json]")
		return 2
	}
	fs := flag.NewFlagSet("approvals list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := daemonFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	c, err := client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice approvals list:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var list []approve.Request
	if err := c.Get(ctx, "/v1/approvals", &list); err != nil {
		fmt.Fprintln(stderr, "sluice approvals list:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(list)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tSTAGE\tRULE\tTARGET\tREQUESTER\tEXPIRES\tSTATEMENT")
	for _, r := range list {
		who := fmt.Sprintf("%s[%d] uid %d", r.Requester.Comm, r.Requester.PID, r.Requester.UID)
		if r.Requester.Repository != "" {
			who += " " + r.Requester.Repository
		}
		stmt := strings.Join(strings.Fields(r.Statement), " ")
		if len(stmt) > 60 {
			stmt = stmt[:60] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Stage, r.Rule, r.Target, who,
			time.Until(r.Deadline).Round(time.Second), stmt)
	}
	tw.Flush()
	return 0
}

// decideCmd: sluice approve|deny ID [--comment TEXT].
func decideCmd(verb string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := daemonFlags(fs)
	comment := fs.String("comment", "", "why; kept in the recording and sent to the webhook")
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		args = append(args[1:], args[0])
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "usage: sluice %s ID [--comment TEXT]\n", verb)
		return 2
	}
	c, err := client()
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", verb, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r approve.Request
	if err := c.Post(ctx, "/v1/approvals/"+url.PathEscape(fs.Arg(0))+"/"+verb, map[string]string{"comment": *comment}, &r); err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", verb, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %s\n", r.ID, r.State)
	return 0
}
