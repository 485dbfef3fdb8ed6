package k8s

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

// podSpecKinds are the kinds whose objects hold a pod spec, in the groups
// and versions the API server serves them: a protobuf body of one of
// them is decoded (with k8s.io/api's types) for the fields rules see.
// Other kinds hold no pod spec, so their kind is all rules need of them.
var podSpecScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

var podSpecKinds = map[schema.GroupVersionKind]bool{
	corev1.SchemeGroupVersion.WithKind("Pod"):                   true,
	corev1.SchemeGroupVersion.WithKind("PodTemplate"):           true,
	corev1.SchemeGroupVersion.WithKind("ReplicationController"): true,
	appsv1.SchemeGroupVersion.WithKind("Deployment"):            true,
	appsv1.SchemeGroupVersion.WithKind("ReplicaSet"):            true,
	appsv1.SchemeGroupVersion.WithKind("StatefulSet"):           true,
	appsv1.SchemeGroupVersion.WithKind("DaemonSet"):             true,
	batchv1.SchemeGroupVersion.WithKind("Job"):                  true,
	batchv1.SchemeGroupVersion.WithKind("CronJob"):              true,
}

var pbSerializer = protobuf.NewSerializer(podSpecScheme, podSpecScheme)

// protobufBody reads a protobuf request body (the API server's envelope:
// "k8s\0", then a runtime.Unknown) into the JSON form rules' fields are
// read from: the whole object for a kind with a pod spec, else its
// apiVersion and kind alone.
func protobufBody(b []byte) (any, error) {
	const magic = "k8s\x00"
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("no protobuf envelope")
	}
	var u runtime.Unknown
	if err := u.Unmarshal(b[len(magic):]); err != nil {
		return nil, err
	}
	gvk := schema.FromAPIVersionAndKind(u.APIVersion, u.Kind)
	if !podSpecKinds[gvk] {
		return map[string]any{"apiVersion": u.APIVersion, "kind": u.Kind}, nil
	}
	obj, _, err := pbSerializer.Decode(b, &gvk, nil)
	if err != nil {
		return nil, err
	}
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	v, err := decodeJSON(j)
	if err != nil {
		return nil, err
	}
	if m, ok := v.(map[string]any); ok {
		m["kind"] = u.Kind
	}
	return v, nil
}
