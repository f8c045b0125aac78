package faultsuite

import (
	"strings"
	"testing"
	"time"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestShutdownMidBatch sends SIGTERM while a full batch is at a slow Heap.
// heapdel stops taking work, finishes (or, past HEAPDEL_SHUTDOWN_TIMEOUT,
// abandons and releases) what it holds, and exits within the bound; started
// again, it completes everything, and no user reaches Heap twice beyond the batch
// in flight.
func TestShutdownMidBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		latency time.Duration // of every user_deletion call until the restart
		// status is the exit status: 0 when everything held was finished within
		// the bound, 1 when the bound cut the shutdown short (app.close).
		status int
		// finished: the batch at Heap when SIGTERM came was accepted before exit.
		finished bool
	}{
		{"batch finishes within the bound", 2 * time.Second, 0, true},
		{"Heap slower than the bound", shutdownTimeout + 5*time.Second, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := scale(1500, 5000)
			w := newWorld(t, "shutdown-"+strings.ReplaceAll(tc.name, " ", "-"), heaptest.Options{CompleteAfter: time.Second})
			w.sim.Script(heaptest.Fault{Endpoint: heaptest.EndpointUserDeletion, Latency: tc.latency})
			// Batches must close by size, never by time: the batch at Heap at
			// SIGTERM is then a full one whatever the machine's load. With the
			// harness's 100ms a starved replica closed its first batch before
			// all 500 commands had been pulled. The backlog is whole batches, so
			// only the tail left after the restart waits.
			r := w.replica("heapdel", map[string]string{"HEAPDEL_BATCH_WAIT": "10s"})
			// A first run provisions the streams and stops at once, idle; the
			// commands wait as a backlog, so that the next run's first batch is
			// full.
			r.start()
			w.follow()
			if took, st := r.terminate(shutdownTimeout + 30*time.Second); st == nil || st.ExitCode() != 0 || took > shutdownTimeout/2 {
				t.Errorf("idle heapdel: %v %s after SIGTERM, want exit status 0 at once", st, took.Round(time.Millisecond))
			}
			cmds := commands("shutdown", n)
			start := time.Now()
			if err := w.publish(t.Context(), cmds, 0); err != nil {
				t.Fatal(err)
			}
			r.start()
			deadline := time.Now().Add(30 * time.Second)
			for w.sim.Requests(heaptest.EndpointUserDeletion) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no batch reached Heap within 30s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			atHeap := w.sim.Requests(heaptest.EndpointUserDeletion) - len(w.sim.Submissions())
			// The bound is HEAPDEL_SHUTDOWN_TIMEOUT for the pipeline, plus a
			// little for draining the NATS connection and the HTTP server.
			const slack = 3 * time.Second
			took, st := r.terminate(shutdownTimeout + 30*time.Second)
			acceptedBefore := len(w.sim.Submissions())
			if st == nil {
				t.Fatalf("heapdel still running %s after SIGTERM (HEAPDEL_SHUTDOWN_TIMEOUT=%s)", took.Round(time.Millisecond), shutdownTimeout)
			}
			status := st.ExitCode()
			if !st.Exited() || status != tc.status {
				t.Errorf("heapdel ended with %v after SIGTERM, want exit status %d", st, tc.status)
			}
			if took > shutdownTimeout+slack {
				t.Errorf("heapdel took %s to exit after SIGTERM, beyond HEAPDEL_SHUTDOWN_TIMEOUT=%s (+%s)", took.Round(time.Millisecond), shutdownTimeout, slack)
			}
			bound := w.grepLogs(5, "shutdown bound reached")
			if tc.finished != (len(bound) == 0) {
				t.Errorf("shutdown bound reached: %q, want %v", bound, !tc.finished)
			}
			if lines := w.grepLogs(5, "heapdel stopped"); len(lines) == 0 {
				t.Errorf("heapdel did not log that it stopped")
			}
			subs := w.sim.Submissions()
			switch {
			case tc.finished && (len(subs) == 0 || len(subs[0].Users) != batchSize):
				t.Errorf("the batch at Heap at SIGTERM was not a full batch of %d that Heap accepted (%d submissions)", batchSize, len(subs))
			case !tc.finished && len(subs) != 0:
				t.Errorf("Heap accepted %d deletion requests although every call outlasted the shutdown", len(subs))
			}

			w.sim.ClearFaults()
			r.start()
			terminal, drained := w.waitTerminal(cmds, time.Duration(scale(2, 5))*time.Minute)
			tl := w.check(cmds, batchSize)
			t.Logf("SIGTERM with %d user_deletion call(s) at Heap (latency %s): exit status %d after %s; %d deletion requests accepted by then",
				atHeap, tc.latency, status, took.Round(time.Millisecond), acceptedBefore)
			t.Logf("FIGURES shutdown (%s): all terminal after %s, all acknowledged after %s; %s",
				tc.name, since(start, terminal), since(start, drained), tl)
		})
	}
}
