package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/export"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// verdicts are the values sessions list --verdict accepts.
var verdicts = []string{"allow", "mask", "hold", "deny"}

// newSessionsCmd is `sluice sessions list|show`.
func newSessionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List recorded sessions, or show one's transcript",
		Long: `List the sessions the daemon recorded (who, where, how many statements, how
many denied), or show one session's transcript.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRunE,
	}
	cmd.AddCommand(newSessionsListCmd(), newSessionsShowCmd())
	return cmd
}

func newSessionsListCmd() *cobra.Command {
	var since, repo, runID, target, verdict string
	var limit int
	var asJSON bool
	var daemon *daemonFlags
	var st *storeFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sessions, newest first, with filters",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if _, err := api.ParseSince(since); err != nil {
				return usageErrorf("--%v", err)
			}
			if verdict != "" && !slices.Contains(verdicts, verdict) {
				return usageErrorf("--verdict %q: want one of %s", verdict, strings.Join(verdicts, ", "))
			}
			if limit < 0 {
				return usageErrorf("--limit %d: want 0 (all) or more", limit)
			}
			if err := st.check(daemon); err != nil {
				return err
			}
			var sessions []*store.Session
			var checkpoints map[string]time.Time // of active sessions in the store
			var keys map[string]string           // with --fleet-pub
			if st.set() {
				f := store.Filter{Repo: repo, RunID: runID, Target: target, Verdict: verdict, Limit: limit}
				f.Since, _ = api.ParseSince(since)
				var err error
				if sessions, checkpoints, keys, err = storeList(st, f); err != nil {
					return err
				}
			} else {
				c, err := daemon.client()
				if err != nil {
					return err
				}
				q := url.Values{}
				for k, v := range map[string]string{"since": since, "repo": repo, "run_id": runID, "target": target, "verdict": verdict, "limit": fmt.Sprint(limit)} {
					if v != "" {
						q.Set(k, v)
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := c.Get(ctx, "/v1/sessions?"+q.Encode(), &sessions); err != nil {
					return err
				}
			}
			stdout := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(stdout, sessions)
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			keyCol := ""
			if st.fleetPub != "" {
				keyCol = "\tKEY"
			}
			fmt.Fprintln(tw, "ID\tSTART\tSTATUS\tTARGET\tORIG DST\tPROCESS\tIDENTITY\tSTATEMENTS\tDENIED"+keyCol)
			for _, s := range sessions {
				who := s.IdentityLevel
				if s.Repository != "" {
					who += " " + s.Repository
					if s.Ref != "" {
						who += "@" + strings.TrimPrefix(s.Ref, "refs/heads/")
					}
					if s.RunID != "" {
						who += " run " + s.RunID
					}
				}
				status := s.Status
				if cp, ok := checkpoints[s.ID]; ok {
					status += ", checkpoint " + cp.Local().Format("15:04:05")
				}
				key := ""
				if st.fleetPub != "" {
					key = "\t" + keys[s.ID]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s[%d] uid %d\t%s\t%d\t%d%s\n", s.ID, s.Start.Local().Format("2006-01-02 15:04:05"),
					status, s.Target, s.OrigDst, s.Comm, s.PID, s.UID, who, s.Statements, s.Denied, key)
			}
			return tw.Flush()
		}),
	}
	fl := cmd.Flags()
	daemon = addDaemonFlags(fl)
	st = addStoreFlags(fl)
	fl.StringVar(&since, "since", "", "only sessions that started after `WHEN`: a duration back from now (2h, 7d) or an RFC 3339 time")
	fl.StringVar(&repo, "repo", "", "only sessions of the repository `OWNER/NAME` (verified identity claim)")
	fl.StringVar(&runID, "run-id", "", "only sessions of the CI run `ID` (verified identity claim)")
	fl.StringVar(&target, "target", "", "only sessions to the ruleset target `NAME`")
	fl.StringVar(&verdict, "verdict", "", "only sessions with at least one `VERDICT`: allow, mask, hold or deny")
	fl.IntVar(&limit, "limit", 100, "at most `N` sessions, newest first (0: all)")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	fl.StringVar(&st.fleetPub, "fleet-pub", "", "with --store, add a KEY column: the VM whose key the fleet public key in `FILE` endorses for each session, or FORGED")
	return cmd
}

// detail fetches a session and its events from the daemon.
func detail(daemon *daemonFlags, id string) (*store.Session, []record.Event, *api.SessionDetail, error) {
	c, err := daemon.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var d api.SessionDetail
	if err := c.Get(ctx, "/v1/sessions/"+url.PathEscape(id), &d); err != nil {
		return nil, nil, nil, err
	}
	var sess store.Session
	if err := json.Unmarshal(d.Session, &sess); err != nil {
		return nil, nil, nil, fmt.Errorf("decode session: %w", err)
	}
	var events []record.Event
	if len(d.Events) > 0 {
		if err := json.Unmarshal(d.Events, &events); err != nil {
			return nil, nil, nil, fmt.Errorf("decode events: %w", err)
		}
	}
	return &sess, events, &d, nil
}

func newSessionsShowCmd() *cobra.Command {
	var asJSON bool
	var daemon *daemonFlags
	var st *storeFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "A session's transcript: who, where, statements, verdicts, rows",
		Long: `Show a session: who, where and when, then its transcript: each statement
(for ssh each request: shell, command, SFTP operation, forward) with its
verdict and result. At record level full an ssh session's transcript also
shows what its terminals showed and its commands' stdout (| lines) and
stderr (! lines), with control characters escaped; sluice replay plays the
terminal itself, and sluice export --format asciicast writes it for asciinema.`,
		Args: argsNamed("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := st.check(daemon); err != nil {
				return err
			}
			sess, events, d, err := st.detail(daemon, args[0])
			if err != nil {
				return err
			}
			if st.keyNote != "" && !asJSON {
				fmt.Fprintf(cmd.OutOrStdout(), "key       %s\n", st.keyNote)
			}
			if err := sessionsShow(cmd.OutOrStdout(), sess, events, d, asJSON); err != nil {
				return err
			}
			if st.forged {
				return exitStatus(1)
			}
			return nil
		}),
	}
	daemon = addDaemonFlags(cmd.Flags())
	st = addStoreFlags(cmd.Flags())
	cmd.Flags().StringVar(&st.fleetPub, "fleet-pub", "", "with --store, say whether the fleet public key in `FILE` endorses the session's key for its VM; exit 1 if it does not (FORGED)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the session and its events as JSON")
	return cmd
}

func sessionsShow(stdout io.Writer, sess *store.Session, events []record.Event, d *api.SessionDetail, asJSON bool) error {
	if asJSON {
		return writeJSON(stdout, d)
	}
	fmt.Fprintf(stdout, "session   %s (%s; recording %s, level %s)\n", sess.ID, sess.Status, d.RecordingStatus, sess.Level)
	if d.ReadError != "" {
		fmt.Fprintf(stdout, "WARNING   the recording could not be read in full: %s\n", d.ReadError)
	}
	fmt.Fprintf(stdout, "started   %s\n", sess.Start.Local().Format(time.RFC3339))
	if !sess.End.IsZero() {
		fmt.Fprintf(stdout, "ended     %s (%s)\n", sess.End.Local().Format(time.RFC3339), sess.End.Sub(sess.Start).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "target    %s (%s) %s\n", sess.Target, sess.Protocol, sess.OrigDst)
	fmt.Fprintf(stdout, "process   %s pid %d uid %d exe %s\n", sess.Comm, sess.PID, sess.UID, sess.Exe)
	var start map[string]string
	for _, e := range events {
		if e.Type == record.TypeSessionStart {
			start = e.Fields
			break
		}
	}
	id := "identity  " + sess.IdentityLevel
	if j := start["identity.job"]; j != "" {
		id += " job " + j
	}
	if r := start["identity.reason"]; r != "" {
		id += " (" + r + ")"
	}
	fmt.Fprintln(stdout, id)
	for _, k := range sortedKeys(start) {
		if strings.HasPrefix(k, "claim.") {
			fmt.Fprintf(stdout, "          %s = %s\n", strings.TrimPrefix(k, "claim."), start[k])
		}
	}
	for _, k := range sortedKeys(start) {
		if strings.HasPrefix(k, "hint.") {
			fmt.Fprintf(stdout, "          unverified hint %s = %s\n", strings.TrimPrefix(k, "hint."), start[k])
		}
	}
	// An SSH session's statements are its requests: channels, commands,
	// forwards and SFTP operations; a Kubernetes session's are its API
	// requests.
	counted := "statements"
	if sess.Protocol == ruleset.ProtoSSH || sess.Protocol == ruleset.ProtoK8s {
		counted = "requests"
	}
	fmt.Fprintf(stdout, "%s %d, denied %d\n\n", counted, sess.Statements, sess.Denied)
	return export.Transcript(stdout, events)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// newVerifyCmd is `sluice verify ID|--all`. Exit 1 when any recording was
// altered.
func newVerifyCmd() *cobra.Command {
	var all bool
	var daemon *daemonFlags
	var st *storeFlags
	cmd := &cobra.Command{
		Use:   "verify (ID | --all)",
		Short: "Check recordings' checksums, hash chain and signatures; exit 1 if altered",
		Long: `Check a recording (ID) or every recording (--all): each frame's checksum, the
hash chain between frames and the signed checkpoints. Prints ok or ALTERED
per recording; exit 1 when any was altered.`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return usageErrorf("give an ID or --all, not both")
			case !all && len(args) == 0:
				return usageErrorf("missing ID (or --all for every recording)")
			case len(args) > 1:
				return usageErrorf("unexpected argument %q: verify takes one ID", args[1])
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := st.check(daemon); err != nil {
				return err
			}
			if st.set() {
				id := ""
				if !all {
					id = args[0]
				}
				return storeVerify(cmd.OutOrStdout(), st, id)
			}
			c, err := daemon.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			var results []api.VerifyResult
			if all {
				if err := c.Get(ctx, "/v1/verify", &results); err != nil {
					return err
				}
			} else {
				var r api.VerifyResult
				if err := c.Get(ctx, "/v1/sessions/"+url.PathEscape(args[0])+"/verify", &r); err != nil {
					return err
				}
				results = append(results, r)
			}
			stdout := cmd.OutOrStdout()
			bad := 0
			for _, r := range results {
				if r.Error != "" {
					bad++
					fmt.Fprintf(stdout, "%s: ALTERED: %s\n", r.ID, r.Error)
					continue
				}
				note := ""
				if r.Status == "interrupted" {
					note = fmt.Sprintf(" (interrupted: frames 0-%d are signed, %d after the last checkpoint are chained but unsigned, %d torn bytes at the end)",
						r.SignedThrough, r.Frames-1-r.SignedThrough, r.TornBytes)
				}
				fmt.Fprintf(stdout, "%s: ok, %s, %d events%s\n", r.ID, r.Status, r.Events, note)
			}
			if bad > 0 {
				fmt.Fprintf(stdout, "%d of %d recordings failed verification\n", bad, len(results))
				return exitStatus(1)
			}
			return nil
		}),
	}
	daemon = addDaemonFlags(cmd.Flags())
	st = addStoreFlags(cmd.Flags())
	cmd.Flags().StringVar(&st.pub, "pub", "", "with --store, verify with the recording public key in `FILE` (sluice recordings pubkey on the VM) instead of the key each recording's sidecar names")
	cmd.Flags().StringVar(&st.fleetPub, "fleet-pub", "", "with --store, verify each recording with the key the fleet public key in `FILE` endorses for the VM that uploaded it (a recording whose key it does not endorse is FORGED)")
	cmd.Flags().BoolVar(&all, "all", false, "verify every recording")
	return cmd
}

// newRecordingsCmd is `sluice recordings pubkey`.
func newRecordingsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recordings",
		Short: "Work with the recordings' signing key",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	var dataDir string
	pubkey := &cobra.Command{
		Use:   "pubkey",
		Short: "Print the public key recordings are signed with",
		Long:  `Print the ed25519 public key the daemon signs recordings' checkpoints with, so that an auditor can check recordings away from this machine.`,
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			pub, err := record.LoadPublicKey(dataDir)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return fmt.Errorf("no recording key in %s yet: sluiced creates it on its first start; pass --data-dir DIR if the daemon uses another data_dir", dataDir)
			case errors.Is(err, fs.ErrPermission):
				return fmt.Errorf("the recording key in %s is not readable by this user: run as root", dataDir)
			case err != nil:
				return err
			}
			_, err = cmd.OutOrStdout().Write(record.MarshalPublicKey(pub))
			return err
		}),
	}
	pubkey.Flags().StringVar(&dataDir, "data-dir", defaultDataDir, "the daemon's data `DIR`")
	cmd.AddCommand(pubkey)
	return cmd
}

// newReplayCmd is `sluice replay ID [--speed X]`.
func newReplayCmd() *cobra.Command {
	var speed float64
	var daemon *daemonFlags
	cmd := &cobra.Command{
		Use:   "replay ID",
		Short: "Print a session's transcript paced by the recorded timing",
		Long: `Print a session's transcript paced by the recorded timing (pauses over 2s
are cut to 2s, then divided by --speed). An ssh session is played as its
terminal instead, as asciinema play would: the raw bytes its terminals
showed (escape sequences included), its commands' output after a $ line,
refusals and other requests as lines.`,
		Args: argsNamed("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if speed <= 0 {
				return usageErrorf("--speed %v: want a number above 0 (2 is twice as fast, 0.5 half as fast)", speed)
			}
			_, events, _, err := detail(daemon, args[0])
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			return export.Replay(ctx, cmd.OutOrStdout(), events, speed)
		}),
	}
	daemon = addDaemonFlags(cmd.Flags())
	cmd.Flags().Float64Var(&speed, "speed", 1, "playback `SPEED`: 2 is twice as fast, 0.5 half as fast")
	return cmd
}

// exportFormats are the values export --format accepts.
var exportFormats = []string{"jsonl", "pcap", "asciicast"}

// newExportCmd is `sluice export ID --format jsonl|pcap|asciicast [-o FILE]`.
func newExportCmd() *cobra.Command {
	var format, out string
	var daemon *daemonFlags
	var st *storeFlags
	cmd := &cobra.Command{
		Use:   "export ID [--format jsonl|pcap|asciicast] [-o FILE]",
		Short: "Export a recording for SIEMs (jsonl), Wireshark (pcap) or asciinema",
		Long: `Export the recording ID: jsonl (one event per line, for SIEMs), pcap (the
session's packets for Wireshark and tshark; needs record level full; not
for ssh sessions, whose recording holds their channels' decrypted data) or
asciicast (for asciinema: an ssh session's terminal and commands as the job
saw them, any other session's transcript typed out).`,
		Args: argsNamed("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(exportFormats, format) {
				return usageErrorf("--format %q: want one of %s", format, strings.Join(exportFormats, ", "))
			}
			if err := st.check(daemon); err != nil {
				return err
			}
			sess, events, d, err := st.detail(daemon, args[0])
			if err != nil {
				return err
			}
			if format == "pcap" && (sess.Protocol == ruleset.ProtoSSH || sess.Protocol == ruleset.ProtoK8s) {
				// Said before -o makes a file.
				return fmt.Errorf("--format pcap: %w", export.ErrNotAStream)
			}
			var hdr record.Header
			json.Unmarshal(d.Header, &hdr)
			w := cmd.OutOrStdout()
			if out != "" {
				f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
				if err != nil {
					return fmt.Errorf("write %s", fileError(out, err))
				}
				defer f.Close()
				w = f
			}
			switch format {
			case "jsonl":
				err = export.WriteJSONL(w, hdr, events)
			case "asciicast":
				err = export.WriteAsciicast(w, hdr, events, 0, 0)
			case "pcap":
				var client, server netip.AddrPort
				if client, server, err = export.Endpoints(events); err == nil {
					err = export.WritePCAP(w, events, client, server)
					// tshark knows each protocol by its usual port.
					p, _ := decoder.Lookup(sess.Protocol)
					if err == nil && p.Dissector != "" && server.Port() != p.Port {
						fmt.Fprintf(cmd.ErrOrStderr(), "the server port is %d: decode with tshark -d tcp.port==%d,%s\n", server.Port(), server.Port(), p.Dissector)
					}
				}
			}
			return err
		}),
	}
	daemon = addDaemonFlags(cmd.Flags())
	st = addStoreFlags(cmd.Flags())
	cmd.Flags().StringVar(&format, "format", "jsonl", "output `FORMAT`: jsonl (SIEMs), pcap (Wireshark, tshark; needs record level full; not for ssh sessions) or asciicast (asciinema)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to `FILE` (default: standard output)")
	return cmd
}
