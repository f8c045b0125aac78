// Package faultsuite proves heapdel's delivery guarantees (SPEC.md, "Delivery
// guarantees") under faults: the real binary is built once and run as child
// processes against a real JetStream server and the Heap simulator, then killed
// with SIGKILL, stopped with SIGTERM mid-batch, run as three replicas, or left
// without NATS while the server restarts. Every scenario ends with every request
// id at exactly one terminal status and reports how many users reached Heap more
// than once.
//
// The package holds tests only. `go test ./internal/faultsuite/` runs the short
// scenarios; HEAPDEL_FAULTS=long (or -long) runs the long ones.
package faultsuite
