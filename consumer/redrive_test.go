package consumer_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestRedrive: jobs that Heap rejected are redriven once the cause is fixed, through
// the API of two running replicas: a dry run publishes nothing, the real run
// submits each user once more with the next attempt number and the job's history
// carried on, a second run at once submits nothing again, and jobs that are not
// failed, invalid, unknown or sealed under another key are refused with the reason.
func TestRedrive(t *testing.T) {
	var blocked atomic.Bool
	blocked.Store(true)
	rule := func(u heaptest.User) heaptest.Outcome {
		if blocked.Load() && (strings.HasPrefix(u.Identity, "blocked-") || u.UserID == "987654321987") {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}
	e := newEnv(t, heaptest.Options{Rule: rule}, nil)
	svc := e.replica(nil)
	e.replica(nil)

	trace := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	deadline := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	e.publish(false,
		events.Command{RequestID: "rd-ok-1", Identity: "fine@example.com"},
		events.Command{RequestID: "rd-bad-1", Identity: "blocked-a@example.com", Deadline: deadline, TraceParent: trace},
		events.Command{RequestID: "rd-bad-2", UserID: 987654321987},
	)
	inv, _ := events.NewCommandMsg("heap.deletion.requested", events.Command{RequestID: "rd-inv-1"}, false) // neither identity nor user id
	e.publishMsg(inv)
	e.waitTerminal(20*time.Second, "rd-ok-1", "rd-bad-1", "rd-bad-2", "rd-inv-1")
	for id, want := range map[string]events.Status{"rd-ok-1": events.StatusComplete, "rd-bad-1": events.StatusFailed, "rd-bad-2": events.StatusFailed, "rd-inv-1": events.StatusFailed} {
		if got := e.terminal(id); got != want {
			t.Fatalf("%s: %s, want %s (%v)", id, got, want, e.statuses(id))
		}
	}

	// A failed job keeps its user sealed, never in the clear; a complete one keeps nothing.
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	raw := func(id string) consumer.Job {
		t.Helper()
		entry, err := kv.Get(context.Background(), consumer.JobKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(entry.Value()), "blocked-a@") || strings.Contains(string(entry.Value()), "fine@") {
			t.Fatalf("job %s holds an identity in the clear: %s", id, entry.Value())
		}
		var j consumer.Job
		if err := json.Unmarshal(entry.Value(), &j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	if j := raw("rd-bad-1"); j.Sealed == "" {
		t.Fatal("the failed job holds no sealed user: it could not be redriven")
	}
	if j := raw("rd-ok-1"); j.Sealed != "" {
		t.Fatal("the complete job still holds its sealed user")
	}

	subj := consumer.APISubject("heap.deletion", consumer.EndpointRedrive)
	redrive := func(req consumer.RedriveRequest) consumer.RedriveReply {
		t.Helper()
		data, code, _ := call(t, e.nc, subj, req)
		if code != "" {
			t.Fatalf("redrive %+v: %s %s", req, code, data)
		}
		var r consumer.RedriveReply
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatal(err)
		}
		// 12 digits: no time or id in a reply holds a run of digits that long.
		if strings.Contains(string(data), "blocked-a@") || strings.Contains(string(data), "987654321987") {
			t.Fatalf("the reply holds a user: %s", data)
		}
		return r
	}
	type row struct {
		id, refused string
		attempt     int
	}
	rows := func(r consumer.RedriveReply) []row {
		var out []row
		for _, it := range r.Jobs {
			out = append(out, row{it.RequestID, it.Refused, it.Attempt})
		}
		return out
	}
	submissions := len(e.sim.Submissions())

	// A dry run says what would happen and publishes nothing.
	dry := redrive(consumer.RedriveRequest{})
	if want := []row{{"rd-bad-1", "", 2}, {"rd-bad-2", "", 2}, {"rd-inv-1", consumer.RefusedInvalid, 0}}; !dry.DryRun || !slices.Equal(rows(dry), want) || dry.Redriven != 2 || dry.Refused != 1 {
		t.Fatalf("dry run: %+v, want %v", dry, want)
	}
	picked := redrive(consumer.RedriveRequest{RequestIDs: []string{"rd-ok-1", "rd-bad-1", "rd-nobody", "rd-bad-1", "rd-inv-1"}})
	if want := []row{{"rd-bad-1", "", 2}, {"rd-inv-1", consumer.RefusedInvalid, 0}, {"rd-nobody", consumer.RefusedNoJob, 0}, {"rd-ok-1", consumer.RefusedNotFailed, 1}}; !slices.Equal(rows(picked), want) {
		t.Fatalf("by request id: %v, want %v", rows(picked), want)
	}
	if data, code, _ := call(t, e.nc, subj, consumer.RedriveRequest{Reason: "bored"}); code != "400" || !strings.Contains(string(data), "heap_rejected") {
		t.Fatalf("unknown reason: %s %s", code, data)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.sim.Submissions()); n != submissions {
		t.Fatalf("a dry run reached Heap: %d submissions, had %d", n, submissions)
	}

	// The cause is fixed; redrive, twice at once.
	blocked.Store(false)
	if r := redrive(consumer.RedriveRequest{RequestIDs: []string{"rd-ok-1"}, Reason: "heap_rejected"}); !slices.Equal(rows(r), []row{{"rd-ok-1", consumer.RefusedNoMatch, 1}}) {
		t.Fatalf("a job outside the filter: %v", rows(r))
	}
	first := redrive(consumer.RedriveRequest{Reason: "heap_rejected", Yes: true})
	second := redrive(consumer.RedriveRequest{Reason: "heap_rejected", Yes: true})
	if first.DryRun || first.Redriven != 2 || first.Refused != 0 {
		t.Fatalf("redrive: %+v", first)
	}
	eventually(t, 20*time.Second, func() string {
		for _, id := range []string{"rd-bad-1", "rd-bad-2"} {
			h := e.history(id)
			if len(h) == 0 || h[len(h)-1].Status != events.StatusComplete {
				return id + ": " + strings.Join(statusNames(h), " ")
			}
		}
		return ""
	})
	_ = second // published again within the duplicate window, or refused as no longer failed: either way no second submission

	// Each user reached Heap exactly once more; nobody else did.
	time.Sleep(500 * time.Millisecond)
	count := map[string]int{}
	for _, s := range e.sim.Submissions()[submissions:] {
		for _, u := range s.Users {
			count[u.Identity+u.UserID]++
		}
	}
	if want := map[string]int{"blocked-a@example.com": 1, "987654321987": 1}; len(count) != 2 || count["blocked-a@example.com"] != 1 || count["987654321987"] != 1 {
		t.Fatalf("Heap received %v after the redrive, want %v", count, want)
	}

	// The normal sequence again, with the next attempt and the command's trace context.
	h := e.history("rd-bad-1")
	var again []string
	for _, ev := range h {
		if ev.Attempt == 2 {
			again = append(again, string(ev.Status))
			if ev.TraceParent != trace || !ev.Deadline.Equal(deadline) {
				t.Errorf("attempt 2 %s: traceparent %q deadline %v, want %q %v", ev.Status, ev.TraceParent, ev.Deadline, trace, deadline)
			}
		}
	}
	if want := []string{"submitted", "processing", "complete"}; !slices.Equal(again, want) || h[0].Status != events.StatusFailed || h[0].Attempt != 1 {
		t.Fatalf("rd-bad-1 events %v (attempt 2: %v), want failed (attempt 1) then %v", statusNames(h), again, want)
	}
	j := raw("rd-bad-1")
	if j.Attempt != 2 || j.Status != consumer.JobComplete || j.Sealed != "" || j.History[0].Note != "redrive" {
		t.Fatalf("redriven job: attempt %d status %s sealed %t first note %q", j.Attempt, j.Status, j.Sealed != "", j.History[0].Note)
	}
	var earlier []string
	for _, tr := range j.Earlier {
		earlier = append(earlier, tr.Status)
		if tr.Attempt != 1 {
			t.Errorf("earlier transition %s has attempt %d, want 1", tr.Status, tr.Attempt)
		}
	}
	if want := []string{"accepted", "failed"}; !slices.Equal(earlier, want) {
		t.Fatalf("earlier attempts %v, want %v", earlier, want)
	}

	// Now nothing is failed but the invalid command; a redrive refuses the rest.
	after := redrive(consumer.RedriveRequest{RequestIDs: []string{"rd-bad-1"}, Yes: true})
	if want := []row{{"rd-bad-1", consumer.RefusedNotFailed, 2}}; !slices.Equal(rows(after), want) {
		t.Fatalf("redrive of a complete job: %v, want %v", rows(after), want)
	}

	// Another key cannot open the seal: refused, with the reason.
	blocked.Store(true)
	e.publish(false, events.Command{RequestID: "rd-bad-3", Identity: "blocked-c@example.com"})
	e.waitTerminal(20*time.Second, "rd-bad-3")
	other, err := consumer.NewSealer([]byte("another-hash-key"))
	if err != nil {
		t.Fatal(err)
	}
	d := svc.Redriver()
	d.Sealer = other
	r, err := d.Redrive(context.Background(), consumer.RedriveRequest{RequestIDs: []string{"rd-bad-3"}, Yes: true})
	if err != nil || !slices.Equal(rows(r), []row{{"rd-bad-3", consumer.RefusedKey, 1}}) {
		t.Fatalf("another key: %v %v", rows(r), err)
	}
	if !strings.Contains(consumer.RefusalText(consumer.RefusedKey), "HEAPDEL_IDENTITY_HASH_KEY") {
		t.Fatal("the key refusal does not name the setting")
	}
}

func statusNames(h []events.StatusEvent) []string {
	var out []string
	for _, ev := range h {
		out = append(out, string(ev.Status))
	}
	return out
}

func TestSealer(t *testing.T) {
	s, err := consumer.NewSealer([]byte("test-hash-key"))
	if err != nil {
		t.Fatal(err)
	}
	a := s.Seal("req-1", "person@example.com", 0)
	b := s.Seal("req-1", "person@example.com", 0)
	if a == b || strings.Contains(a, "person") {
		t.Fatalf("seals %q %q: want different nonces and no plaintext", a, b)
	}
	if id, uid, err := s.Open("req-1", a); err != nil || id != "person@example.com" || uid != 0 {
		t.Fatalf("open: %q %d %v", id, uid, err)
	}
	u := s.Seal("req-2", "", 18446744073709551615)
	if id, uid, err := s.Open("req-2", u); err != nil || id != "" || uid != 18446744073709551615 {
		t.Fatalf("open user id: %q %d %v", id, uid, err)
	}
	// Bound to its request id, and to the key.
	if _, _, err := s.Open("req-2", a); err != consumer.ErrUnsealable {
		t.Fatalf("a seal opened for another request id: %v", err)
	}
	other, _ := consumer.NewSealer([]byte("other-hash-key"))
	if _, _, err := other.Open("req-1", a); err != consumer.ErrUnsealable {
		t.Fatalf("a seal opened with another key: %v", err)
	}
	for _, bad := range []string{"", "!!", a[:10]} {
		if _, _, err := s.Open("req-1", bad); err != consumer.ErrUnsealable {
			t.Fatalf("open %q: %v", bad, err)
		}
	}
}
