// Package testkit holds small helpers shared by heapdel's tests.
package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer safe for concurrent writers: a log sink that tests
// search afterwards.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NatsCLI returns the path of the nats CLI (github.com/nats-io/natscli), from
// $NATS_CLI, the PATH or $(go env GOPATH)/bin, or "" when it is not installed
// (`go install github.com/nats-io/natscli/nats@v0.5.0`; .ci/run does).
func NatsCLI() string {
	if p := os.Getenv("NATS_CLI"); p != "" {
		return p
	}
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "nats")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}
