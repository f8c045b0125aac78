package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// A publisher's Nats-Rollup header used to delete queued commands (and the recheck
// schedule, so nothing was rechecked until a restart). The command stream now
// refuses roll-ups: JetStream rejects such a publish, nothing queued is lost, and
// the schedule lives in its own stream.
func TestRollupIsRefused(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	stop(t, e.replica(nil)) // provisions the streams, then nobody consumes

	queued := identityCmds("queued", 5)
	e.publish(false, queued...)
	for _, scope := range []string{nats.MsgRollupSubject, nats.MsgRollupAll} {
		m, err := events.NewCommandMsg(prefixOf(e.cfg)+".requested", events.Command{RequestID: "rollup-" + scope, Identity: "secret.rollup@example.com"}, false)
		if err != nil {
			t.Fatal(err)
		}
		m.Header.Set(nats.MsgRollup, scope)
		if _, err := e.js.PublishMsg(context.Background(), m); err == nil {
			t.Errorf("a command with Nats-Rollup: %s was stored; the command stream must refuse roll-ups", scope)
		}
	}
	ctx := context.Background()
	sched, err := e.js.Stream(ctx, "HEAP_DELETION_SCHEDULE")
	if err != nil {
		t.Fatalf("schedule stream: %v", err)
	}
	if _, err := sched.GetLastMsgForSubject(ctx, prefixOf(e.cfg)+".schedule.recheck"); err != nil {
		t.Fatalf("recheck schedule not in its own stream: %v", err)
	}
	e.replica(nil)
	e.waitTerminal(20*time.Second, ids(queued)...)
	for _, id := range ids(queued) {
		if got := e.terminal(id); got != events.StatusComplete {
			t.Errorf("%s: %s, want complete", id, got)
		}
	}
}

// An existing deployment's command stream (it carried the schedule and ticks and
// allowed roll-ups, which JetStream cannot turn off) is recreated at start without
// losing a queued command, and the schedule moves to its own stream.
func TestMigrateOldCommandStream(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	ctx := context.Background()
	p := prefixOf(e.cfg)
	// The layout of earlier versions, with commands queued and an old tick consumer.
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:              "HEAP_DELETION",
		Subjects:          []string{p + ".requested", p + ".recheck", p + ".schedule.recheck"},
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Duplicates:        2 * time.Minute,
		AllowRollup:       true,
		AllowMsgSchedules: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateOrUpdateConsumer(ctx, "HEAP_DELETION", jetstream.ConsumerConfig{
		Durable: "heapdel-recheck", FilterSubject: p + ".recheck", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	queued := identityCmds("migrate", 250)
	e.publishAsync(queued)
	sm := nats.NewMsg(p + ".schedule.recheck")
	sm.Header.Set("Nats-Schedule", "@every 1s")
	sm.Header.Set("Nats-Schedule-Target", p+".recheck")
	e.publishMsg(sm)

	// Two replicas start at the same moment and both migrate.
	done := make(chan struct{}, 2)
	for range 2 {
		go func() { e.replica(nil); done <- struct{}{} }()
	}
	<-done
	<-done
	e.waitTerminal(60*time.Second, ids(queued)...)
	for _, id := range ids(queued) {
		if got := e.terminal(id); got != events.StatusComplete {
			t.Fatalf("%s: %s, want complete", id, got)
		}
	}
	st, err := e.js.Stream(ctx, "HEAP_DELETION")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowRollup || cfg.AllowMsgSchedules || len(cfg.Subjects) != 1 || cfg.Sealed {
		t.Errorf("command stream after migration: rollup %v, schedules %v, subjects %v, sealed %v", cfg.AllowRollup, cfg.AllowMsgSchedules, cfg.Subjects, cfg.Sealed)
	}
	if _, err := e.js.Stream(ctx, "HEAP_DELETION_MIGRATION"); err == nil {
		t.Error("the migration stream is left behind")
	}
	// Each queued command was submitted once.
	if got := e.sim.SubmittedUsers(); got != len(queued) {
		t.Errorf("%d users submitted for %d queued commands", got, len(queued))
	}
	m, err := events.NewCommandMsg(p+".requested", events.Command{RequestID: "after", Identity: "after@example.com"}, false)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.Set(nats.MsgRollup, nats.MsgRollupAll)
	if _, err := e.js.PublishMsg(ctx, m); err == nil {
		t.Error("the migrated command stream accepted a roll-up")
	}

}
