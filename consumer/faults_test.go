package consumer_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// noneFailed fails the test when any request id got a failed event.
func (e *env) noneFailed() {
	e.t.Helper()
	for _, r := range e.allEvents() {
		if r.ev.Status == events.StatusFailed {
			e.t.Fatalf("%s failed (%s: %s): a transient fault must never fail a command", r.ev.RequestID, r.ev.Reason, r.ev.Message)
		}
	}
}

func TestHeapTransientFaultsNeverFailCommands(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stages []heaptest.Fault
		opts   heaptest.Options
	}{
		{"503 for a stretch", []heaptest.Fault{{Endpoint: "user_deletion", Status: 503, For: 3 * time.Second}}, heaptest.Options{}},
		{"connections dropped", []heaptest.Fault{{Drop: true, Count: 6}}, heaptest.Options{}},
		{"429 storm with Retry-After", []heaptest.Fault{{Status: 429, RetryAfter: "1", Count: 8}}, heaptest.Options{}},
		{"429 storm without Retry-After", []heaptest.Fault{{Status: 429, Count: 8}}, heaptest.Options{}},
		{"status endpoint down", []heaptest.Fault{{Endpoint: "deletion_status", Status: 502, For: 3 * time.Second}}, heaptest.Options{}},
		{"tokens expiring constantly", nil, heaptest.Options{TokenTTL: 300 * time.Millisecond, CompleteAfter: time.Second}},
		{"slow Heap beyond the request timeout", []heaptest.Fault{{Latency: 3 * time.Second, Count: 2}}, heaptest.Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts, nil)
			e.sim.Script(tc.stages...)
			e.replica(nil)
			cmds := identityCmds("fault", 150)
			e.publish(false, cmds[:75]...)
			time.Sleep(500 * time.Millisecond)
			e.publish(true, cmds[75:]...)
			e.waitTerminal(45*time.Second, ids(cmds)...)
			e.noneFailed()
			for _, id := range ids(cmds) {
				if got := e.terminal(id); got != events.StatusComplete {
					t.Fatalf("%s: %s", id, got)
				}
			}
		})
	}
}

func TestOneRejectedUserDoesNotFailItsNeighbours(t *testing.T) {
	e := newEnv(t, heaptest.Options{Rule: func(u heaptest.User) heaptest.Outcome {
		if u.Identity == "refused@example.com" {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}}, func(c *consumer.Config) { c.BatchWait = 300 * time.Millisecond })
	e.replica(nil)
	cmds := identityCmds("split", 40)
	cmds[17].Identity = "refused@example.com"
	e.publishAsync(cmds)
	e.waitTerminal(30*time.Second, ids(cmds)...)
	for i, id := range ids(cmds) {
		want := events.StatusComplete
		if i == 17 {
			want = events.StatusFailed
		}
		if got := e.terminal(id); got != want {
			t.Errorf("%s: %s, want %s", id, got, want)
		}
	}
	h := e.history(cmds[17].RequestID)
	last := h[len(h)-1]
	if last.Reason != events.ReasonHeapRejected {
		t.Errorf("culprit reason %q, want heap_rejected", last.Reason)
	}
	if strings.Contains(last.Message, "refused@") {
		t.Errorf("failed event message carries the identity: %q", last.Message)
	}
}

func TestNotFoundAndTimeout(t *testing.T) {
	t.Run("404 after acceptance", func(t *testing.T) {
		// Heap keeps answering 404: two answers at least one interval apart are a
		// verdict.
		e := newEnv(t, heaptest.Options{CompleteAfter: time.Hour}, nil)
		e.sim.Script(heaptest.Fault{Endpoint: "deletion_status", Status: 404})
		e.replica(nil)
		e.publish(false, events.Command{RequestID: "nf-1", Identity: "nf@example.com"})
		e.waitTerminal(20*time.Second, "nf-1")
		h := e.history("nf-1")
		if got := h[len(h)-1]; got.Status != events.StatusFailed || got.Reason != events.ReasonHeapNotFound {
			t.Fatalf("got %s/%s, want failed/heap_not_found", got.Status, got.Reason)
		}
		if n := e.sim.Requests("deletion_status"); n < 2 {
			t.Fatalf("failed after %d status checks, want two 404s", n)
		}
	})
	t.Run("one 404 is not a verdict", func(t *testing.T) {
		// A single 404 (a lagging Heap replica, a routing hiccup) among pending
		// answers fails nothing: the whole batch of 50 completes.
		e := newEnv(t, heaptest.Options{CompleteAfter: 3 * time.Second}, nil)
		e.sim.Script(heaptest.Fault{Endpoint: "deletion_status", Status: 404, Count: 1})
		e.replica(nil)
		cmds := identityCmds("nf-once", 50)
		e.publish(false, cmds...)
		e.waitTerminal(30*time.Second, ids(cmds)...)
		for _, id := range ids(cmds) {
			if got := e.terminal(id); got != events.StatusComplete {
				t.Fatalf("%s: %s after one 404, want complete", id, got)
			}
		}
	})
	t.Run("pending beyond MaxPending", func(t *testing.T) {
		e := newEnv(t, heaptest.Options{NeverComplete: true}, func(c *consumer.Config) { c.MaxPending = 1500 * time.Millisecond })
		e.replica(nil)
		e.publish(false, events.Command{RequestID: "to-1", Identity: "to@example.com"})
		e.waitTerminal(20*time.Second, "to-1")
		h := e.history("to-1")
		if got := h[len(h)-1]; got.Status != events.StatusFailed || got.Reason != events.ReasonTimeout {
			t.Fatalf("got %s/%s, want failed/timeout", got.Status, got.Reason)
		}
		if got := e.statuses("to-1"); len(got) != 3 || got[1] != events.StatusProcessing {
			t.Fatalf("statuses %v, want submitted, processing, failed", got)
		}
	})
}

func TestFailedRequestIDIsRetriedAfresh(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	e := newEnv(t, heaptest.Options{Rule: func(u heaptest.User) heaptest.Outcome {
		if refuse.Load() {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}}, nil)
	e.replica(nil)
	cmd := events.Command{RequestID: "retry-1", Identity: "retry@example.com"}
	first := e.publish(false, cmd)[0]
	e.waitTerminal(20*time.Second, "retry-1")
	if got := e.terminal("retry-1"); got != events.StatusFailed {
		t.Fatalf("first attempt %s, want failed", got)
	}
	refuse.Store(false)
	retry := e.publish(false, cmd)[0]
	eventually(t, 20*time.Second, func() string {
		if got := e.statuses("retry-1"); !slices.Equal(got, []events.Status{"failed", "submitted", "processing", "complete"}) {
			return fmt.Sprintf("history %v, want failed (refused), then submitted, processing, complete", got)
		}
		return ""
	})
	// The retry's events have ids of their own: subscribers that dedupe by id see them.
	ids := map[string]bool{}
	for _, r := range e.allEvents() {
		ids[r.id] = true
	}
	if !ids[events.EventID("retry-1", retry, 2, events.StatusComplete)] || !ids[events.EventID("retry-1", first, 1, events.StatusFailed)] {
		t.Fatalf("event ids are not per attempt")
	}
	// And a duplicate of a complete request id changes nothing.
	before := len(e.sim.Submissions())
	e.publish(false, cmd)
	time.Sleep(500 * time.Millisecond)
	if after := len(e.sim.Submissions()); after != before {
		t.Fatalf("duplicate of a complete request id was submitted again")
	}
}

func TestRejectedCredentialsKeepEveryCommand(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	bad := e.replica(func(c *heapclient.Config) { c.APIKey = "wrong-key" })
	cmds := identityCmds("creds", 20)
	e.publish(false, cmds...)
	eventually(t, 20*time.Second, func() string {
		if err := bad.Ready(); err == nil || !strings.Contains(err.Error(), "HEAPDEL_HEAP_API_KEY") {
			return fmt.Sprintf("Ready() = %v, want an error naming the setting", err)
		}
		return ""
	})
	time.Sleep(time.Second)
	if n := len(e.allEvents()); n != 0 {
		t.Fatalf("%d status events published with rejected credentials, want none", n)
	}
	if !strings.Contains(e.logs.String(), "HEAPDEL_HEAP_APP_ID") {
		t.Errorf("no log line names the settings to fix")
	}
	e.mu.Lock()
	reg := e.regs[0]
	e.mu.Unlock()
	if n, err := testutil.GatherAndCount(reg, "heapdel_heap_credentials_rejected_total"); err != nil || n != 1 {
		t.Errorf("credentials-rejected metric: %d series, %v", n, err)
	}
	stop(t, bad)
	e.replica(nil) // restarted with the right key
	e.waitTerminal(40*time.Second, ids(cmds)...)
	e.noneFailed()
}

func TestRestartMidRunLosesNothing(t *testing.T) {
	e := newEnv(t, heaptest.Options{CompleteAfter: 500 * time.Millisecond}, func(c *consumer.Config) { c.BatchSize = 50 })
	first := e.replica(nil)
	cmds := identityCmds("restart", 600)
	published := make(chan map[string]uint64, 1)
	go func() { published <- e.publishAsync(cmds) }()
	eventually(t, 20*time.Second, func() string {
		if len(e.sim.Submissions()) < 3 {
			return "waiting for the first batches"
		}
		return ""
	})
	stop(t, first)
	e.replica(nil)
	e.waitTerminal(60*time.Second, ids(cmds)...)
	e.noneFailed()
	var seqs map[string]uint64
	select {
	case seqs = <-published:
	case <-time.After(30 * time.Second):
		t.Fatal("publishing did not finish")
	}
	// Each transition has one id, however often it was published.
	byTransition := map[string]string{}
	for _, r := range e.allEvents() {
		k := r.ev.RequestID + "/" + string(r.ev.Status)
		if prev, ok := byTransition[k]; ok && prev != r.id {
			t.Fatalf("%s published with two ids: %s and %s", k, prev, r.id)
		}
		byTransition[k] = r.id
		if r.id != events.EventID(r.ev.RequestID, seqs[r.ev.RequestID], 1, r.ev.Status) {
			t.Fatalf("%s: id %s is not the deterministic one", k, r.id)
		}
	}
}

func TestTwoReplicasNeverDoubleWork(t *testing.T) {
	e := newEnv(t, heaptest.Options{CompleteAfter: 1500 * time.Millisecond}, nil)
	e.replica(nil)
	e.replica(nil)
	cmds := identityCmds("replicas", 1000)
	e.publishAsync(cmds)
	e.waitTerminal(60*time.Second, ids(cmds)...)
	e.noneFailed()
	seen := map[string]int{}
	for _, s := range e.sim.Submissions() {
		for _, u := range s.Users {
			seen[u.Identity]++
		}
	}
	if len(seen) != 1000 {
		t.Errorf("Heap saw %d distinct users, want 1000", len(seen))
	}
	for id, n := range seen {
		if n > 1 {
			t.Fatalf("%s submitted %d times", id, n)
		}
	}
	// Each Heap request is pending for 1.5 s and checked on 1 s ticks with
	// doubling gaps: a handful of checks each, never one per replica per tick.
	subs := len(e.sim.Submissions())
	checks := e.sim.Requests("deletion_status")
	if checks > 3*subs {
		t.Errorf("%d status checks for %d Heap requests: rechecks were multiplied", checks, subs)
	}
}

func TestFallbackTicks(t *testing.T) {
	e := newEnv(t, heaptest.Options{CompleteAfter: 200 * time.Millisecond}, func(c *consumer.Config) { c.Schedule = consumer.ScheduleFallback })
	e.replica(nil)
	e.replica(nil)
	cmds := identityCmds("fallback", 30)
	e.publish(false, cmds...)
	e.waitTerminal(20*time.Second, ids(cmds)...)
	// Two replicas publish one tick per window between them.
	st, err := e.js.Stream(context.Background(), "HEAP_DELETION_SCHEDULE")
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Consumer(context.Background(), "heapdel-recheck")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := c.Info(context.Background())
	time.Sleep(3 * time.Second)
	after, _ := c.Info(context.Background())
	ticks := after.Delivered.Stream - before.Delivered.Stream
	if ticks > 4 {
		t.Errorf("%d ticks in 3 s of 1 s windows with two replicas: not deduplicated", ticks)
	}
}
