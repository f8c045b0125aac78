package faultsuite

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestReplicas runs three replicas on one NATS and kills one with SIGKILL
// mid-run, without restarting it: the other two finish its work once JetStream
// redelivers it, no user reaches Heap twice outside that crash, and the recheck
// ticks are shared, not multiplied by the replicas.
func TestReplicas(t *testing.T) {
	t.Parallel()
	n := scale(3000, 20000)
	const burstGap = 2 * time.Second
	rng := newRand(t)
	w := newWorld(t, "replicas", heaptest.Options{CompleteAfter: time.Second})
	var rs []*replica
	for i := range 3 {
		r := w.replica(fmt.Sprintf("replica-%d", i), nil)
		r.start()
		rs = append(rs, r)
	}
	w.follow()

	cmds := commands("replicas", n)
	groups := bursts(cmds, 2*batchSize)
	victim := rs[rng.IntN(len(rs))]
	killBurst := len(groups) / 2
	start := time.Now()
	var published []<-chan error
	for i, g := range groups {
		at := time.Now()
		vp := victim.current()
		taken, heapAccepted := accepted(vp), metric(vp, sampleHeapAccept)
		published = append(published, w.publishInBackground(g, 0, 10*time.Minute))
		if i == killBurst {
			// A random moment while the victim holds part of the burst: soon
			// after it takes commands on, or just after Heap accepted its batch,
			// while it records it.
			phase, busy := "taking commands", false
			if rng.IntN(2) == 0 {
				busy = waitBusy(vp, taken, 5*time.Second)
				time.Sleep(time.Duration(rng.Int64N(int64(100 * time.Millisecond))))
			} else {
				phase = "recording a batch Heap accepted"
				busy = waitRise(vp, sampleHeapAccept, heapAccepted, 5*time.Second)
				time.Sleep(time.Duration(rng.Int64N(int64(20 * time.Millisecond))))
			}
			if !busy {
				phase = "idle (waited 5s for " + phase + ")"
			}
			held := "?"
			if info, err := w.commandConsumer(); err == nil {
				held = strconv.Itoa(info.NumAckPending)
			}
			killed := victim.kill()
			t.Logf("kill -9 %s at %s into the run, during burst %d of %d, %s; %s commands unacknowledged then",
				victim.name, killed.Sub(start).Round(time.Millisecond), i, len(groups), phase, held)
		}
		if i < len(groups)-1 {
			time.Sleep(time.Until(at.Add(burstGap)))
		}
	}
	for _, done := range published {
		waitPublished(t, done, 5*time.Minute)
	}
	terminal, drained := w.waitTerminal(cmds, time.Duration(scale(3, 10))*time.Minute)
	for _, r := range rs {
		if p := r.current(); r != victim && p.exited() {
			t.Errorf("%s exited: %v", r.name, p.state)
		}
	}
	tl := w.check(cmds, 2*batchSize)
	// Each Heap deletion request needs one status call, two when the first
	// finds it pending; three replicas each checking would make that 3–6. A
	// request superseded by the crash (Heap accepted it, the victim died before
	// recording its jobs) is asked about at every tick until JetStream
	// redelivers its commands, up to AckWait later.
	const perRequest = 3
	perSuperseded := int(ackWait/time.Second) + 5
	if bound := perRequest*tl.heapRequests + perSuperseded*tl.superseded; tl.statusCalls > bound {
		t.Errorf("rechecks multiplied: %d deletion_status calls for %d Heap deletion requests, %d of them superseded (bound %d = %d per request + %d per superseded one)",
			tl.statusCalls, tl.heapRequests, tl.superseded, bound, perRequest, perSuperseded)
	}
	t.Logf("FIGURES replicas: 3 replicas, 1 killed; all terminal after %s, all acknowledged after %s; %s",
		since(start, terminal), since(start, drained), tl)
}
