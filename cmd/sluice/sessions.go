package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/api"
)

// sessionsCmd: `sluice sessions list|show`.
func sessionsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: sluice sessions list [flags] | sluice sessions show ID")
		return 2
	}
	switch args[0] {
	case "list":
		return sessionsList(args[1:], stdout, stderr)
	case "show":
		return sessionsShow(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "sluice sessions: unknown command %q\n", args[0])
	return 2
}

func sessionsList(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sessions list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	since := fs.String("since", "", "only sessions that started after this: a duration (2h, 7d) or an RFC 3339 time")
	repo := fs.String("repo", "", "repository (verified identity claim)")
	runID := fs.String("run-id", "", "CI run id (verified identity claim)")
	target := fs.String("target", "", "ruleset target name")
	verdict := fs.String("verdict", "", "sessions with at least one such verdict: allow, mask, hold, deny")
	limit := fs.Int("limit", 100, "at most this many, newest first (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := api.ParseSince(*since); err != nil {
		fmt.Fprintln(stderr, "sluice sessions list:", err)
		return 2
	}
	q := url.Values{}
	for k, v := range map[string]string{"since": *since, "repo": *repo, "run_id": *runID, "target": *target, "verdict": *verdict, "limit": fmt.Sprint(*limit)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var sessions []*store.Session
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := api.NewClient(*socket).Get(ctx, "/v1/sessions?"+q.Encode(), &sessions); err != nil {
		fmt.Fprintln(stderr, "sluice sessions list:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(sessions)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTART\tSTATUS\tTARGET\tORIG DST\tPROCESS\tIDENTITY\tSTATEMENTS\tDENIED")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s[%d] uid %d\t%s\t%d\t%d\n", s.ID, s.Start.Local().Format("2006-01-02 15:04:05"),
			s.Status, s.Target, s.OrigDst, s.Comm, s.PID, s.UID, who, s.Statements, s.Denied)
	}
	tw.Flush()
	return 0
}

// detail fetches a session and its events from the daemon.
func detail(socket, id string) (*store.Session, []record.Event, *api.SessionDetail, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var d api.SessionDetail
	if err := api.NewClient(socket).Get(ctx, "/v1/sessions/"+url.PathEscape(id), &d); err != nil {
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

func sessionsShow(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sessions show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	asJSON := fs.Bool("json", false, "print the session and its events as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: sluice sessions show [--json] ID")
		return 2
	}
	sess, events, d, err := detail(*socket, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "sluice sessions show:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(d)
		return 0
	}
	fmt.Fprintf(stdout, "session   %s (%s; recording %s, level %s)\n", sess.ID, sess.Status, d.RecordingStatus, sess.Level)
	if d.ReadError != "" {
		fmt.Fprintf(stdout, "WARNING   the recording could not be read in full: %s\n", d.ReadError)
	}
	fmt.Fprintf(stdout, "started   %s\n", sess.Start.Local().Format(time.RFC3339))
	if !sess.End.IsZero() {
		fmt.Fprintf(stdout, "ended     %s (%s)\n", sess.End.Local().Format(time.RFC3339), sess.End.Sub(sess.Start).Round(time.Millisecond))
	}
	writeTranscript(stdout, events)
	return 0
}

// writeTranscript renders events as a readable transcript.
func writeTranscript(w io.Writer, events []record.Event) {
	var start time.Time
	for _, e := range events {
		if start.IsZero() {
			start = e.Time
		}
		at := fmt.Sprintf("+%8.3fs", e.Time.Sub(start).Seconds())
		switch e.Type {
		case record.TypeSessionStart:
			f := e.Fields
			fmt.Fprintf(w, "%s target    %s (%s) %s\n", at, f["target"], f["protocol"], f["orig_dst"])
			fmt.Fprintf(w, "%s process   %s pid %s uid %s exe %s cgroup %s\n", at, f["comm"], f["pid"], f["uid"], f["exe"], f["cgroup"])
			id := "identity  " + f["identity.level"]
			if j := f["identity.job"]; j != "" {
				id += " job " + j
			}
			if r := f["identity.reason"]; r != "" {
				id += " (" + r + ")"
			}
			fmt.Fprintf(w, "%s %s\n", at, id)
			for _, k := range sortedKeys(f) {
				if strings.HasPrefix(k, "claim.") || strings.HasPrefix(k, "hint.") {
					fmt.Fprintf(w, "%s           %s = %s\n", at, k, f[k])
				}
			}
			fmt.Fprintf(w, "%s connect   %s (rule %s)\n", at, e.Verdict, e.Rule)
		case record.TypeStatement:
			text := e.Text
			if text == "" {
				text = "<" + e.Kind + ", text not recorded at this level>"
			}
			fmt.Fprintf(w, "%s %-9s %s\n", at, strings.ToUpper(e.Verdict), oneLine(text))
			if e.Verdict != "allow" {
				fmt.Fprintf(w, "%s           rule %s: %s\n", at, e.Rule, e.Reason)
			}
		case record.TypeResult:
			line := fmt.Sprintf("%d rows, %d bytes, %.3f ms", e.Rows, e.Bytes, float64(e.DurationUS)/1000)
			if e.ErrCode != "" {
				line += ", error " + e.ErrCode
			}
			fmt.Fprintf(w, "%s           -> %s\n", at, line)
		case record.TypeError:
			fmt.Fprintf(w, "%s ERROR     %s %s %s\n", at, e.ErrCode, e.Reason, oneLine(e.Text))
		case record.TypeNote:
			fmt.Fprintf(w, "%s note      %s (rule %s)\n", at, e.Reason, e.Rule)
		case record.TypeSessionEnd:
			end := "closed"
			if e.Reason != "" {
				end = e.Reason
			}
			fmt.Fprintf(w, "%s end       %s; %d bytes\n", at, end, e.Bytes)
		}
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// verifyCmd: sluice verify ID|--all. Exit 1 when any recording was altered.
func verifyCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	all := fs.Bool("all", false, "verify every recording")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *all == (fs.NArg() == 1) {
		fmt.Fprintln(stderr, "usage: sluice verify ID | sluice verify --all")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var results []api.VerifyResult
	c := api.NewClient(*socket)
	if *all {
		if err := c.Get(ctx, "/v1/verify", &results); err != nil {
			fmt.Fprintln(stderr, "sluice verify:", err)
			return 1
		}
	} else {
		var r api.VerifyResult
		if err := c.Get(ctx, "/v1/sessions/"+url.PathEscape(fs.Arg(0))+"/verify", &r); err != nil {
			fmt.Fprintln(stderr, "sluice verify:", err)
			return 1
		}
		results = append(results, r)
	}
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
		return 1
	}
	return 0
}

// recordingsCmd: sluice recordings pubkey.
func recordingsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("recordings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "/var/lib/sluice", "the daemon's data directory")
	if len(args) == 0 || args[0] != "pubkey" {
		fmt.Fprintln(stderr, "usage: sluice recordings pubkey [--data-dir DIR]")
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	pub, err := record.LoadPublicKey(*dataDir)
	if err != nil {
		fmt.Fprintln(stderr, "sluice recordings pubkey:", err)
		return 1
	}
	stdout.Write(record.MarshalPublicKey(pub))
	return 0
}

// replayCmd: sluice replay ID [--speed X].
func replayCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	speed := fs.Float64("speed", 1, "playback speed: 2 is twice as fast")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *speed <= 0 {
		fmt.Fprintln(stderr, "usage: sluice replay [--speed X] ID   (X > 0)")
		return 2
	}
	_, events, _, err := detail(*socket, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		return 1
	}
	var prev time.Time
	for _, e := range events {
		if !prev.IsZero() {
			gap := time.Duration(float64(e.Time.Sub(prev)) / *speed)
			if limit := time.Duration(float64(2*time.Second) / *speed); gap > limit {
				gap = limit // long idle gaps are shortened
			}
			time.Sleep(gap)
		}
		prev = e.Time
		writeTranscript(stdout, []record.Event{e})
	}
	return 0
}
