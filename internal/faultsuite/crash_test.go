package faultsuite

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// newRand returns the scenario's random source, seeded from HEAPDEL_FAULTS_SEED
// when set so that a failing run can be replayed, and logs the seed.
func newRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("HEAPDEL_FAULTS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("HEAPDEL_FAULTS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with HEAPDEL_FAULTS_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

// bursts splits cmds into groups of size.
func bursts(cmds []events.Command, size int) [][]events.Command {
	var out [][]events.Command
	for len(cmds) > 0 {
		n := min(size, len(cmds))
		out = append(out, cmds[:n])
		cmds = cmds[n:]
	}
	return out
}

// TestCrash publishes deletion commands in bursts of two full batches and kills
// heapdel with SIGKILL at random moments while a burst is being worked on,
// restarting it each time. Afterwards every request id has exactly one terminal
// status, none is lost, and the users submitted to Heap more than once are
// counted: at most the two batches in flight at each crash, and only across a
// crash.
func TestCrash(t *testing.T) {
	t.Parallel()
	n, kills := scale(3000, 20000), scale(3, 10)
	const burstGap = 3 * time.Second
	// The short run lets a crash land on an idle heapdel when dead incarnations
	// hold every slot of the consumer; the long run waits for the redelivery so
	// that every crash lands on work.
	busyWait := 5 * time.Second
	if long() {
		busyWait = ackWait + 15*time.Second
	}
	rng := newRand(t)
	w := newWorld(t, "crash", heaptest.Options{CompleteAfter: time.Second})
	r := w.replica("heapdel", nil)
	r.start()
	w.follow()

	cmds := commands("crash", n)
	groups := bursts(cmds, 2*batchSize)
	crashAfter := map[int]bool{}
	for _, i := range rng.Perm(len(groups))[:min(kills, len(groups))] {
		crashAfter[i] = true
	}
	start := time.Now()
	crashes := 0
	var published []<-chan error
	for i, g := range groups {
		at := time.Now()
		p := r.current()
		before, usersBefore := accepted(p), w.sim.SubmittedUsers()
		published = append(published, w.publishInBackground(g, 0, 10*time.Minute))
		if crashAfter[i] {
			// A random moment while heapdel works on the burst: soon after it
			// takes commands on, or just after Heap accepted a batch, while
			// heapdel records it (the worst moment).
			var busy bool
			phase := "taking commands"
			if rng.IntN(2) == 0 {
				busy = waitBusy(p, before, busyWait)
				time.Sleep(time.Duration(rng.Int64N(int64(150 * time.Millisecond))))
			} else {
				phase = "recording a batch Heap accepted"
				busy = w.waitHeapAccepts(usersBefore, busyWait)
				time.Sleep(time.Duration(rng.Int64N(int64(20 * time.Millisecond))))
			}
			held := "?"
			if info, err := w.commandConsumer(); err == nil {
				held = strconv.Itoa(info.NumAckPending)
			}
			killed := r.kill()
			r.start()
			crashes++
			state := "busy " + phase
			if !busy {
				state = "idle (waited " + busyWait.String() + " for " + phase + ")"
			}
			t.Logf("kill -9 #%d at %s into the run, burst %d, heapdel %s; %s commands unacknowledged; ready again after %s",
				crashes, killed.Sub(start).Round(time.Millisecond), i, state, held, time.Since(killed).Round(time.Millisecond))
		}
		if i < len(groups)-1 {
			time.Sleep(time.Until(at.Add(burstGap)))
		}
	}
	for _, done := range published {
		waitPublished(t, done, 5*time.Minute)
	}
	terminal, drained := w.waitTerminal(cmds, time.Duration(scale(3, 12))*time.Minute)
	tl := w.check(cmds, kills*2*batchSize)
	t.Logf("FIGURES crash: %d kill -9; all terminal after %s, all acknowledged after %s; %s",
		kills, since(start, terminal), since(start, drained), tl)
	t.Logf("users submitted to Heap more than once: %d (bound %d = %d crashes × 2 batches × %d)",
		tl.dupUsers, kills*2*batchSize, kills, batchSize)
}
