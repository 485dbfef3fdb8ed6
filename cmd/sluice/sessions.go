package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/enforcer/export"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/api"
)

// daemonFlags adds the flags that pick a daemon: the local socket, or a
// remote API with --server, a bearer token and the CA to trust.
func daemonFlags(fs *flag.FlagSet) func() (*api.Client, error) {
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	server := fs.String("server", "", "remote daemon API, https://host:port (instead of the local socket)")
	tokenFile := fs.String("token-file", "", "file holding the OIDC bearer token for --server (default: $SLUICE_TOKEN)")
	caFile := fs.String("ca", "", "PEM file of the daemon's CA (`sluice ca` on the runner) for --server")
	return func() (*api.Client, error) {
		if *server == "" {
			return api.NewClient(*socket), nil
		}
		if !strings.HasPrefix(*server, "https://") {
			return nil, fmt.Errorf("--server %q: the remote API is https only", *server)
		}
		tok := os.Getenv("SLUICE_TOKEN")
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return nil, fmt.Errorf("read token: %w", err)
			}
			tok = strings.TrimSpace(string(b))
		}
		if tok == "" {
			return nil, errors.New("--server needs a bearer token: --token-file FILE or $SLUICE_TOKEN")
		}
		var roots *x509.CertPool
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return nil, fmt.Errorf("read --ca: %w", err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca %s holds no PEM certificate", *caFile)
			}
		}
		return api.NewRemoteClient(*server, tok, roots), nil
	}
}

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
	client := daemonFlags(fs)
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
	c, err := client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice sessions list:", err)
		return 2
	}
	if err := c.Get(ctx, "/v1/sessions?"+q.Encode(), &sessions); err != nil {
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
func detail(client func() (*api.Client, error), id string) (*store.Session, []record.Event, *api.SessionDetail, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client()
	if err != nil {
		return nil, nil, nil, err
	}
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

func sessionsShow(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sessions show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := daemonFlags(fs)
	asJSON := fs.Bool("json", false, "print the session and its events as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: sluice sessions show [--json] ID")
		return 2
	}
	sess, events, d, err := detail(client, fs.Arg(0))
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
	fmt.Fprintf(stdout, "statements %d, denied %d\n\n", sess.Statements, sess.Denied)
	if err := export.Transcript(stdout, events); err != nil {
		fmt.Fprintln(stderr, "sluice sessions show:", err)
		return 1
	}
	return 0
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
	client := daemonFlags(fs)
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
	c, err := client()
	if err != nil {
		fmt.Fprintln(stderr, "sluice verify:", err)
		return 2
	}
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
	client := daemonFlags(fs)
	speed := fs.Float64("speed", 1, "playback speed: 2 is twice as fast")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || *speed <= 0 {
		fmt.Fprintln(stderr, "usage: sluice replay [--speed X] ID   (X > 0)")
		return 2
	}
	_, events, _, err := detail(client, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := export.Replay(ctx, stdout, events, *speed); err != nil {
		fmt.Fprintln(stderr, "sluice replay:", err)
		return 1
	}
	return 0
}

// exportCmd: sluice export ID --format jsonl|pcap|asciicast -o FILE.
func exportCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	client := daemonFlags(fs)
	format := fs.String("format", "jsonl", "jsonl (SIEMs), pcap (Wireshark, tshark; needs record level full) or asciicast (asciinema)")
	out := fs.String("o", "", "output file (default: standard output)")
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		args = append(args[1:], args[0]) // allow the ID first
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: sluice export ID --format jsonl|pcap|asciicast [-o FILE]")
		return 2
	}
	_, events, d, err := detail(client, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "sluice export:", err)
		return 1
	}
	var hdr record.Header
	json.Unmarshal(d.Header, &hdr)
	var w io.Writer = stdout
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			fmt.Fprintln(stderr, "sluice export:", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	switch *format {
	case "jsonl":
		err = export.WriteJSONL(w, hdr, events)
	case "asciicast":
		err = export.WriteAsciicast(w, hdr, events, 0, 0)
	case "pcap":
		var client, server netip.AddrPort
		if client, server, err = export.Endpoints(events); err == nil {
			err = export.WritePCAP(w, events, client, server)
			if err == nil && server.Port() != 5432 {
				fmt.Fprintf(stderr, "the server port is %d: decode with tshark -d tcp.port==%d,pgsql\n", server.Port(), server.Port())
			}
		}
	default:
		fmt.Fprintf(stderr, "sluice export: unknown format %q: use jsonl, pcap or asciicast\n", *format)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice export:", err)
		return 1
	}
	return 0
}
