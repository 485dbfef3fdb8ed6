//go:build tools

// Package s3tools pins the S3-compatible server scripts/build-s3.sh builds:
// versitygw on its POSIX backend, the real gateway the object-store tests
// upload to.
package s3tools

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
