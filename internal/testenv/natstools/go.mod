// Module natstools builds the real NATS server the tests run: nats-server
// (github.com/nats-io/nats-server/v2) with JetStream. It is its own module
// so that the main module's go.mod carries none of the server's
// dependencies. scripts/build-nats.sh builds it once per version into a
// cache.
module github.com/sluicehq/sluice/internal/testenv/natstools

go 1.26.0

require github.com/nats-io/nats-server/v2 v2.15.3

require (
	github.com/antithesishq/antithesis-sdk-go v0.9.0-default-no-op // indirect
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/klauspost/compress v1.20.4 // indirect
	github.com/minio/highwayhash v1.0.4 // indirect
	github.com/nats-io/jwt/v2 v2.8.3 // indirect
	github.com/nats-io/nkeys v0.4.17 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)
