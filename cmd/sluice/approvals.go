package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/enforcer/approve"
)

// newApprovalsCmd is `sluice approvals list`.
func newApprovalsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "List held statements waiting for a decision",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	var asJSON bool
	var daemon *daemonFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "Held statements waiting for a decision, and recent decisions",
		Long: `List the statements a hold rule is keeping until someone approves or denies
them (sluice approve ID, sluice deny ID), and recent decisions.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			c, err := daemon.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var list []approve.Request
			if err := c.Get(ctx, "/v1/approvals", &list); err != nil {
				return err
			}
			stdout := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(stdout, list)
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
			return tw.Flush()
		}),
	}
	daemon = addDaemonFlags(list.Flags())
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(list)
	return cmd
}

// newDecideCmd is `sluice approve|deny ID [--comment TEXT]`.
func newDecideCmd(verb string) *cobra.Command {
	var comment string
	var daemon *daemonFlags
	cmd := &cobra.Command{
		Use:  verb + " ID",
		Args: argsNamed("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			c, err := daemon.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var r approve.Request
			if err := c.Post(ctx, "/v1/approvals/"+url.PathEscape(args[0])+"/"+verb, map[string]string{"comment": comment}, &r); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", r.ID, r.State)
			return nil
		}),
	}
	if verb == "approve" {
		cmd.Short = "Let a held statement run (root, the admin group, or --server with a token)"
		cmd.Long = `Approve the held statement ID (from sluice approvals list): it runs. Locally
this needs root or the approvals admin group; with --server, an OIDC token
of an approver the hold rule names.`
	} else {
		cmd.Short = "Refuse a held statement"
		cmd.Long = `Deny the held statement ID (from sluice approvals list): the client gets the
refusal in its own protocol. Locally this needs root or the approvals admin
group; with --server, an OIDC token of an approver the hold rule names.`
	}
	daemon = addDaemonFlags(cmd.Flags())
	cmd.Flags().StringVar(&comment, "comment", "", "why, as `TEXT`; kept in the recording and sent to the webhook")
	return cmd
}
