package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

func TestSequences(t *testing.T) {
	deadline := time.Date(2026, 12, 24, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		behavior   consumer.Behavior
		structured bool
		want       []events.Status
	}{
		{"until-complete binary", consumer.BehaviorUntilComplete, false, []events.Status{"submitted", "processing", "complete"}},
		{"until-complete structured", consumer.BehaviorUntilComplete, true, []events.Status{"submitted", "processing", "complete"}},
		{"on-submit binary", consumer.BehaviorOnSubmit, false, []events.Status{"submitted", "complete"}},
		{"on-submit structured", consumer.BehaviorOnSubmit, true, []events.Status{"submitted", "complete"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, heaptest.Options{CompleteAfter: 300 * time.Millisecond}, func(c *consumer.Config) { c.Behavior = tc.behavior })
			e.replica(nil)
			e.publish(tc.structured,
				events.Command{RequestID: "dsr-1", Identity: "alice@example.com", Deadline: deadline},
				events.Command{RequestID: "dsr-2", UserID: 1<<63 - 1})
			e.waitTerminal(20*time.Second, "dsr-1", "dsr-2")
			for _, id := range []string{"dsr-1", "dsr-2"} {
				if got := e.statuses(id); !slices.Equal(got, tc.want) {
					t.Fatalf("%s: statuses %v, want %v", id, got, tc.want)
				}
				h := e.history(id)
				heapID := h[0].HeapDeletionRequestID
				for _, ev := range h {
					if ev.RequestID != id || ev.HeapDeletionRequestID == "" || ev.HeapDeletionRequestID != heapID {
						t.Errorf("%s %s: request %q heap id %q, want %s and %s", id, ev.Status, ev.RequestID, ev.HeapDeletionRequestID, id, heapID)
					}
					if ev.RequestedAt.IsZero() || ev.SubmittedAt.IsZero() {
						t.Errorf("%s %s: requested_at/submitted_at missing", id, ev.Status)
					}
					if (ev.Status == events.StatusComplete) == ev.CompletedAt.IsZero() {
						t.Errorf("%s %s: completed_at %v", id, ev.Status, ev.CompletedAt)
					}
				}
				if id == "dsr-1" && !h[0].Deadline.Equal(deadline) {
					t.Errorf("deadline %v, want %v", h[0].Deadline, deadline)
				}
			}
			subs := e.sim.Submissions()
			if len(subs) != 1 || len(subs[0].Users) != 2 {
				t.Fatalf("Heap got %d submissions (%v), want one of 2 users", len(subs), subs)
			}
			got := []string{subs[0].Users[0].Identity + subs[0].Users[0].UserID, subs[0].Users[1].Identity + subs[0].Users[1].UserID}
			slices.Sort(got)
			if want := []string{"9223372036854775807", "alice@example.com"}; !slices.Equal(got, want) {
				t.Errorf("Heap got users %v, want %v", got, want)
			}
			if tc.behavior == consumer.BehaviorOnSubmit && e.sim.Requests("deletion_status") != 0 {
				t.Errorf("on-submit polled Heap %d times", e.sim.Requests("deletion_status"))
			}
		})
	}
}

func TestInvalidCommandsFailAndTheConsumerCarriesOn(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	e.replica(nil)
	binary := func(data string, hdr map[string]string) *nats.Msg {
		m := nats.NewMsg("heap.deletion.requested")
		for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "x", "ce-source": "t", "ce-type": "heap.deletion.requested"} {
			m.Header.Set(k, v)
		}
		for k, v := range hdr {
			m.Header.Set(k, v)
		}
		m.Data = []byte(data)
		return m
	}
	cases := []struct {
		name, reqID string
		msg         *nats.Msg
	}{
		{"both identity and user id", "bad-1", binary(`{"request_id":"bad-1","identity":"x@example.com","user_id":5}`, nil)},
		{"neither", "bad-2", binary(`{"request_id":"bad-2"}`, nil)},
		{"wrong type", "bad-3", binary(`{"request_id":"bad-3","identity":"x@example.com"}`, map[string]string{"ce-type": "something.else"})},
		{"bad deadline", "bad-4", binary(`{"request_id":"bad-4","identity":"x@example.com","deadline":"tomorrow"}`, nil)},
		{"user id negative", "bad-5", binary(`{"request_id":"bad-5","user_id":-3}`, nil)},
		{"too large", "bad-6", binary(`{"request_id":"bad-6","identity":"`+strings.Repeat("a", 70<<10)+`"}`, nil)},
		{"not a cloudevent", "", &nats.Msg{Subject: "heap.deletion.requested", Data: []byte("hello")}},
		{"request id with wildcard", "", binary(`{"request_id":"a.*","identity":"x@example.com"}`, nil)},
	}
	for _, c := range cases {
		e.publishMsg(c.msg)
	}
	good := identityCmds("good", 3)
	e.publish(false, good...)
	e.waitTerminal(20*time.Second, ids(good)...)
	for _, c := range cases {
		if c.reqID == "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			eventually(t, 10*time.Second, func() string {
				h := e.history(c.reqID)
				if len(h) != 1 || h[0].Status != events.StatusFailed || h[0].Reason != events.ReasonInvalidCommand {
					return fmt.Sprintf("history %+v, want one failed/invalid_command", h)
				}
				return ""
			})
		})
	}
	for _, id := range ids(good) {
		if got := e.terminal(id); got != events.StatusComplete {
			t.Errorf("%s: %s, want complete", id, got)
		}
	}
	// Invalid commands are terminated: nothing is left for redelivery.
	eventually(t, 10*time.Second, func() string {
		info, err := e.js.Stream(context.Background(), "HEAP_DELETION")
		if err != nil {
			return err.Error()
		}
		c, err := info.Consumer(context.Background(), "heapdel")
		if err != nil {
			return err.Error()
		}
		ci, err := c.Info(context.Background())
		if err != nil {
			return err.Error()
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return fmt.Sprintf("consumer still has %d pending, %d unacked", ci.NumPending, ci.NumAckPending)
		}
		return ""
	})
}

func TestBatchingAndDuplicates(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) {
		c.BatchSize = 1000
		// Long enough that a starved machine never closes a batch by time: all
		// 3,000 commands are in the stream before the service starts, so every batch
		// fills by size.
		c.BatchWait = 10 * time.Second
		c.Behavior = consumer.BehaviorOnSubmit
	})
	cmds := identityCmds("batch", 2500)
	// Publish before the service starts, so batches fill by size.
	if _, err := e.js.Stream(context.Background(), "HEAP_DELETION"); err == nil {
		t.Fatal("stream exists before provisioning")
	}
	svc := e.replica(nil)
	_ = svc
	all := append(append([]events.Command(nil), cmds...), cmds[:500]...)
	e.publishAsync(all)
	e.waitTerminal(60*time.Second, ids(cmds)...)
	// Give duplicates time to be handled, then count Heap submissions.
	time.Sleep(time.Second)
	subs := e.sim.Submissions()
	users := 0
	for _, s := range subs {
		users += len(s.Users)
	}
	if users != 2500 {
		t.Errorf("Heap received %d users, want 2500 (no duplicate submitted)", users)
	}
	if len(subs) != 3 {
		t.Errorf("Heap received %d submissions, want 3", len(subs))
	}
	for _, id := range ids(cmds) {
		if n := len(e.history(id)); n != 2 {
			t.Fatalf("%s: %d distinct events, want 2", id, n)
		}
	}
}

func TestJobRecordHoldsNoIdentity(t *testing.T) {
	e := newEnv(t, heaptest.Options{}, nil)
	e.replica(nil)
	e.publish(false, events.Command{RequestID: "dsr:2026.1", Identity: "secret-person@example.com"})
	e.waitTerminal(20*time.Second, "dsr:2026.1")
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), consumer.JobKey("dsr:2026.1"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(entry.Value()), "secret-person") {
		t.Fatalf("job record holds the identity: %s", entry.Value())
	}
	var job consumer.Job
	if err := json.Unmarshal(entry.Value(), &job); err != nil {
		t.Fatal(err)
	}
	if job.Status != "complete" || len(job.IdentityHash) != 32 || job.Attempt != 1 {
		t.Fatalf("job %+v", job)
	}
}
