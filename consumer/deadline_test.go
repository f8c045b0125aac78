package consumer_test

import (
	"fmt"
	"testing"
	"time"

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
		mfs, err := reg.Gather()
		if err != nil {
			return err.Error()
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
		want := map[string]float64{
			"heapdel_deadline_pending_breached":     1,
			"heapdel_deadline_pending_due/24h":      1,
			"heapdel_deadline_pending_due/7d":       2,
			"heapdel_deadline_completed_late_total": 1,
		}
		for k, v := range want {
			if got[k] != v {
				return fmt.Sprintf("%s = %v, want %v", k, got[k], v)
			}
		}
		return ""
	})
	if ev := e.history("dl-12h"); len(ev) == 0 || ev[0].Deadline.Sub(now.Add(12*time.Hour)).Abs() > time.Second {
		t.Errorf("status events do not carry the deadline: %+v", ev)
	}
}
