//go:build tools

// Package kubetools pins the programs scripts/build-kube.sh builds.
package kubetools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
