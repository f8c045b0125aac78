package consumer_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// The command stream must allow roll-ups (message schedules require it), so a
// publisher that sets Nats-Rollup deletes the commands queued before its own. heapdel
// cannot undo that; it must say so loudly and count it.
func TestRollupIsReported(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	stop(t, e.replica(nil)) // provisions the streams, then nobody consumes

	queued := identityCmds("queued", 5)
	e.publish(false, queued...)
	m, err := events.NewCommandMsg(prefixOf(e.cfg)+".requested", events.Command{RequestID: "rollup-1", Identity: "secret.rollup@example.com"}, false)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set(nats.MsgRollup, nats.MsgRollupSubject)
	e.publishMsg(m)

	e.replica(nil)
	e.waitTerminal(20*time.Second, "rollup-1")
	if got := e.terminal("rollup-1"); got != events.StatusComplete {
		t.Errorf("rollup-1: %s, want complete (the command itself is good)", got)
	}
	// What the test is about: the queued commands are gone, and heapdel says so.
	for _, id := range ids(queued) {
		if got := e.statuses(id); len(got) != 0 {
			t.Errorf("%s: %v; JetStream should have rolled it up (has the stream stopped allowing roll-ups? then drop this test and the warning)", id, got)
		}
	}
	eventually(t, 5*time.Second, func() string {
		e.mu.Lock()
		reg := e.regs[len(e.regs)-1]
		e.mu.Unlock()
		got, err := gauges(reg)
		if err != nil {
			return err.Error()
		}
		if v := got["heapdel_commands_rollup_total"]; v != 1 {
			return fmt.Sprintf("heapdel_commands_rollup_total = %v, want 1", v)
		}
		return ""
	})
	logs := e.logs.String()
	if !strings.Contains(logs, "carried a Nats-Rollup header") || !strings.Contains(logs, `"rollup":"sub"`) {
		t.Errorf("no error log line for the roll-up:\n%s", logs)
	}
	if strings.Contains(logs, "secret.rollup@example.com") {
		t.Error("the identity reached the logs")
	}
}
