package consumer_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// provisioned is a server on which a replica has provisioned everything and
// stopped again, so that a test can change the objects under nobody's feet.
func provisioned(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, heaptest.Options{}, nil)
	stop(t, e.replica(nil))
	e.cfg.Provision = false
	return e
}

// TestVerifyProvisioned: what provisioning creates is what Verify wants.
func TestVerifyProvisioned(t *testing.T) {
	e := provisioned(t)
	if f := consumer.Verify(context.Background(), e.js, e.cfg); len(f) != 0 {
		t.Fatalf("findings on a freshly provisioned server:\n%s", findingLines(f))
	}
}

// TestVerifyFindings changes one setting heapdel relies on at a time, as an
// administrator could on a locked-down account, and checks that Verify names the
// object and what is wrong, and that it stops start (FindingsError) unless it is
// only a warning.
func TestVerifyFindings(t *testing.T) {
	ctx := context.Background()
	updateStream := func(name string, f func(*jetstream.StreamConfig)) func(*testing.T, *env) {
		return func(t *testing.T, e *env) {
			st, err := e.js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			f(&cfg)
			if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	updateConsumer := func(stream, name string, f func(*jetstream.ConsumerConfig)) func(*testing.T, *env) {
		return func(t *testing.T, e *env) {
			c, err := e.js.Consumer(ctx, stream, name)
			if err != nil {
				t.Fatal(err)
			}
			cfg := c.CachedInfo().Config
			f(&cfg)
			if _, err := e.js.UpdateConsumer(ctx, stream, cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		change  func(*testing.T, *env)
		cfg     func(*consumer.Config)
		object  string
		problem string
		warning bool
	}{
		{
			name:   "command stream missing",
			change: func(t *testing.T, e *env) { mustNot(t, e.js.DeleteStream(ctx, "HEAP_DELETION")) },
			object: "stream HEAP_DELETION", problem: "does not exist",
		},
		{
			name:   "command stream allows roll-ups",
			change: updateStream("HEAP_DELETION", func(c *jetstream.StreamConfig) { c.AllowRollup = true }),
			object: "stream HEAP_DELETION", problem: "Nats-Rollup",
		},
		{
			name: "command stream captures another subject",
			change: updateStream("HEAP_DELETION", func(c *jetstream.StreamConfig) {
				c.Subjects = append(c.Subjects, "heap.deletion.other")
			}),
			object: "stream HEAP_DELETION", problem: "heap.deletion.other besides heap.deletion.requested",
		},
		{
			name:   "command stream sealed",
			change: updateStream("HEAP_DELETION", func(c *jetstream.StreamConfig) { c.Sealed = true }),
			object: "stream HEAP_DELETION", problem: "sealed",
		},
		{
			name:   "command stream drops old commands",
			change: updateStream("HEAP_DELETION", func(c *jetstream.StreamConfig) { c.MaxAge = time.Hour }),
			object: "stream HEAP_DELETION", problem: "MaxAge",
		},
		{
			name: "schedule stream without message schedules",
			change: func(t *testing.T, e *env) {
				mustNot(t, e.js.DeleteStream(ctx, "HEAP_DELETION_SCHEDULE"))
				if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
					Name: "HEAP_DELETION_SCHEDULE", Subjects: []string{"heap.deletion.recheck", "heap.deletion.schedule.recheck"},
					Retention: jetstream.WorkQueuePolicy,
				}); err != nil {
					t.Fatal(err)
				}
				if _, err := e.js.CreateConsumer(ctx, "HEAP_DELETION_SCHEDULE", jetstream.ConsumerConfig{
					Durable: "heapdel-recheck", FilterSubject: "heap.deletion.recheck", AckPolicy: jetstream.AckExplicitPolicy,
					MaxAckPending: 1, AckWait: time.Minute,
				}); err != nil {
					t.Fatal(err)
				}
			},
			object: "stream HEAP_DELETION_SCHEDULE", problem: "does not allow message schedules",
		},
		{
			name: "recheck schedule missing",
			change: func(t *testing.T, e *env) {
				st, err := e.js.Stream(ctx, "HEAP_DELETION_SCHEDULE")
				if err != nil {
					t.Fatal(err)
				}
				mustNot(t, st.Purge(ctx, jetstream.WithPurgeSubject("heap.deletion.schedule.recheck")))
			},
			object: "recheck schedule on heap.deletion.schedule.recheck", problem: "is missing",
		},
		{
			name:   "recheck schedule of another interval",
			cfg:    func(c *consumer.Config) { c.RecheckInterval = 2 * time.Second },
			object: "recheck schedule on heap.deletion.schedule.recheck", problem: `want "@every 2s"`,
		},
		{
			name:   "status stream missing",
			change: func(t *testing.T, e *env) { mustNot(t, e.js.DeleteStream(ctx, "HEAP_DELETION_STATUS")) },
			object: "stream HEAP_DELETION_STATUS", problem: "does not exist",
		},
		{
			name: "job bucket without per-entry TTLs",
			change: func(t *testing.T, e *env) {
				mustNot(t, e.js.DeleteKeyValue(ctx, "HEAP_DELETION_JOBS"))
				if _, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "HEAP_DELETION_JOBS"}); err != nil {
					t.Fatal(err)
				}
			},
			object: "key-value bucket HEAP_DELETION_JOBS", problem: "no per-entry TTLs",
		},
		{
			name: "request bucket with a TTL",
			change: func(t *testing.T, e *env) {
				mustNot(t, e.js.DeleteKeyValue(ctx, "HEAP_DELETION_REQUESTS"))
				if _, err := e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "HEAP_DELETION_REQUESTS", TTL: time.Hour, LimitMarkerTTL: time.Hour}); err != nil {
					t.Fatal(err)
				}
			},
			object: "key-value bucket HEAP_DELETION_REQUESTS", problem: "expires every entry",
		},
		{
			name:   "command consumer missing",
			change: func(t *testing.T, e *env) { mustNot(t, e.js.DeleteConsumer(ctx, "HEAP_DELETION", "heapdel")) },
			object: "consumer heapdel", problem: "does not exist",
		},
		{
			name:   "command consumer gives up on commands",
			change: updateConsumer("HEAP_DELETION", "heapdel", func(c *jetstream.ConsumerConfig) { c.MaxDeliver = 5 }),
			object: "consumer heapdel", problem: "after 5 deliveries",
		},
		{
			name:   "command consumer without a filter",
			change: updateConsumer("HEAP_DELETION", "heapdel", func(c *jetstream.ConsumerConfig) { c.FilterSubject = "" }),
			object: "consumer heapdel", problem: "filters on nothing",
		},
		{
			name:   "recheck consumer handing out several ticks",
			change: updateConsumer("HEAP_DELETION_SCHEDULE", "heapdel-recheck", func(c *jetstream.ConsumerConfig) { c.MaxAckPending = 10 }),
			object: "consumer heapdel-recheck", problem: "MaxAckPending 10",
		},
		{
			name:   "other replicas than configured",
			cfg:    func(c *consumer.Config) { c.Replicas = 3 },
			object: "stream HEAP_DELETION", problem: "has 1 replica(s), HEAPDEL_STREAM_REPLICAS is 3", warning: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := provisioned(t)
			if tc.change != nil {
				tc.change(t, e)
			}
			cfg := e.cfg
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			findings := consumer.Verify(ctx, e.js, cfg)
			var found *consumer.Finding
			for i, f := range findings {
				if f.Object == tc.object && strings.Contains(f.Problem, tc.problem) {
					found = &findings[i]
				}
			}
			if found == nil {
				t.Fatalf("no finding on %s saying %q; findings:\n%s", tc.object, tc.problem, findingLines(findings))
			}
			if found.Fix == "" || found.Warning != tc.warning {
				t.Errorf("finding %+v: want a fix and warning %v", *found, tc.warning)
			}
			err := consumer.FindingsError(findings)
			if tc.warning && err != nil {
				t.Errorf("FindingsError with warnings only: %v", err)
			}
			if !tc.warning && (!errors.Is(err, consumer.ErrMisprovisioned) || !strings.Contains(err.Error(), tc.object)) {
				t.Errorf("FindingsError: %v, want ErrMisprovisioned naming %s", err, tc.object)
			}
		})
	}
}

// TestVerifyUnreadable: an object Verify cannot read (here: the server is gone)
// is a finding, and Verify returns within its per-call bound.
func TestVerifyUnreadable(t *testing.T) {
	e := provisioned(t)
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	findings := consumer.Verify(ctx, e.js, e.cfg)
	if len(findings) == 0 || !strings.Contains(findings[0].Problem, "cannot be read") {
		t.Fatalf("findings with NATS down:\n%s", findingLines(findings))
	}
	if consumer.FindingsError(findings) == nil {
		t.Error("FindingsError is nil with NATS down")
	}
}

func mustNot(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func findingLines(fs []consumer.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + f.String())
		if f.Warning {
			b.WriteString(" (warning)")
		}
		b.WriteString("\n")
	}
	return b.String()
}
