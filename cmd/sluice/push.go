package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// pushCmd sends DIR's ruleset (and its ruleset.sig, if any) to the local
// daemon, which applies it atomically or keeps the active one and says why.
func pushCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", api.DefaultSocket, "daemon API socket")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: sluice rules push [--socket P] DIR")
		return 2
	}
	b, err := ruleset.ReadBundle(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "sluice rules push:", err)
		return 1
	}
	req := &api.PushRequest{Files: map[string]string{}, Signature: b.Signature}
	for n, c := range b.Files {
		req.Files[n] = string(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := api.NewClient(*socket).Push(ctx, req)
	if err != nil {
		fmt.Fprintln(stderr, "sluice rules push:", err)
		return 1
	}
	for _, m := range resp.Messages {
		fmt.Fprintln(stderr, m)
	}
	if !resp.Accepted {
		fmt.Fprintf(stderr, "ruleset rejected; generation %d stays active\n", resp.Ruleset.Generation)
		return 1
	}
	fmt.Fprintf(stdout, "ruleset active: generation %d, digest %s, mode %s\n", resp.Ruleset.Generation, resp.Ruleset.Digest, resp.Ruleset.Mode)
	return 0
}
