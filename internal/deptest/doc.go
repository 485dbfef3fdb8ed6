// Package deptest keeps the architecture true: the dependency direction
// (cmd -> daemon -> interceptor -> decoder -> enforcer -> ruleset; bpf
// imports only cilium/ebpf; decoders never import each other and the
// shared decoder layer never imports a protocol) and the README's facts
// that the code can check (its Layout table, the demo's numbered claims).
// It has only tests.
package deptest
