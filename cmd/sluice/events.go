package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/internal/api"
)

// newEventsCmd is `sluice events`: the fleet's events in NATS JetStream.
func newEventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Read the events every sluiced publishes to NATS JetStream",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRunE,
	}
	var url, stream, since, creds, ca, vm string
	var follow bool
	tail := &cobra.Command{
		Use:   "tail",
		Short: "Print the stream's events as JSON lines",
		Long: `Print the events in the stream (every sluiced with an events block publishes
there), oldest first, one JSON object a line, and exit once caught up; with
--follow keep printing new ones until interrupted. Needs no daemon: only the
NATS server.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				return usageErrorf("--nats is required: the NATS server, such as nats://nats.internal:4222")
			}
			from, err := api.ParseSince(since)
			if err != nil {
				return usageErrorf("--%v", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return tailEvents(ctx, cmd, url, stream, vm, creds, ca, from, follow)
		}),
	}
	fl := tail.Flags()
	fl.StringVar(&url, "nats", "", "the NATS server `URL` (nats://HOST:PORT)")
	fl.StringVar(&stream, "stream", "SLUICE_EVENTS", "the JetStream `STREAM`")
	fl.StringVar(&since, "since", "", "only events after `WHEN`: a duration back from now (2h, 7d) or an RFC 3339 time")
	fl.StringVar(&vm, "vm", "", "only the events of the VM named `NAME`")
	fl.StringVar(&creds, "creds", "", "a NATS credentials `FILE`")
	fl.StringVar(&ca, "ca", "", "the only CAs (PEM `FILE`) trusted for the server's TLS certificate")
	fl.BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.AddCommand(tail)
	return cmd
}

func tailEvents(ctx context.Context, cmd *cobra.Command, url, stream, vm, creds, ca string, since time.Time, follow bool) error {
	opts := []nats.Option{nats.Name("sluice events tail")}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("open JetStream: %w", err)
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := js.Stream(lctx, stream)
	cancel()
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	if vm != "" {
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("open stream %s: %w", stream, err)
		}
		if len(info.Config.Subjects) == 1 && len(info.Config.Subjects[0]) > 2 {
			prefix := info.Config.Subjects[0][:len(info.Config.Subjects[0])-2]
			cfg.FilterSubjects = []string{prefix + "." + vm + ".>"}
		}
	}
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("read stream %s: %w", stream, err)
	}
	out := cmd.OutOrStdout()
	for {
		if !follow {
			// Caught up when the consumer has nothing pending.
			ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil && info.NumPending == 0 {
				return nil
			}
		}
		var batch jetstream.MessageBatch
		if follow {
			batch, err = c.Fetch(256, jetstream.FetchMaxWait(time.Second))
		} else {
			batch, err = c.FetchNoWait(256)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		for m := range batch.Messages() {
			fmt.Fprintf(out, "%s\n", m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read stream %s: %w", stream, err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
