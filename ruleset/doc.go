// Package ruleset owns the HCL policy language: the schema, parsing,
// validation with source-ranged diagnostics, compilation and evaluation.
//
// It does no I/O beyond reading rule files: resolving hostnames, watching
// directories and talking to the kernel belong to the callers.
package ruleset
