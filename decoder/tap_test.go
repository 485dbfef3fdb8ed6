package decoder_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// tapSession is a session recorded at level, to rec.
func tapSession(t *testing.T, rec *decodertest.Recorder, level record.Level) *enforcer.Session {
	t.Helper()
	m := ruleset.Default().Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "db", Protocol: "postgres"}})
	return enforcer.NewSession(context.Background(), m, rec.Writer(), level, hclog.NewNullLogger())
}

// TestWireTap: nothing of the login is recorded; from Open on, what the
// client sent but was not relayed yet comes first, then every chunk; a
// session that records no wire bytes is never tapped; a recording that
// fails makes Open fail.
func TestWireTap(t *testing.T) {
	t.Run("full", func(t *testing.T) {
		rec := decodertest.NewRecorder(t)
		tap := &decoder.WireTap{Session: tapSession(t, rec, record.Full)}
		if !tap.Waiting() {
			t.Fatal("a full recording's tap does not wait to be opened")
		}
		tap.Tap(record.DirClientToServer, []byte("password"))
		tap.Tap(record.DirServerToClient, []byte("challenge"))
		if err := tap.Open([]byte("pending")); err != nil {
			t.Fatal(err)
		}
		if tap.Waiting() {
			t.Error("an open tap still waits")
		}
		tap.Open([]byte("again")) // opens once
		tap.Tap(record.DirServerToClient, []byte("ready"))
		var got []string
		for _, e := range rec.EventsOf(record.TypeWire) {
			got = append(got, e.Dir+":"+string(e.Data))
		}
		if want := "c2s:pending s2c:ready"; strings.Join(got, " ") != want {
			t.Errorf("recorded %q, want %q", strings.Join(got, " "), want)
		}
	})
	t.Run("statements only", func(t *testing.T) {
		rec := decodertest.NewRecorder(t)
		tap := &decoder.WireTap{Session: tapSession(t, rec, record.Commands)}
		if tap.Waiting() {
			t.Fatal("a tap waits on a session that records no wire bytes")
		}
		tap.Open([]byte("pending"))
		tap.Tap(record.DirServerToClient, []byte("rows"))
		if ev := rec.EventsOf(record.TypeWire); len(ev) != 0 {
			t.Errorf("recorded %d wire events", len(ev))
		}
	})
	t.Run("recording failed", func(t *testing.T) {
		rec := decodertest.NewRecorder(t)
		tap := &decoder.WireTap{Session: tapSession(t, rec, record.Full)}
		rec.Fail()
		if err := tap.Open([]byte("pending")); err == nil {
			t.Fatal("Open on a failed recording succeeded")
		}
		if !tap.Waiting() {
			t.Error("a tap that failed to open is open")
		}
	})
}

// TestCountConn: the bytes each way, as they crossed the connection.
func TestCountConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &decoder.CountConn{Conn: a}
	go func() {
		buf := make([]byte, 5)
		n, _ := b.Read(buf)
		b.Write(buf[:n])
		b.Write([]byte("!!"))
	}()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	m, _ := c.Read(buf[n:])
	if got := c.Counts(); got.ClientToServer != int64(n+m) || got.ServerToClient != 5 || n+m != 7 {
		t.Errorf("counts %+v after reading %d bytes and writing 5", got, n+m)
	}
}
