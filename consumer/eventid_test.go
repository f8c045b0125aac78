package consumer_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// eventIDs returns the ids of every stored status event of a request id, by id, with
// how many times the stream holds each.
func (e *env) eventIDs(reqID string) map[string]int {
	out := map[string]int{}
	for _, r := range e.allEvents() {
		if r.ev.RequestID == reqID {
			out[r.id]++
		}
	}
	return out
}

// wantIDs is the set of ids the transitions of one command have.
func wantIDs(reqID string, seq uint64, attempt int, statuses ...events.Status) []string {
	out := make([]string, len(statuses))
	for i, st := range statuses {
		out[i] = events.EventID(reqID, seq, attempt, st)
	}
	return out
}

var lifetime = []events.Status{events.StatusSubmitted, events.StatusProcessing, events.StatusComplete}

// A request id reused after its job expired starts a new job whose events have ids
// of their own. With ids that repeat the first job's, JetStream's duplicate window
// drops them on publication, and so does a subscriber deduplicating on id.
func TestReusedRequestIDGetsNewEventIDs(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.JobRetention = 2 * time.Second })
	e.replica(nil)
	cmd := events.Command{RequestID: "reuse-1", Identity: "reuse@example.com"}
	first := e.publish(false, cmd)[0]
	e.waitTerminal(20*time.Second, "reuse-1")
	e.waitExpired(20*time.Second, "reuse-1")
	second := e.publish(false, cmd)[0]
	want := append(slices.Clone(lifetime), lifetime...)
	eventually(t, 20*time.Second, func() string {
		if got := e.statuses("reuse-1"); !slices.Equal(got, want) {
			return fmt.Sprintf("distinct events %v, want %v: the second job's events are missing or repeat the first's ids", got, want)
		}
		return ""
	})
	wantSet := append(wantIDs("reuse-1", first, 1, lifetime...), wantIDs("reuse-1", second, 1, lifetime...)...)
	slices.Sort(wantSet)
	if got := slices.Sorted(maps.Keys(e.eventIDs("reuse-1"))); !slices.Equal(got, wantSet) {
		t.Fatalf("event ids %v, want %v (commands %d and %d)", got, wantSet, first, second)
	}
}

// The first invalid command for a request id is recorded as its failed job and
// announced, with an id of its own stream sequence; a second one finds the request
// id known and, as SPEC says, publishes nothing. A valid command then retries it.
func TestInvalidCommandsForOneRequestID(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.BatchSize = 1 })
	e.replica(nil)
	a := e.publishMsg(binaryMsg(`{"request_id":"inv-1"}`))
	e.publishMsg(binaryMsg(`{"request_id":"inv-1","identity":5}`))
	eventually(t, 10*time.Second, func() string {
		if n := e.commands("invalid"); n < 2 {
			return fmt.Sprintf("%v invalid commands handled, want 2", n)
		}
		return ""
	})
	want := []string{events.EventID("inv-1", a, 0, events.StatusFailed)}
	if got := slices.Sorted(maps.Keys(e.eventIDs("inv-1"))); !slices.Equal(got, want) {
		t.Fatalf("event ids %v, want %v (the first invalid command's failed only)", got, want)
	}
	e.publish(false, events.Command{RequestID: "inv-1", Identity: "inv@example.com"})
	e.waitTerminal(20*time.Second, "inv-1")
	eventually(t, 10*time.Second, func() string {
		if got, want := e.statuses("inv-1"), append([]events.Status{events.StatusFailed}, lifetime...); !slices.Equal(got, want) {
			return fmt.Sprintf("events %v, want %v", got, want)
		}
		return ""
	})
}

// commands sums heapdel_commands_total{outcome} over the replicas.
func (e *env) commands(outcome string) float64 {
	sum := 0.0
	for _, reg := range e.registries() {
		got, err := gauges(reg)
		if err != nil {
			e.t.Fatal(err)
		}
		sum += got["heapdel_commands_total/"+outcome]
	}
	return sum
}

// After Heap accepted a batch, a status stream that refuses events delays them, never
// resubmits: the command is kept in progress and the events retried until there is
// room, with the same ids, so the stream keeps one copy of each transition. The
// status stream is made to hold one message: the submitted event is stored, the
// processing event refused.
func TestRedeliveredCommandKeepsEventIDs(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	e.replica(nil)
	ctx := context.Background()
	stream, err := e.js.Stream(ctx, "HEAP_DELETION_STATUS")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	full := cfg
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	if _, err := e.js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	seq := e.publish(false, events.Command{RequestID: "redeliver-1", Identity: "redeliver@example.com"})[0]
	e.mu.Lock()
	reg := e.regs[0]
	e.mu.Unlock()
	eventually(t, 20*time.Second, func() string {
		if n := counter(t, reg, "heapdel_store_retries_total"); n < 2 {
			return fmt.Sprintf("%v store retries, want a few while the status stream is full", n)
		}
		return gaugesAre(reg, map[string]float64{"heapdel_stalled/store": 1})
	})
	if got := e.statuses("redeliver-1"); !slices.Equal(got, lifetime[:1]) {
		t.Fatalf("events while the stream is full: %v, want only submitted", got)
	}
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		if got := e.statuses("redeliver-1"); len(got) != len(lifetime) {
			return fmt.Sprintf("distinct events %v, want %v", got, lifetime)
		}
		return ""
	})
	want := wantIDs("redeliver-1", seq, 1, lifetime...)
	slices.Sort(want)
	got := e.eventIDs("redeliver-1")
	if ids := slices.Sorted(maps.Keys(got)); !slices.Equal(ids, want) {
		t.Fatalf("event ids %v, want %v", ids, want)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("event %s stored %d times, want once", id, n)
		}
	}
	if n := counter(t, reg, "heapdel_commands_redelivered_total"); n != 0 {
		t.Errorf("%v redeliveries: the command was given back after Heap accepted it", n)
	}
	if n := len(e.sim.Submissions()); n != 1 {
		t.Errorf("%d Heap submissions, want 1", n)
	}
	eventually(t, 10*time.Second, func() string { return gaugesAre(reg, map[string]float64{"heapdel_stalled/store": 0}) })
}

// counter returns the value of an unlabelled counter in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestRepublishedEventsKeepTheirOrder: the redelivery of a command whose job is
// processing re-publishes submitted and then processing; when the first copies
// are gone from the status stream and the submitted one is refused, processing
// must not be stored before it, or a subscriber reading in stream order sees the
// sequence reversed. The status stream keeps one message per subject, refusing
// more, and its submitted subject is held by another event until the test frees it.
func TestRepublishedEventsKeepTheirOrder(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	stop(t, e.replica(nil)) // provisions, then leaves the command to the next one
	ctx := context.Background()
	seq := e.publish(false, events.Command{RequestID: "ord-1", Identity: "ord@example.com"})[0]
	at := time.Now().UTC().Add(-time.Minute)
	job := consumer.Job{RequestID: "ord-1", Attempt: 1, Status: consumer.JobProcessing, Seq: seq,
		HeapDeletionRequestID: "c93fae81-f67a-46d6-acf1-0c3ba1c3e5a6", RequestedAt: at, SubmittedAt: at,
		History: []consumer.Transition{{Status: "accepted", At: at}, {Status: "submitted", At: at}, {Status: "processing", At: at}}}
	kv, err := e.js.KeyValue(ctx, "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	putJobs(t, kv, job)

	stream, err := e.js.Stream(ctx, "HEAP_DELETION_STATUS")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxMsgsPerSubject, cfg.Discard, cfg.DiscardNewPerSubject = 1, jetstream.DiscardNew, true
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	enc := events.NewEncoder(events.EncoderConfig{Prefix: "heap.deletion", Source: "test"})
	held, err := enc.Encode(events.StatusEvent{RequestID: "ord-other", Status: events.StatusSubmitted, Attempt: 1, CommandSeq: 1, Time: at, RequestedAt: at, SubmittedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	e.publishMsg(held)
	probe, _ := enc.Encode(events.StatusEvent{RequestID: "ord-probe", Status: events.StatusSubmitted, Attempt: 1, CommandSeq: 2, Time: at, RequestedAt: at, SubmittedAt: at})
	if _, err := e.js.PublishMsg(ctx, probe); err == nil {
		info, _ := stream.Info(ctx)
		t.Fatalf("the status stream took a second submitted event: %+v", info.Config)
	}

	e.cfg.Provision = false // provisioning would set the status stream back
	e.replica(nil)
	e.mu.Lock()
	reg := e.regs[len(e.regs)-1]
	e.mu.Unlock()
	eventually(t, 20*time.Second, func() string {
		if n := counter(t, reg, "heapdel_commands_redelivered_total"); n < 1 {
			return fmt.Sprintf("the command was not given back while its submitted event was refused (events %v)", e.statuses("ord-1"))
		}
		return ""
	})
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("heap.deletion.status.submitted")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		if got := e.statuses("ord-1"); len(got) < 2 {
			return fmt.Sprintf("events %v", got)
		}
		return ""
	})
	// Only the first two: the made-up Heap request may meanwhile be found unknown
	// to Heap (two 404s) and fail, which is not what this test is about.
	if got := e.statuses("ord-1"); !slices.Equal(got[:2], lifetime[:2]) {
		t.Fatalf("re-published events in stream order %v, want %v first", got, lifetime[:2])
	}
}
