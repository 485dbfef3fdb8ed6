package k8s

// Temporary: pins the modules the Kubernetes work imports while it is
// being written in parallel. Removed before the issue closes.
import (
	_ "github.com/moby/spdystream/spdy"
	_ "k8s.io/api/core/v1"
	_ "k8s.io/apiserver/pkg/endpoints/request"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/clientcmd"
	_ "k8s.io/client-go/tools/remotecommand"
	_ "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	_ "k8s.io/streaming/pkg/httpstream/spdy"
	_ "k8s.io/streaming/pkg/httpstream/wsstream"
	_ "sigs.k8s.io/yaml"
)
