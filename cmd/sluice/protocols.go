package main

// Every protocol of this build registers itself with package decoder:
// rules explain and doctor ask the registry what a target's flows get.
import _ "github.com/sluicehq/sluice/decoder/all"
