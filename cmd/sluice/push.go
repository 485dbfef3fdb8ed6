package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// newRulesPushCmd is `sluice rules push DIR`: it sends DIR's ruleset (and
// its ruleset.sig, if any) to the local daemon, which applies it
// atomically or keeps the active one and says why.
func newRulesPushCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "push DIR",
		Short: "Send a ruleset to the running daemon (root only)",
		Long: `Send the ruleset DIR (its *.hcl files and ruleset.sig, if any) to the running
daemon. The daemon applies it atomically, or keeps the active ruleset and
says why (exit 1). With rules_dir set, an accepted ruleset is also saved
there.`,
		Args: argsNamed("DIR"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(args[0]); err != nil {
				return errors.New(fileError(args[0], err))
			}
			b, err := ruleset.ReadBundle(args[0])
			if err != nil {
				return err
			}
			req := &api.PushRequest{Files: map[string]string{}, Signature: b.Signature}
			for n, c := range b.Files {
				req.Files[n] = string(c)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := api.NewClient(socket).Push(ctx, req)
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			for _, m := range resp.Messages {
				fmt.Fprintln(stderr, m)
			}
			if !resp.Accepted {
				fmt.Fprintf(stderr, "ruleset rejected; generation %d stays active\n", resp.Ruleset.Generation)
				return exitStatus(1)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ruleset active: generation %d, digest %s, mode %s\n", resp.Ruleset.Generation, resp.Ruleset.Digest, resp.Ruleset.Mode)
			return nil
		}),
	}
	cmd.Flags().StringVar(&socket, "socket", api.DefaultSocket, "talk to the daemon on its API socket at `PATH`")
	return cmd
}
