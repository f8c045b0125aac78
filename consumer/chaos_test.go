package consumer_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestRandomizedFaults runs commands through a seeded mixture of the faults real
// deployments meet, and checks SPEC's promises after each run:
//   - every request id has a valid sequence: submitted → processing → complete, or
//     failed with a grounded reason (heap_rejected only for users Heap refused,
//     invalid_command only for invalid commands), or held;
//   - complete only for a Heap deletion request that Heap reports complete;
//   - no user submitted to Heap twice (no crash is injected here);
//   - nothing left non-terminal: every job ends complete, failed or held.
//
// Faults: Heap answering 429 (with Retry-After), 503, 301, 407, 404 once on a status
// check, slow answers, a 2xx without a deletion request id, users Heap rejects;
// the request bucket and the status stream refusing writes for a while; a slow
// Heap rate limiter; roll-up attempts; duplicates and invalid commands; replicas
// restarted gracefully.
//
// The short run (CI) is 2 seeds of 1,000 commands. HEAPDEL_FAULTS=long runs 20
// seeds of 10,000 (HEAPDEL_SEEDS and HEAPDEL_COMMANDS override both).
func TestRandomizedFaults(t *testing.T) {
	seeds, n := 2, 1000
	if os.Getenv("HEAPDEL_FAULTS") == "long" {
		seeds, n = 20, 10000
	}
	if v, err := strconv.Atoi(os.Getenv("HEAPDEL_SEEDS")); err == nil {
		seeds = v
	}
	if v, err := strconv.Atoi(os.Getenv("HEAPDEL_COMMANDS")); err == nil {
		n = v
	}
	for seed := 1; seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed_%d", seed), func(t *testing.T) { chaosRun(t, uint64(seed), n) })
	}
}

type chaosFigures struct {
	commands, duplicates, invalid, rejected, held, rollups int
	heapFaults, storeFaults, restarts                      int
	submissions, users                                     int
}

func chaosRun(t *testing.T, seed uint64, n int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	began := time.Now()
	rejected := map[string]bool{} // identities Heap refuses
	for i := range n {
		if rng.IntN(200) == 0 {
			rejected[fmt.Sprintf("chaos-person-%06d@example.com", i)] = true
		}
	}
	e := newEnv(t, heaptest.Options{
		CompleteAfter: 300 * time.Millisecond,
		Seed:          int64(seed),
		Rule: func(u heaptest.User) heaptest.Outcome {
			if rejected[u.Identity] {
				return heaptest.OutcomeReject
			}
			return heaptest.OutcomeComplete
		},
	}, func(c *consumer.Config) {
		c.BatchSize = 50 + rng.IntN(200)
		c.ReconcileInterval = 2 * time.Second
		c.MaxPending = time.Hour
	})
	var fig chaosFigures
	// Heap's mood, stage after stage.
	var stages []heaptest.Fault
	one404 := false // two 404s for one request are Heap's verdict (heap_not_found): one per run
	for range 6 + rng.IntN(6) {
		f := heaptest.Fault{For: time.Duration(200+rng.IntN(800)) * time.Millisecond, Rate: 0.3 + rng.Float64()*0.5}
		switch rng.IntN(7) {
		case 0:
			f.Endpoint, f.Status, f.RetryAfter = "user_deletion", 429, "1"
		case 1:
			f.Status = 503
		case 2:
			f.Endpoint, f.Status, f.Location = "user_deletion", 301, "https://elsewhere.example/"
		case 3:
			f.Status = 407
		case 4:
			if one404 {
				continue
			}
			one404 = true
			f.Endpoint, f.Status, f.Count, f.For, f.Rate = "deletion_status", 404, 1, 0, 0
		case 5:
			f.Latency = time.Duration(50+rng.IntN(300)) * time.Millisecond
		case 6:
			f.Endpoint, f.Status = "deletion_status", 500
		}
		stages = append(stages, f)
	}
	held := rng.IntN(3) == 0
	if held {
		stages = append(stages, heaptest.Fault{Endpoint: "user_deletion", Body: `{"status":"pending"}`, Count: 1})
	}
	fig.heapFaults = len(stages)
	e.sim.Script(stages...)
	rate := 50 + rng.Float64()*200
	heapCfg := func(h *heapclient.Config) { h.Rate, h.Burst = rate, 5 }
	replicas := []*consumer.Service{e.replica(heapCfg)}
	if rng.IntN(2) == 0 {
		replicas = append(replicas, e.replica(heapCfg))
	}

	// Commands, duplicates, invalid ones and roll-up attempts, published in a
	// goroutine while the faults below play out.
	cmds := make([]events.Command, n)
	for i := range cmds {
		cmds[i] = events.Command{RequestID: fmt.Sprintf("chaos-%06d", i), Identity: fmt.Sprintf("chaos-person-%06d@example.com", i)}
	}
	var invalidIDs []string
	published := make(chan struct{})
	prng := rand.New(rand.NewPCG(seed, 0x9b)) // the publisher's own, not shared across goroutines
	go func() {
		defer close(published)
		rng := prng
		for i, c := range cmds {
			m, err := events.NewCommandMsg("heap.deletion.requested", c, rng.IntN(2) == 0)
			if err != nil {
				t.Error(err)
				return
			}
			e.publishAsyncMsg(m)
			// A duplicate of an earlier command (not of one Heap refuses: after its
			// failure a re-send is a retry, by SPEC).
			if d := cmds[rng.IntN(i+1)]; rng.IntN(20) == 0 && !rejected[d.Identity] {
				m, _ := events.NewCommandMsg("heap.deletion.requested", d, false)
				e.publishAsyncMsg(m)
				fig.duplicates++
			}
			if rng.IntN(50) == 0 { // an invalid command with a fresh request id
				id := fmt.Sprintf("chaos-bad-%06d", i)
				e.publishAsyncMsg(binaryMsg(`{"request_id":"` + id + `","identity":"x@y.z","user_id":1}`))
				invalidIDs = append(invalidIDs, id)
			}
			if rng.IntN(300) == 0 { // a roll-up attempt: JetStream must refuse it
				r, _ := events.NewCommandMsg("heap.deletion.requested", events.Command{RequestID: fmt.Sprintf("chaos-rollup-%06d", i), Identity: "r@y.z"}, false)
				r.Header.Set(nats.MsgRollup, nats.MsgRollupAll)
				if _, err := e.js.PublishMsg(context.Background(), r); err == nil {
					t.Errorf("a roll-up was accepted by the command stream")
				}
				fig.rollups++
			}
		}
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(60 * time.Second):
			t.Error("publish acks did not arrive")
		}
	}()

	// Store refusals and restarts while the commands flow.
	for range 2 + rng.IntN(3) {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		switch rng.IntN(3) {
		case 0:
			refuse(t, e.js, "KV_HEAP_DELETION_REQUESTS", time.Duration(500+rng.IntN(1500))*time.Millisecond)
			fig.storeFaults++
		case 1:
			refuse(t, e.js, "HEAP_DELETION_STATUS", time.Duration(500+rng.IntN(1500))*time.Millisecond)
			fig.storeFaults++
		case 2:
			i := rng.IntN(len(replicas))
			stop(t, replicas[i])
			replicas[i] = e.replica(heapCfg)
			fig.restarts++
		}
	}
	<-published
	valid := ids(cmds)
	var wantHeld []string
	e.waitSettled(5*time.Minute, valid, invalidIDs)

	// The checks.
	subs := e.sim.Submissions()
	seen := map[string]int{}
	for _, s := range subs {
		fig.users += len(s.Users)
		for _, u := range s.Users {
			seen[u.Identity]++
		}
	}
	fig.submissions = len(subs)
	for id, k := range seen {
		if k > 1 {
			t.Errorf("user %s... submitted %d times without a crash", id[:min(len(id), 19)], k)
		}
	}
	jobs := e.jobsByStatus()
	for i, c := range cmds {
		h := e.history(c.RequestID)
		st := statusesOf(h)
		switch {
		case jobs[c.RequestID] == "held":
			wantHeld = append(wantHeld, c.RequestID)
			if len(st) != 0 {
				t.Errorf("%s: held, yet events %v", c.RequestID, st)
			}
		case rejected[cmds[i].Identity]:
			fig.rejected++
			if len(st) != 1 || h[0].Status != events.StatusFailed || h[0].Reason != events.ReasonHeapRejected {
				t.Errorf("%s: %v, want failed/heap_rejected (Heap refused this user)", c.RequestID, st)
			}
		default:
			if !equalStatuses(st, lifetime) {
				t.Errorf("%s: %v (%s), want %v", c.RequestID, st, reasonsOf(h), lifetime)
				continue
			}
			d, ok := e.sim.Deletion(h[2].HeapDeletionRequestID)
			if !ok || d.Status != "complete" {
				t.Errorf("%s: complete, but Heap reports %q for %s", c.RequestID, d.Status, h[2].HeapDeletionRequestID)
			}
		}
	}
	for _, id := range invalidIDs {
		h := e.history(id)
		if len(h) != 1 || h[0].Status != events.StatusFailed || h[0].Reason != events.ReasonInvalidCommand {
			t.Errorf("%s: %v, want failed/invalid_command", id, statusesOf(h))
		}
	}
	for id, st := range jobs {
		if st != "complete" && st != "failed" && st != "held" {
			t.Errorf("job %s left %s", id, st)
		}
	}
	fig.held = len(wantHeld)
	fig.commands, fig.invalid = n, len(invalidIDs)
	t.Logf("seed %d: %d commands (+%d duplicates, %d invalid, %d roll-up attempts refused), %d replicas; faults: %d Heap stages, %d store refusals, %d restarts; Heap: %d submissions, %d users (each once); outcomes: %d rejected, %d held; violations: %d; %s",
		seed, fig.commands, fig.duplicates, fig.invalid, fig.rollups, len(replicas), fig.heapFaults, fig.storeFaults, fig.restarts,
		fig.submissions, fig.users, fig.rejected, fig.held, boolInt(t.Failed()), time.Since(began).Round(time.Second))
}

// refuse makes stream refuse new writes for d (at most its current count of
// messages plus one), then restores its limits.
func refuse(t *testing.T, js jetstream.JetStream, stream string, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	full := cfg
	full.MaxMsgs, full.Discard = int64(info.State.Msgs)+1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// waitSettled waits until every valid request id has a terminal status or a held
// job, and every invalid one its failed event.
func (e *env) waitSettled(timeout time.Duration, valid, invalid []string) {
	e.t.Helper()
	eventually(e.t, timeout, func() string {
		var jobs map[string]string
		for _, id := range append(append([]string(nil), valid...), invalid...) {
			if e.terminal(id) != "" {
				continue
			}
			if jobs == nil {
				jobs = e.jobsByStatus()
			}
			if jobs[id] != "held" {
				return fmt.Sprintf("%s not settled (events %v, job %q)", id, e.statuses(id), jobs[id])
			}
		}
		return ""
	})
}

// jobsByStatus reads every job record: request id → status.
func (e *env) jobsByStatus() map[string]string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, "HEAP_DELETION_JOBS")
	if err != nil {
		e.t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	out := map[string]string{}
	for u := range w.Updates() {
		if u == nil {
			break
		}
		var j consumer.Job
		if json.Unmarshal(u.Value(), &j) == nil {
			out[j.RequestID] = j.Status
		}
	}
	return out
}

func statusesOf(h []events.StatusEvent) []events.Status {
	out := make([]events.Status, len(h))
	for i, ev := range h {
		out[i] = ev.Status
	}
	return out
}

func reasonsOf(h []events.StatusEvent) string {
	var b strings.Builder
	for _, ev := range h {
		if ev.Reason != "" {
			b.WriteString(string(ev.Reason) + " ")
		}
	}
	return b.String()
}

func equalStatuses(a, b []events.Status) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
