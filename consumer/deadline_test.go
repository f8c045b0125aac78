package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

func TestDeadlineTracking(t *testing.T) {
	now := time.Now()
	e := newEnv(t, heaptest.Options{Rule: func(u heaptest.User) heaptest.Outcome {
		if u.Identity == "late@example.com" {
			return heaptest.OutcomeComplete
		}
		return heaptest.OutcomeHang
	}}, nil)
	e.replica(nil)
	e.publish(false,
		events.Command{RequestID: "dl-breached", Identity: "a@example.com", Deadline: now.Add(-time.Hour)},
		events.Command{RequestID: "dl-12h", Identity: "b@example.com", Deadline: now.Add(12 * time.Hour)},
		events.Command{RequestID: "dl-3d", Identity: "c@example.com", Deadline: now.Add(72 * time.Hour)},
		events.Command{RequestID: "dl-30d", Identity: "d@example.com", Deadline: now.Add(30 * 24 * time.Hour)},
		events.Command{RequestID: "dl-none", Identity: "e@example.com"},
	)
	// A separate batch that completes after its deadline.
	time.Sleep(200 * time.Millisecond)
	e.publish(false, events.Command{RequestID: "dl-late", Identity: "late@example.com", Deadline: now.Add(-time.Minute)})
	e.waitTerminal(20*time.Second, "dl-late")
	e.mu.Lock()
	reg := e.regs[0]
	e.mu.Unlock()
	eventually(t, 10*time.Second, func() string {
		return gaugesAre(reg, map[string]float64{
			"heapdel_deadline_pending_breached":     1,
			"heapdel_deadline_pending_due/24h":      1,
			"heapdel_deadline_pending_due/7d":       2,
			"heapdel_deadline_completed_late_total": 1,
		})
	})
	if ev := e.history("dl-12h"); len(ev) == 0 || ev[0].Deadline.Sub(now.Add(12*time.Hour)).Abs() > time.Second {
		t.Errorf("status events do not carry the deadline: %+v", ev)
	}
}

// Commands that wait for Heap (Heap down, credentials rejected) count in the deadline
// gauges of every replica, once; when Heap takes them they count once, as pending in
// Heap (or not at all with on-submit), and no waiting entry is left behind.
func TestDeadlineGaugesCountCommandsWaitingForHeap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    heaptest.Fault
		behavior consumer.Behavior
	}{
		{"Heap down", heaptest.Fault{Endpoint: "user_deletion", Status: 503}, consumer.BehaviorUntilComplete},
		{"credentials rejected", heaptest.Fault{Endpoint: "auth_token", Status: 401}, consumer.BehaviorUntilComplete},
		{"Heap down, on-submit", heaptest.Fault{Endpoint: "user_deletion", Status: 503}, consumer.BehaviorOnSubmit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, heaptest.Options{NeverComplete: true}, func(c *consumer.Config) { c.Behavior = tc.behavior })
			e.sim.Script(tc.fault)
			e.replica(nil)
			e.replica(nil)
			now := time.Now()
			cmds := []events.Command{
				{RequestID: "wait-breached", Identity: "a@example.com", Deadline: now.Add(-time.Hour)},
				{RequestID: "wait-12h", Identity: "b@example.com", Deadline: now.Add(12 * time.Hour)},
				{RequestID: "wait:3d", UserID: 8512376125342183, Deadline: now.Add(72 * time.Hour)},
				{RequestID: "wait-30d", Identity: "d@example.com", Deadline: now.Add(30 * 24 * time.Hour)},
				{RequestID: "wait-none", Identity: "e@example.com"},
			}
			e.publish(false, cmds...)
			want := map[string]float64{
				"heapdel_deadline_pending_breached": 1,
				"heapdel_deadline_pending_due/24h":  1,
				"heapdel_deadline_pending_due/7d":   2,
			}
			eventually(t, 20*time.Second, func() string { return e.allGaugesAre(want) })
			wantKeys := []string{"w/" + consumer.JobKey("wait-12h"), "w/" + consumer.JobKey("wait-30d"),
				"w/" + consumer.JobKey("wait-breached"), "w/" + consumer.JobKey("wait:3d")}
			eventually(t, 10*time.Second, func() string {
				if got := e.waitingKeys(); !slices.Equal(got, wantKeys) {
					return fmt.Sprintf("waiting entries %v, want %v", got, wantKeys)
				}
				return ""
			})
			for _, v := range e.waitingValues() {
				if strings.Contains(v, "@") || strings.Contains(v, "8512376125342183") {
					t.Fatalf("a waiting entry holds an identity or user id: %s", v)
				}
			}
			if n := len(e.allEvents()); n != 0 {
				t.Fatalf("%d status events while Heap takes nothing, want none", n)
			}
			// A replica started now loads the waiting entries with the rest.
			e.replica(nil)
			eventually(t, 10*time.Second, func() string { return e.allGaugesAre(want) })

			e.sim.ClearFaults()
			bound := want
			if tc.behavior == consumer.BehaviorOnSubmit {
				want = map[string]float64{
					"heapdel_deadline_pending_breached": 0,
					"heapdel_deadline_pending_due/24h":  0,
					"heapdel_deadline_pending_due/7d":   0,
				}
			}
			// From waiting to pending in Heap, never counted twice on the way.
			eventually(t, 40*time.Second, func() string {
				if msg := e.gaugesAtMost(bound); msg != "" {
					t.Fatal(msg)
				}
				for _, c := range cmds {
					if len(e.history(c.RequestID)) < 2 {
						return fmt.Sprintf("%s: %v", c.RequestID, e.statuses(c.RequestID))
					}
				}
				if got := e.waitingKeys(); len(got) > 0 {
					return fmt.Sprintf("waiting entries left: %v", got)
				}
				return e.allGaugesAre(want)
			})
			if n := e.sim.SubmittedUsers(); n != len(cmds) {
				t.Errorf("Heap got %d users, want %d", n, len(cmds))
			}
			e.noneFailed()
		})
	}
}

// A command that waited for Heap and is then refused by Heap for good loses its
// waiting entry with its job.
func TestDeadlineWaitingClearedWhenHeapRejects(t *testing.T) {
	e := newEnv(t, heaptest.Options{Rule: func(u heaptest.User) heaptest.Outcome {
		if u.Identity == "refused@example.com" {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeHang
	}}, nil)
	e.sim.Script(heaptest.Fault{Endpoint: "user_deletion", Status: 503})
	e.replica(nil)
	now := time.Now()
	e.publish(false,
		events.Command{RequestID: "rej-12h", Identity: "refused@example.com", Deadline: now.Add(12 * time.Hour)},
		events.Command{RequestID: "ok-3d", Identity: "ok@example.com", Deadline: now.Add(72 * time.Hour)},
	)
	eventually(t, 20*time.Second, func() string {
		if got := e.waitingKeys(); len(got) != 2 {
			return fmt.Sprintf("waiting entries %v, want 2", got)
		}
		return e.allGaugesAre(map[string]float64{"heapdel_deadline_pending_due/24h": 1, "heapdel_deadline_pending_due/7d": 2})
	})
	e.sim.ClearFaults()
	e.waitTerminal(30*time.Second, "rej-12h")
	if h := e.history("rej-12h"); h[len(h)-1].Reason != events.ReasonHeapRejected {
		t.Fatalf("rej-12h: %+v, want failed/heap_rejected", h[len(h)-1])
	}
	eventually(t, 20*time.Second, func() string {
		if got := e.waitingKeys(); len(got) > 0 {
			return fmt.Sprintf("waiting entries left: %v", got)
		}
		return e.allGaugesAre(map[string]float64{
			"heapdel_deadline_pending_breached": 0,
			"heapdel_deadline_pending_due/24h":  0,
			"heapdel_deadline_pending_due/7d":   1, // ok-3d, pending in Heap
		})
	})
}

// gauges reads the gauges and counters of a registry, by name and label values.
func gauges(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			if m.Gauge != nil {
				got[name] = m.GetGauge().GetValue()
			}
			if m.Counter != nil {
				got[name] = m.GetCounter().GetValue()
			}
		}
	}
	return got, nil
}

// gaugesAre returns "" when reg shows the wanted values, else what differs.
func gaugesAre(reg *prometheus.Registry, want map[string]float64) string {
	got, err := gauges(reg)
	if err != nil {
		return err.Error()
	}
	for k, v := range want {
		if got[k] != v {
			return fmt.Sprintf("%s = %v, want %v", k, got[k], v)
		}
	}
	return ""
}

func (e *env) registries() []*prometheus.Registry {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*prometheus.Registry(nil), e.regs...)
}

// allGaugesAre checks every replica: each reports the deployment-wide values.
func (e *env) allGaugesAre(want map[string]float64) string {
	for i, reg := range e.registries() {
		if msg := gaugesAre(reg, want); msg != "" {
			return fmt.Sprintf("replica %d: %s", i, msg)
		}
	}
	return ""
}

// gaugesAtMost returns what exceeds want on any replica, or "".
func (e *env) gaugesAtMost(want map[string]float64) string {
	for i, reg := range e.registries() {
		got, err := gauges(reg)
		if err != nil {
			return err.Error()
		}
		for k, v := range want {
			if got[k] > v {
				return fmt.Sprintf("replica %d: %s = %v, more than %v: counted twice", i, k, got[k], v)
			}
		}
	}
	return ""
}

func (e *env) requestBucket() jetstream.KeyValue {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), consumer.StreamBase(prefixOf(e.cfg))+"_REQUESTS")
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// waitingKeys lists the waiting entries in the request bucket, sorted.
func (e *env) waitingKeys() []string {
	e.t.Helper()
	keys, err := e.requestBucket().Keys(context.Background())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, "w/") {
			out = append(out, k)
		}
	}
	return out
}

func (e *env) waitingValues() []string {
	e.t.Helper()
	kv := e.requestBucket()
	var out []string
	for _, k := range e.waitingKeys() {
		v, err := kv.Get(context.Background(), k)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, string(v.Value()))
	}
	return out
}
