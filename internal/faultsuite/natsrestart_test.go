package faultsuite

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestNATSRestart shuts the JetStream server down in the middle of a run and
// starts a new one on the same port and store: heapdel, left running, reports the
// outage on /readyz, reconnects on its own, and loses nothing.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	n := scale(3000, 20000)
	const outage = 3 * time.Second
	w := newWorld(t, "nats-restart", heaptest.Options{CompleteAfter: time.Second})
	r := w.replica("heapdel", nil)
	p := r.start()
	w.follow()

	cmds := commands("restart", n)
	start := time.Now()
	// Heap takes a second for the first submissions, so that the server stops
	// while a batch is at Heap: Heap accepts it during the outage, and heapdel
	// must record it once NATS is back. The publisher keeps publishing through
	// the outage.
	w.sim.Script(heaptest.Fault{Endpoint: heaptest.EndpointUserDeletion, Latency: time.Second, Count: 6})
	published := w.publishInBackground(cmds, n/5, 5*time.Minute)
	deadline := time.Now().Add(time.Minute)
	for len(w.sim.Submissions()) < 1 || w.sim.Requests(heaptest.EndpointUserDeletion) == len(w.sim.Submissions()) {
		if time.Now().After(deadline) {
			t.Fatalf("no Heap submission in flight within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}

	down := time.Now()
	w.stopNATS()
	stopped := time.Now()
	// /readyz turns false, and stays false for the whole outage.
	var notReadyAfter time.Duration
	var body string
	for {
		code, b := readyz(p.addr)
		if code == http.StatusServiceUnavailable {
			notReadyAfter, body = time.Since(stopped), b
			break
		}
		if code == 0 || time.Since(stopped) > 10*time.Second {
			t.Fatalf("/readyz after the NATS server stopped: %d %q, want 503 within 10s", code, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	polls := 0
	for time.Since(stopped) < outage {
		if code, b := readyz(p.addr); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz during the NATS outage: %d %q, want 503", code, b)
		}
		polls++
		time.Sleep(100 * time.Millisecond)
	}
	w.startNATS()
	restarted := time.Now()
	var readyAfter time.Duration
	for {
		if code, _ := readyz(p.addr); code == http.StatusOK {
			readyAfter = time.Since(restarted)
			break
		}
		if p.exited() {
			t.Fatalf("heapdel exited during the NATS outage: %v", p.state)
		}
		if time.Since(restarted) > 30*time.Second {
			t.Fatalf("/readyz not true 30s after NATS came back: heapdel did not reconnect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Work caught in the outage may go to Heap again once NATS is back.
	w.addWindow("NATS outage", down, time.Now().Add(2*time.Second))

	waitPublished(t, published, 5*time.Minute)
	terminal, drained := w.waitTerminal(cmds, time.Duration(scale(3, 10))*time.Minute)
	if p.exited() {
		t.Errorf("heapdel exited: %v", p.state)
	}
	tl := w.check(cmds, 2*batchSize)
	logs := w.grepLogs(20, "NATS disconnected", "NATS reconnected")
	if !strings.Contains(strings.Join(logs, "\n"), "NATS reconnected") {
		t.Errorf("heapdel logged no reconnection: %q", logs)
	}
	t.Logf("heapdel's own count: %.0f commands accepted, %.0f duplicates settled, %.0f redeliveries",
		accepted(p), metric(p, `heapdel_commands_total{outcome="duplicate"}`), metric(p, "heapdel_commands_redelivered_total"))
	t.Logf("/readyz said %q %s after the server stopped; stayed 503 over %d polls in the %s outage; true %s after the new server started",
		body, notReadyAfter.Round(time.Millisecond), polls, outage, readyAfter.Round(time.Millisecond))
	t.Logf("FIGURES nats-restart: %s outage; all terminal after %s, all acknowledged after %s; %s",
		outage, since(start, terminal), since(start, drained), tl)
}
