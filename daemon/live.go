package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/export"
	"github.com/sluicehq/sluice/enforcer/record"
)

// liveEvent is one line of the live export, in the same schema as
// `sluice export --format jsonl`.
type liveEvent = export.Line

// live streams recorded events as JSON lines to a file (or stdout) and/or
// a syslog collector (RFC 5424 messages over TCP, octet-counted as RFC 6587
// frames them). It is best effort by design: the signed recording is the
// durable copy, so a slow or absent collector never stalls a session;
// when the queue is full, events are dropped from the live stream only,
// counted and logged.
type live struct {
	q       chan liveEvent
	dropped atomic.Uint64
	log     hclog.Logger
	file    io.WriteCloser
	syslog  string
	host    string
}

// liveQueue is how many events may wait for the live exporter.
const liveQueue = 8192

func newLive(cfg liveConfig, log hclog.Logger) (*live, error) {
	if cfg.File == "" && cfg.Syslog == "" {
		return nil, nil
	}
	l := &live{q: make(chan liveEvent, liveQueue), log: log, syslog: cfg.Syslog}
	l.host, _ = os.Hostname()
	switch cfg.File {
	case "":
	case "-":
		l.file = nopCloser{os.Stdout}
	default:
		f, err := os.OpenFile(cfg.File, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open live export file: %w", err)
		}
		l.file = f
	}
	go l.run()
	return l, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// tee returns the Session.Tee of one session.
func (l *live) tee(session string) func(record.Event) {
	return func(e record.Event) {
		if len(e.Data) > 0 {
			e.Data = append([]byte(nil), e.Data...)
		}
		select {
		case l.q <- liveEvent{Session: session, Event: e}:
		default:
			if n := l.dropped.Add(1); n == 1 || n%1000 == 0 {
				l.log.Warn("live export queue full; events dropped from the live stream (the recordings keep them)", "dropped", n)
			}
		}
	}
}

func (l *live) run() {
	var fw *bufio.Writer
	if l.file != nil {
		fw = bufio.NewWriter(l.file)
	}
	var conn net.Conn
	var next time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev := <-l.q:
			line, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			if fw != nil {
				fw.Write(append(line, '\n'))
			}
			if l.syslog != "" {
				if conn == nil && time.Now().After(next) {
					c, err := net.DialTimeout("tcp", l.syslog, 5*time.Second)
					if err != nil {
						l.log.Warn("syslog collector unreachable; retrying in 5s", "addr", l.syslog, "error", err)
						next = time.Now().Add(5 * time.Second)
					} else {
						conn = c
					}
				}
				if conn != nil {
					if _, err := conn.Write(l.syslogFrame(ev, line)); err != nil {
						l.log.Warn("syslog write failed; reconnecting", "error", err)
						conn.Close()
						conn = nil
					}
				}
			}
		case <-tick.C:
			if fw != nil {
				fw.Flush()
			}
		}
	}
}

// syslogFrame formats an RFC 5424 message (facility local0, severity
// notice, or warning for denials) with the JSON line as its message, in
// RFC 6587 octet-counting framing.
func (l *live) syslogFrame(ev liveEvent, line []byte) []byte {
	pri := 16*8 + 5
	if ev.Verdict == "deny" {
		pri = 16*8 + 4
	}
	msg := fmt.Sprintf("<%d>1 %s %s sluiced %d %s - %s", pri, ev.Time.UTC().Format(time.RFC3339Nano), l.host, os.Getpid(), ev.Type, line)
	return []byte(fmt.Sprintf("%d %s", len(msg), msg))
}
