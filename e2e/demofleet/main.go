// Command demofleet runs the shared servers of the fleet demo
// (scripts/demo-fleet.sh): a real nats-server with JetStream
// (testenv.StartNATS) and a real S3-compatible server (testenv.StartS3:
// versitygw on its POSIX backend), both on 127.0.0.1, with a bucket
// "recordings" created with object lock.
//
// It prints shell assignments on the first line, then serves until SIGINT
// or SIGTERM, when it stops both servers and removes their data:
//
//	NATS_URL       nats://127.0.0.1:PORT
//	S3_ENDPOINT    127.0.0.1:PORT (plain HTTP)
//	S3_ACCESS_KEY  the server's root access key
//	S3_SECRET_KEY  and its secret key
//
//	demofleet -dir DIR
//
// The programs come from scripts/build-nats.sh's and scripts/build-s3.sh's
// caches; demofleet never builds them, and fails saying so when they are
// missing.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/internal/testenv"
)

func main() {
	fs := flag.NewFlagSet("demofleet", flag.ExitOnError)
	dir := fs.String("dir", "", "directory for the servers' temporary files (required)")
	fs.Parse(os.Args[1:])
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "demofleet: -dir is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "demofleet: %v\n", err)
		os.Exit(1)
	}
	p := testenv.NewProgram("demofleet", *dir)

	// A signal during startup stops what has started so far.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		p.Exit(0)
	}()

	n := testenv.StartNATS(p)
	s := testenv.StartS3(p, testenv.S3Options{})
	s.MakeBucket(p, "recordings", true)
	fmt.Printf("NATS_URL=%s S3_ENDPOINT=%s S3_ACCESS_KEY=%s S3_SECRET_KEY=%s\n", n.URL, s.Endpoint, s.AccessKey, s.SecretKey)
	select {} // until a signal: the goroutine above exits
}
