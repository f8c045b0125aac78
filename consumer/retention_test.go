package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// Terminal jobs expire after JobRetention; a command for an expired request id is
// then a new deletion, claimed past the expired entry's marker.
func TestTerminalJobsExpire(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.JobRetention = 2 * time.Second })
	e.replica(nil)
	cmd := events.Command{RequestID: "expire-1", Identity: "expire@example.com"}
	e.publish(false, cmd)
	e.waitTerminal(20*time.Second, "expire-1")
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), consumer.JobKey("expire-1")); err != nil {
		t.Fatalf("job missing right after completion: %v", err)
	}
	e.waitExpired(20*time.Second, "expire-1")
	before := len(e.sim.Submissions())
	e.publish(false, cmd)
	eventually(t, 20*time.Second, func() string {
		if len(e.sim.Submissions()) == before {
			return "the request id was not processed afresh after its job expired"
		}
		return ""
	})
	if _, err := kv.Get(context.Background(), consumer.JobKey("expire-1")); err != nil {
		t.Fatalf("no new job after the expired one: %v", err)
	}
}

// waitExpired waits until the job of a request id has left the job store.
func (e *env) waitExpired(timeout time.Duration, reqID string) {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		e.t.Fatal(err)
	}
	eventually(e.t, timeout, func() string {
		_, err := kv.Get(context.Background(), consumer.JobKey(reqID))
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return ""
		}
		return fmt.Sprintf("job %s still there after its retention (err %v)", reqID, err)
	})
}
