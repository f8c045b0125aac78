package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// The tests of "a status never lies, a deletion never stalls": each one failed
// before its fix (see the commit that added it).

// After Heap accepted a batch, a request bucket that refuses writes (full) must not
// make heapdel submit the users again: it keeps the batch, says it is stalled, and
// records everything once the bucket has room.
func TestFullBucketAfterAcceptanceNeverResubmits(t *testing.T) {
	e := newEnv(t, heaptest.Options{CompleteAfter: 500 * time.Millisecond}, nil)
	svc := e.replica(nil)
	ctx := context.Background()
	name := "KV_HEAP_DELETION_REQUESTS"
	st, err := e.js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	full := cfg
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	if _, err := e.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, "$KV.HEAP_DELETION_REQUESTS.filler", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	cmds := identityCmds("full", 20)
	e.publish(false, cmds...)
	reg := e.registries()[0]
	eventually(t, 20*time.Second, func() string {
		if svc.Ready() == nil {
			return "ready while the request bucket refuses writes"
		}
		return gaugesAre(reg, map[string]float64{"heapdel_stalled/store": 1})
	})
	time.Sleep(2 * time.Second) // time for a resubmission loop to show
	if n := len(e.sim.Submissions()); n != 1 {
		t.Fatalf("%d Heap submissions while the bucket was full, want 1", n)
	}
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.waitTerminal(30*time.Second, ids(cmds)...)
	e.noneFailed()
	if n := len(e.sim.Submissions()); n != 1 {
		t.Errorf("%d Heap submissions, want 1", n)
	}
	if n := counter(t, reg, "heapdel_commands_redelivered_total"); n != 0 {
		t.Errorf("%v redeliveries after Heap accepted the batch", n)
	}
	eventually(t, 10*time.Second, func() string { return gaugesAre(reg, map[string]float64{"heapdel_stalled/store": 0}) })
}

// Answers that are not Heap's (a redirect, a proxy asking for credentials, an
// unlisted 4xx) say nothing about the users: nothing fails, all complete after.
func TestAnswersThatSayNothingFailNobody(t *testing.T) {
	for _, f := range []heaptest.Fault{
		{Endpoint: "user_deletion", Status: 301, Location: "https://elsewhere.example/"},
		{Endpoint: "user_deletion", Status: 407},
		{Endpoint: "user_deletion", Status: 418},
		{Endpoint: "auth_token", Status: 400},
	} {
		t.Run(fmt.Sprintf("%s_%d", f.Endpoint, f.Status), func(t *testing.T) {
			e := newEnv(t, heaptest.Options{}, nil)
			f.For = 2 * time.Second
			e.sim.Script(f)
			e.replica(nil)
			cmds := identityCmds("nothing", 30)
			e.publish(false, cmds...)
			e.waitTerminal(40*time.Second, ids(cmds)...)
			e.noneFailed()
		})
	}
}

// A rate limiter or tick running out of time is not Heap saying "pending": with a
// slow rate and a short MaxPending, deletions Heap completes at once all complete.
func TestLimiterStarvationIsNoTimeout(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) {
		c.BatchSize = 3
		c.MaxPending = time.Second
	})
	e.replica(func(h *heapclient.Config) { h.Rate, h.Burst = 3, 1 })
	cmds := identityCmds("starved", 30) // 10 Heap requests, at most ~3 calls a tick
	e.publish(false, cmds...)
	e.waitTerminal(60*time.Second, ids(cmds)...)
	e.noneFailed()
}

// A valid command and a malformed re-send of its request id in one batch: the
// request is deleted and no failed event contradicts it.
func TestInvalidResendInSameBatch(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.BatchWait = time.Second })
	stop(t, e.replica(nil)) // provisions; commands then queue up for one batch
	bad := binaryMsg(`{"request_id":"same-1","identity":"s@example.com","user_id":3}`)
	e.publishMsg(bad) // first, so it would have been handled first
	e.publish(false, events.Command{RequestID: "same-1", Identity: "s@example.com"})
	e.replica(nil)
	e.waitTerminal(20*time.Second, "same-1")
	time.Sleep(500 * time.Millisecond)
	if got := e.statuses("same-1"); !slices.Equal(got, lifetime) {
		t.Fatalf("same-1: %v, want %v", got, lifetime)
	}
}

// A job claimed by a command that then left the stream (purged by an operator) is
// found by reconciliation, counted, and taken over by a re-send.
func TestOrphanedClaimTakenOverByResend(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.ReconcileInterval = time.Second })
	e.replica(nil)
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	// Claimed an hour ago: a claim younger than two ack waits is not taken over
	// yet (its command may just have moved to a new sequence in a migration).
	claimed := time.Now().Add(-time.Hour).UTC()
	orphan := consumer.Job{RequestID: "orphan-1", Attempt: 1, Status: "accepted", Seq: 424242, RequestedAt: claimed,
		History: []consumer.Transition{{Status: "accepted", At: claimed}}}
	v, _ := json.Marshal(orphan)
	if _, err := kv.Create(ctx, consumer.JobKey("orphan-1"), v); err != nil {
		t.Fatal(err)
	}
	reg := e.registries()[0]
	eventually(t, 20*time.Second, func() string {
		return gaugesAre(reg, map[string]float64{"heapdel_jobs_stuck/orphaned": 1})
	})
	if !strings.Contains(e.logs.String(), "no longer in the stream") {
		t.Error("no log line for the orphaned claim")
	}
	e.publish(false, events.Command{RequestID: "orphan-1", Identity: "orphan@example.com"})
	e.waitTerminal(20*time.Second, "orphan-1")
	if got := e.terminal("orphan-1"); got != events.StatusComplete {
		t.Fatalf("orphan-1: %s, want complete", got)
	}
	eventually(t, 20*time.Second, func() string {
		return gaugesAre(reg, map[string]float64{"heapdel_jobs_stuck/orphaned": 0, "heapdel_reconciled_total/orphaned_claim": 1})
	})
}

// Losing the request bucket's records (an operator's purge, a bucket recreated) must
// not leave processing jobs unfollowed: reconciliation follows them again and they
// complete when Heap says so.
func TestLostRequestBucketIsReconciled(t *testing.T) {
	e := newEnv(t, heaptest.Options{CompleteAfter: 4 * time.Second}, func(c *consumer.Config) { c.ReconcileInterval = time.Second })
	e.replica(nil)
	cmds := identityCmds("lost", 40)
	e.publish(false, cmds...)
	eventually(t, 20*time.Second, func() string {
		for _, id := range ids(cmds) {
			if got := e.statuses(id); len(got) < 2 {
				return id + " not processing yet"
			}
		}
		return ""
	})
	ctx := context.Background()
	kv, err := e.js.KeyValue(ctx, "HEAP_DELETION_REQUESTS")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		if err := kv.Purge(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	e.waitTerminal(40*time.Second, ids(cmds)...)
	e.noneFailed()
	reg := e.registries()[0]
	if got, _ := gauges(reg); got["heapdel_reconciled_total/refollowed"] != float64(len(cmds)) {
		t.Errorf("heapdel_reconciled_total{what=refollowed} = %v, want %d", got["heapdel_reconciled_total/refollowed"], len(cmds))
	}
}

// A 2xx from user_deletion without a deletion request id: Heap may have accepted
// the users. They are held, never resubmitted, nothing is published, and the held
// jobs are counted for an operator.
func TestUnreadableAcceptanceIsHeld(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.ReconcileInterval = time.Second })
	e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Body: `{"status":"pending"}`, Count: 1})
	e.replica(nil)
	cmds := identityCmds("held", 10)
	e.publish(false, cmds...)
	reg := e.registries()[0]
	eventually(t, 20*time.Second, func() string {
		return gaugesAre(reg, map[string]float64{"heapdel_jobs_stuck/held": 10})
	})
	time.Sleep(time.Second)
	if n := len(e.sim.Submissions()); n != 1 {
		t.Fatalf("%d submissions, want 1 (held users are never sent again)", n)
	}
	for _, id := range ids(cmds) {
		if got := e.statuses(id); len(got) != 0 {
			t.Fatalf("%s: %v, want no event for a held job", id, got)
		}
	}
	// A re-send is a duplicate: still held, still one submission.
	e.publish(false, cmds[0])
	time.Sleep(time.Second)
	if n := len(e.sim.Submissions()); n != 1 {
		t.Fatalf("%d submissions after a re-send of a held request id, want 1", n)
	}
	if strings.Contains(e.logs.String(), cmds[0].Identity) {
		t.Error("an identity reached the logs")
	}
}

// A command's trace context is carried onto every status event of its request, in
// both content modes of command and event; a malformed one is dropped.
func TestTraceContextCopied(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured_%v", structured), func(t *testing.T) {
			e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.Structured = structured })
			e.replica(nil)
			e.publish(structured,
				events.Command{RequestID: "traced", Identity: "t@example.com", TraceParent: tp, TraceState: "vendor=abc"},
				events.Command{RequestID: "untraced", Identity: "u@example.com"})
			bad := binaryMsg(`{"request_id":"badtrace","identity":"b@example.com"}`)
			bad.Header.Set("ce-traceparent", "00-zz-not-a-trace")
			e.publishMsg(bad)
			e.waitTerminal(20*time.Second, "traced", "untraced", "badtrace")
			for _, ev := range e.history("traced") {
				if ev.TraceParent != tp || ev.TraceState != "vendor=abc" {
					t.Errorf("traced %s event: traceparent %q tracestate %q", ev.Status, ev.TraceParent, ev.TraceState)
				}
			}
			for _, id := range []string{"untraced", "badtrace"} {
				for _, ev := range e.history(id) {
					if ev.TraceParent != "" || ev.TraceState != "" {
						t.Errorf("%s %s event carries trace context %q", id, ev.Status, ev.TraceParent)
					}
				}
			}
		})
	}
}

// A deleted schedule stream takes the recheck consumer and the schedule with it:
// heapdel must provision them again and go on (and, should the client end a
// consume for good, take it up again), instead of a pod that looks ready while
// nothing is rechecked.
func TestDeletedScheduleStreamIsTakenUpAgain(t *testing.T) {
	e := newEnv(t, heaptest.Options{CompleteAfter: 500 * time.Millisecond}, nil)
	e.replica(nil)
	first := identityCmds("before", 5)
	e.publish(false, first...)
	e.waitTerminal(20*time.Second, ids(first)...)
	if err := e.js.DeleteStream(context.Background(), "HEAP_DELETION_SCHEDULE"); err != nil {
		t.Fatal(err)
	}
	after := identityCmds("after", 5)
	e.publish(false, after...)
	e.waitTerminal(40*time.Second, ids(after)...)
	for _, id := range ids(after) {
		if got := e.terminal(id); got != events.StatusComplete {
			t.Fatalf("%s: %s, want complete", id, got)
		}
	}
}

// An invalid command and a valid one for the same request id, taken at the same
// moment by two replicas: a failed/invalid_command event is announced only once
// it is the request id's job (recorded with compare-and-set), so the valid command
// either finds that failed job and runs as its retry, or claimed first and the
// invalid one announces nothing. Never a failed for a deletion already under way.
func TestInvalidAndValidCommandRace(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.BatchSize, c.BatchWait = 1, 10*time.Millisecond })
	e.replica(nil)
	e.replica(nil)
	var reqIDs []string
	for i := range 40 {
		id := fmt.Sprintf("race-%02d", i)
		reqIDs = append(reqIDs, id)
		e.publishAsyncMsg(binaryMsg(`{"request_id":"` + id + `","identity":"r@example.com","user_id":3}`))
		m, err := events.NewCommandMsg("heap.deletion.requested", events.Command{RequestID: id, Identity: id + "@example.com"}, false)
		if err != nil {
			t.Fatal(err)
		}
		e.publishAsyncMsg(m)
	}
	eventually(t, 60*time.Second, func() string {
		for _, id := range reqIDs {
			if !slices.Contains(e.statuses(id), events.StatusComplete) {
				return id + ": " + fmt.Sprint(e.statuses(id))
			}
		}
		return ""
	})
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	announced := 0
	for _, id := range reqIDs {
		got := e.statuses(id)
		if slices.Equal(got, lifetime) {
			continue // the valid command claimed first
		}
		announced++
		if want := append([]events.Status{events.StatusFailed}, lifetime...); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v or %v", id, got, lifetime, want)
			continue
		}
		entry, err := kv.Get(context.Background(), consumer.JobKey(id))
		if err != nil {
			t.Fatal(err)
		}
		var j consumer.Job
		if err := json.Unmarshal(entry.Value(), &j); err != nil {
			t.Fatal(err)
		}
		if j.Attempt != 1 || len(j.Earlier) != 1 || j.Earlier[0].Status != "failed" || j.Earlier[0].Note != "invalid_command" {
			t.Errorf("%s: failed was announced, but the job does not hold it as the attempt the valid command retried: attempt %d, earlier %+v", id, j.Attempt, j.Earlier)
		}
	}
	t.Logf("%d of %d request ids had their invalid command taken first", announced, len(reqIDs))
}

// A valid command retrying an invalid command's failed job that is recorded but not
// yet announced (the invalid command's replica is a moment behind) announces that
// failure first, with its own id: the retry's events never come before it.
func TestRetryOfAFreshInvalidFailureComesAfterIt(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	e.replica(nil)
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	putJobs(t, kv, consumer.Job{RequestID: "fresh-inv-1", Seq: 999, Status: consumer.JobFailed,
		Reason: "invalid_command", Message: "the command has no identity", RequestedAt: now, CompletedAt: now,
		History: []consumer.Transition{{Status: "failed", At: now, Note: "invalid_command"}}})
	e.publish(false, events.Command{RequestID: "fresh-inv-1", Identity: "fresh@example.com"})
	want := append([]events.Status{events.StatusFailed}, lifetime...)
	eventually(t, 20*time.Second, func() string {
		if got := e.statuses("fresh-inv-1"); !slices.Equal(got, want) {
			return fmt.Sprintf("events %v, want %v", got, want)
		}
		return ""
	})
	if _, ok := e.eventIDs("fresh-inv-1")[events.EventID("fresh-inv-1", 999, 0, events.StatusFailed)]; !ok {
		t.Fatal("the failure was announced with another id than the invalid command's own")
	}
}
