// Package all registers every protocol of this build with package
// decoder. The daemon and the CLI import it for its side effect; adding a
// protocol is its folder below decoder/ plus one line here.
package all

import (
	_ "github.com/sluicehq/sluice/decoder/k8s"
	_ "github.com/sluicehq/sluice/decoder/mysql"
	_ "github.com/sluicehq/sluice/decoder/postgres"
	_ "github.com/sluicehq/sluice/decoder/ssh"
	_ "github.com/sluicehq/sluice/decoder/tcp"
)
