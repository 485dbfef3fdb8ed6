//go:build tools

// Package natstools pins the NATS server scripts/build-nats.sh builds:
// nats-server with JetStream, the real message bus the event tests publish
// to.
package natstools

import (
	_ "github.com/nats-io/nats-server/v2"
)
