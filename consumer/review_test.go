package consumer_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// A status check that gets no answer from Heap (a 400 from something in between)
// is not a verdict: past MaxPending nothing times out until Heap itself says
// pending; then it does.
func TestBadStatusAnswersNeverTimeOut(t *testing.T) {
	e := newEnv(t, heaptest.Options{NeverComplete: true}, func(c *consumer.Config) { c.MaxPending = 1500 * time.Millisecond })
	e.sim.Script(heaptest.Fault{Endpoint: "deletion_status", Status: 400, For: 5 * time.Second})
	e.replica(nil)
	e.publish(false, events.Command{RequestID: "bad-status", Identity: "bs@example.com"})
	eventually(t, 20*time.Second, func() string {
		if n := e.sim.Requests("deletion_status"); n < 3 {
			return fmt.Sprintf("%d status checks", n)
		}
		return ""
	})
	if got := e.terminal("bad-status"); got != "" {
		t.Fatalf("%s while Heap never answered about the request", got)
	}
	e.waitTerminal(20*time.Second, "bad-status")
	h := e.history("bad-status")
	if last := h[len(h)-1]; last.Status != events.StatusFailed || last.Reason != events.ReasonTimeout {
		t.Fatalf("got %s/%s, want failed/timeout once Heap said pending", last.Status, last.Reason)
	}
}

// A 403 from the deletion endpoint (a proxy, a wrong base URL) says nothing about
// the users: nothing fails, readiness drops, and everything completes once it passes.
func TestMisconfiguredEndpointFailsNobody(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 403, For: 2 * time.Second})
	svc := e.replica(nil)
	cmds := identityCmds("forbidden", 30)
	e.publish(false, cmds...)
	eventually(t, 10*time.Second, func() string {
		if svc.Ready() == nil {
			return "still ready while Heap answers 403"
		}
		return ""
	})
	e.waitTerminal(30*time.Second, ids(cmds)...)
	e.noneFailed()
	eventually(t, 10*time.Second, func() string {
		if err := svc.Ready(); err != nil {
			return fmt.Sprintf("not ready again: %v", err)
		}
		return ""
	})
}

// A malformed re-send of a request id that is complete must not announce a failure.
func TestInvalidResendOfKnownRequestPublishesNothing(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	e.replica(nil)
	e.publish(false, events.Command{RequestID: "known-1", Identity: "k@example.com"})
	e.waitTerminal(20*time.Second, "known-1")
	m := nats.NewMsg("heap.deletion.requested")
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "t", "ce-type": "heap.deletion.requested"} {
		m.Header.Set(k, v)
	}
	m.Data = []byte(`{"request_id":"known-1","identity":"k@example.com","user_id":3}`)
	e.publishMsg(m)
	// A later, unrelated invalid command proves the first was handled.
	e.publishMsg(&nats.Msg{Subject: "heap.deletion.requested", Header: m.Header, Data: []byte(`{"request_id":"other-bad"}`)})
	eventually(t, 10*time.Second, func() string {
		if e.terminal("other-bad") == "" {
			return "the second invalid command not handled yet"
		}
		return ""
	})
	if got := e.statuses("known-1"); got[len(got)-1] != events.StatusComplete {
		t.Fatalf("known-1 statuses %v: an invalid re-send announced a failure", got)
	}
}
