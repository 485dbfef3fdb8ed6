// Command sluice is the operator's CLI: run a command inside a hooked
// cgroup, show the daemon's status, remove interception, and work with
// rulesets, recordings and approvals.
//
// Every command and subcommand takes -h/--help (usage on standard output,
// exit 0). Exit statuses: 0 success, 1 failure (the command ran and
// something is wrong: a ruleset with errors, an altered recording, the
// daemon unreachable), 2 usage error (an unknown command or flag, a
// missing or malformed argument).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/version"
)

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the CLI with args, writing to stdout and stderr, and
// returns the exit status.
func execute(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	if cmd == nil {
		cmd = root
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		// Errors cobra returns itself: an unknown command, arguments a
		// built-in command does not take.
		ee = &exitError{code: 2, err: err}
	}
	if ee.err != nil {
		msg := strings.TrimSpace(ee.err.Error())
		if ee.code == 2 {
			msg += fmt.Sprintf(" (see %s --help)", cmd.CommandPath())
		}
		fmt.Fprintf(stderr, "%s: %s\n", cmd.CommandPath(), msg)
	}
	return ee.code
}

// exitError ends the CLI with an exit status. When err is nil the command
// has already said everything (a failed check's report, a usage text).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is a usage error (exit 2): what was wrong with the command
// line and what is accepted. execute adds where to find the usage.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// exitStatus ends the CLI with code after the command printed its report.
func exitStatus(code int) error { return &exitError{code: code} }

// runE adapts a command's function: a plain error it returns is a failure
// (exit 1) printed as "sluice <command>: <error>"; an exitError keeps its
// status.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var ee *exitError
		if err == nil || errors.As(err, &ee) {
			return err
		}
		return &exitError{code: 1, err: err}
	}
}

// Command groups, in the order the root's help lists them.
const (
	groupDaemon     = "daemon"
	groupRules      = "rules"
	groupRecordings = "recordings"
	groupApprovals  = "approvals"
)

// newRootCmd builds the whole command tree. Each call returns a fresh
// tree, so tests can run commands in one process.
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "the operator's CLI for sluiced, Sluice's data-path guard for CI runners",
		Long: `sluice is the operator's CLI for sluiced, the daemon that sends a CI runner's
connections to databases through a proxy that applies the security team's
ruleset and records every session.

Commands that talk to the daemon use its API socket (--socket, default
/run/sluice/sluiced.sock; only root can open it) or, with --server, its
remote API. Exit status: 0 ok, 1 failure, 2 usage error.`,
		Version:       version.String(),
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRunE,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetVersionTemplate("sluice {{.Version}}\n")
	// A command that only holds subcommands shows "sluice rules [command]",
	// not also "sluice rules [flags]".
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(),
		"Usage:{{if .Runnable}}", "Usage:{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
	root.SetFlagErrorFunc(flagError)
	root.AddGroup(
		&cobra.Group{ID: groupDaemon, Title: "Install, run and check:"},
		&cobra.Group{ID: groupRules, Title: "Rulesets:"},
		&cobra.Group{ID: groupRecordings, Title: "Sessions and recordings:"},
		&cobra.Group{ID: groupApprovals, Title: "Approvals:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add(groupDaemon, newInstallCmd(), newStatusCmd(), newDoctorCmd(), newRunCmd(), newUninstallCmd(), newCACmd(), newSSHCACmd(), newKubeconfigCmd())
	add(groupRules, newRulesCmd())
	add(groupRecordings, newSessionsCmd(), newReplayCmd(), newExportCmd(), newVerifyCmd(), newRecordingsCmd(), newEventsCmd())
	add(groupApprovals, newApprovalsCmd(), newDecideCmd("approve"), newDecideCmd("deny"))
	root.AddCommand(newVersionCmd(), newGenDocsCmd())
	root.SetHelpCommand(newHelpCmd())
	// Add cobra's completion command now rather than at Execute, so that
	// `sluice completion` without a shell (or with an unknown one) is a
	// usage error like every other group, and the tree is whole for the
	// man pages.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Args, c.RunE = cobra.ArbitraryArgs, groupRunE
		}
	}
	return root
}

// newHelpCmd is `sluice help [command]`: the command's help, as with
// --help; an unknown command is a usage error.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help about any command: sluice help rules check is sluice rules check --help.",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usageErrorf("no command %q: the commands are listed by sluice --help", strings.Join(args, " "))
			}
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
}

// groupRunE is the RunE of a command that only holds subcommands: without
// one it prints its usage on stderr (exit 2), and an unknown one is a
// usage error naming the closest match.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
		return exitStatus(2)
	}
	msg := fmt.Sprintf("unknown command %q", args[0])
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(": did you mean %q?", s[0])
	}
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() && c.Name() != "help" && c.Name() != "completion" {
			names = append(names, c.Name())
		}
	}
	return usageErrorf("%s; the commands are %s", msg, strings.Join(names, ", "))
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print sluice's version (the same as --version)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "sluice %s\n", version.String())
			return nil
		},
	}
}
