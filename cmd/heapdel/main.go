// Command heapdel makes sure that when a person asks to be forgotten, they are
// deleted from Heap: it turns CloudEvents deletion commands on NATS JetStream into
// batched Heap deletions, follows them until Heap reports them complete and publishes
// a status event at every step. Run `heapdel --help` for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	var ec exitCode
	switch {
	case err == nil:
	case errors.As(err, &ec):
		os.Exit(int(ec))
	default:
		fmt.Fprintln(os.Stderr, "heapdel:", err)
		os.Exit(1)
	}
}
