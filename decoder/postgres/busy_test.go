package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestRefuseBusy: pgx, with TLS preferred and refused, gets FATAL 53300
// naming the cap and the setting that raises it.
func TestRefuseBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 2; i++ { // sslmode=prefer tries TLS, then plaintext after an error
			c, err := ln.Accept()
			if err != nil {
				return
			}
			RefuseBusy(c, 7)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pgconn.Connect(ctx, fmt.Sprintf("postgres://ci@%s/app?sslmode=prefer", ln.Addr()))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("connect: %v, want a PostgreSQL error", err)
	}
	if pe.Severity != "FATAL" || pe.Code != "53300" || !strings.Contains(pe.Message, "max_sessions = 7") || !strings.Contains(pe.Hint, "max_sessions") {
		t.Errorf("got %s %s %q hint %q", pe.Severity, pe.Code, pe.Message, pe.Hint)
	}
	ln.Close()
	<-done
}
