package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/clustertest"
)

// The cluster suite runs heapdel replicas on a three-node JetStream cluster with R3
// streams and buckets (internal/clustertest): replicas provisioning at the same
// moment on a fresh cluster, the leaders of its streams and buckets lost and brought
// back while commands flow, and copies of one request id racing across replicas.
// Each checks: nothing lost, no failed, every request id the SPEC sequence
// submitted → processing → complete, and no user submitted to Heap twice (NATS
// nodes die here, heapdel never does). Figures go to the test log;
// HEAPDEL_FAULTS=long runs the long version (docs/operations.md).

// clusterEnv is one cluster test's world: the cluster, the Heap simulator, heapdel
// replicas on their own connections and a downstream subscriber's view of the status
// events, indexed by request id.
type clusterEnv struct {
	t    *testing.T
	c    *clustertest.Cluster
	nc   *nats.Conn
	js   jetstream.JetStream // publishing: async acks time out, so a lost one is retried
	sim  *heaptest.Server
	logs *syncBuffer
	cfg  consumer.Config
	heap heapclient.Config

	mu       sync.Mutex
	svcs     []*consumer.Service
	conns    []*nats.Conn // each replica's
	regs     []*prometheus.Registry
	byID     map[string][]events.StatusEvent // distinct events (by CloudEvents id), in order
	seen     map[string]bool                 // event ids
	terminal atomic.Int64                    // request ids with complete or failed
	failed   []events.StatusEvent
}

func newClusterEnv(t *testing.T, opts clustertest.Options) *clusterEnv {
	t.Helper()
	c := clustertest.Start(t, opts)
	e := &clusterEnv{
		t: t, c: c, logs: &syncBuffer{},
		byID: map[string][]events.StatusEvent{}, seen: map[string]bool{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.logWarnings()
		}
	})
	e.nc = e.connect()
	var err error
	if e.js, err = jetstream.New(e.nc, jetstream.WithPublishAsyncTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	e.sim = heaptest.NewServer(heaptest.Options{})
	t.Cleanup(e.sim.Close)
	e.cfg = fastConfig()
	e.cfg.Replicas = 3
	e.heap = heapclient.Config{
		BaseURL: e.sim.URL, AppID: "sim-app", APIKey: "sim-key",
		Rate: 1000, Burst: 100, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		MaxRetries: 3, RetryBudget: 2 * time.Second, RequestTimeout: 2 * time.Second,
	}
	return e
}

// connect opens a connection to every node of the cluster (nats.go picks one at
// random and fails over to the others).
func (e *clusterEnv) connect() *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// startReplica builds a heapdel replica on its own connection and starts it within
// ctx. It is safe to call from several goroutines (it never fails the test itself);
// a started replica is closed at the end of the test.
func (e *clusterEnv) startReplica(ctx context.Context) (*consumer.Service, error) {
	nc := e.connect()
	reg := prometheus.NewRegistry()
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	hc := e.heap
	hc.Logger, hc.Registerer = log, reg
	heap, err := heapclient.New(hc)
	if err != nil {
		return nil, err
	}
	svc, err := consumer.New(e.cfg, nc, heap, log, reg)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.svcs = append(e.svcs, svc)
	e.conns = append(e.conns, nc)
	e.regs = append(e.regs, reg)
	e.mu.Unlock()
	e.t.Cleanup(func() { e.stop(svc) })
	if err := svc.Start(ctx); err != nil {
		return nil, err
	}
	return svc, nil
}

// stop closes a replica. An asynchronous publish whose ack was lost with a node is
// only given up after the service's publish timeout (30s), and Close waits for it:
// the bound here is above that, and a close that took longer than 10s is logged.
func (e *clusterEnv) stop(svc *consumer.Service) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	began := time.Now()
	if err := svc.Close(ctx); err != nil {
		e.t.Errorf("close: %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		e.t.Logf("a replica took %s to close (publish acks lost with a node)", took.Round(time.Millisecond))
	}
}

// startReplicas starts n replicas at the same moment and returns how long the last
// one took to start. It fails the test when one of them does not start within 60s.
// With first set, one replica provisions alone before the others start together
// (the tests that are not about the provisioning race).
func (e *clusterEnv) startReplicas(n int, first bool) time.Duration {
	e.t.Helper()
	if first {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := e.startReplica(ctx); err != nil {
			e.t.Fatalf("replica 1 did not start: %v", err)
		}
		n--
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	began := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = e.startReplica(ctx) })
	}
	wg.Wait()
	took := time.Since(began)
	for i, err := range errs {
		if err != nil {
			e.t.Fatalf("replica %d of %d did not start: %v", i+1, n, err)
		}
	}
	e.follow()
	return took
}

// logWarnings writes the replicas' warnings and errors to the test log (at most 40
// lines): what a failing test needs to be understood.
func (e *clusterEnv) logWarnings() {
	n := 0
	for line := range strings.Lines(e.logs.String()) {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			if n++; n <= 40 {
				e.t.Log(strings.TrimSpace(line))
			}
		}
	}
	if n > 40 {
		e.t.Logf("... %d warnings and errors in all", n)
	}
}

// follow records every status event, as a downstream subscriber does; an ordered
// consumer resumes after the status stream's leader changes.
func (e *clusterEnv) follow() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := js.OrderedConsumer(ctx, consumer.StreamBase(prefixOf(e.cfg))+"_STATUS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		ev, id, err := events.DecodeStatus(m.Headers(), m.Data())
		if err != nil {
			e.t.Errorf("undecodable status event: %v", err)
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.seen[id] {
			return
		}
		e.seen[id] = true
		h := e.byID[ev.RequestID]
		wasTerminal := hasTerminal(h)
		e.byID[ev.RequestID] = append(h, ev)
		if ev.Status == events.StatusFailed {
			e.failed = append(e.failed, ev)
		}
		if !wasTerminal && (ev.Status == events.StatusComplete || ev.Status == events.StatusFailed) {
			e.terminal.Add(1)
		}
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cc.Stop)
}

func hasTerminal(h []events.StatusEvent) bool {
	for _, ev := range h {
		if ev.Status == events.StatusComplete || ev.Status == events.StatusFailed {
			return true
		}
	}
	return false
}

// publish stores every command in the command stream, retrying what the cluster
// did not acknowledge (a leader lost mid-publish) with the same Nats-Msg-Id, as a
// careful publisher does; lead bounds how far it runs ahead of the terminal
// statuses, so that commands keep flowing for the whole run. It returns the first
// error it could not get past before ctx ended.
func (e *clusterEnv) publish(ctx context.Context, cmds []events.Command, lead int) error {
	const window = 100
	for start := 0; start < len(cmds); start += window {
		for int(e.terminal.Load())+lead < start {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		todo := cmds[start:min(start+window, len(cmds))]
		for wait := 100 * time.Millisecond; len(todo) > 0; wait = min(2*wait, 2*time.Second) {
			var left []events.Command
			var lastErr error
			type sent struct {
				c events.Command
				f jetstream.PubAckFuture
			}
			var futures []sent
			for _, c := range todo {
				m, err := events.NewCommandMsg(prefixOf(e.cfg)+".requested", c, false)
				if err != nil {
					return err
				}
				f, err := e.js.PublishMsgAsync(m, jetstream.WithMsgID("cluster-test-"+c.RequestID))
				if err != nil {
					left, lastErr = append(left, c), err
					continue
				}
				futures = append(futures, sent{c, f})
			}
			for _, s := range futures {
				select {
				case <-s.f.Ok():
				case err := <-s.f.Err():
					left, lastErr = append(left, s.c), err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if todo = left; len(todo) > 0 {
				select {
				case <-ctx.Done():
					return fmt.Errorf("%d commands not stored: %w", len(todo), lastErr)
				case <-time.After(wait):
				}
			}
		}
	}
	return nil
}

// history returns the distinct status events of a request id, in order.
func (e *clusterEnv) history(reqID string) []events.StatusEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]events.StatusEvent(nil), e.byID[reqID]...)
}

// waitAllTerminal waits until every request id has a terminal status, and fails the
// test as soon as one fails.
func (e *clusterEnv) waitAllTerminal(timeout time.Duration, reqIDs []string) {
	e.t.Helper()
	eventually(e.t, timeout, func() string {
		e.mu.Lock()
		if len(e.failed) > 0 {
			f := e.failed[0]
			e.mu.Unlock()
			e.t.Fatalf("%s failed (%s: %s): losing a NATS node must never fail a command", f.RequestID, f.Reason, f.Message)
		}
		e.mu.Unlock()
		missing, first := 0, ""
		for _, id := range reqIDs {
			if !hasTerminal(e.history(id)) {
				if missing == 0 {
					first = id
				}
				missing++
			}
		}
		if missing > 0 {
			return fmt.Sprintf("%d of %d request ids have no terminal status (first: %s, history %v)", missing, len(reqIDs), first, statusesOf(e.history(first)))
		}
		return ""
	})
}

// waitReady waits until every replica reports ready (connected, consumers bound,
// nothing stalled).
func (e *clusterEnv) waitReady(timeout time.Duration) {
	e.t.Helper()
	eventually(e.t, timeout, func() string {
		e.mu.Lock()
		svcs := append([]*consumer.Service(nil), e.svcs...)
		e.mu.Unlock()
		for i, s := range svcs {
			if err := s.Ready(); err != nil {
				return fmt.Sprintf("replica %d not ready: %v", i+1, err)
			}
		}
		return ""
	})
}

// check applies the suite's invariants to the commands and returns the number of
// users Heap received more than once.
func (e *clusterEnv) check(cmds []events.Command) (twice int) {
	e.t.Helper()
	lifetime := []events.Status{events.StatusSubmitted, events.StatusProcessing, events.StatusComplete}
	bad := 0
	for _, c := range cmds {
		h := e.history(c.RequestID)
		if st := statusesOf(h); !equalStatuses(st, lifetime) {
			if bad++; bad <= 10 {
				e.t.Errorf("%s: %v (%s), want %v", c.RequestID, st, reasonsOf(h), lifetime)
			}
			continue
		}
		if d, ok := e.sim.Deletion(h[2].HeapDeletionRequestID); !ok || d.Status != "complete" {
			e.t.Errorf("%s: complete, but Heap reports %q for %s", c.RequestID, d.Status, h[2].HeapDeletionRequestID)
		}
	}
	if bad > 10 {
		e.t.Errorf("... %d request ids in all without the SPEC sequence", bad)
	}
	counts := map[string]int{}
	for _, s := range e.sim.Submissions() {
		for _, u := range s.Users {
			counts[u.Identity]++
		}
	}
	for _, c := range cmds {
		switch n := counts[c.Identity]; {
		case n == 0:
			e.t.Errorf("%s: never submitted to Heap", c.RequestID)
		case n > 1:
			twice++
		}
	}
	return twice
}

// commandCount sums heapdel_commands_total{outcome} over every replica.
func (e *clusterEnv) commandCount(outcome string) (total float64, byReplica []float64) {
	e.t.Helper()
	e.mu.Lock()
	regs := append([]*prometheus.Registry(nil), e.regs...)
	e.mu.Unlock()
	for _, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			e.t.Fatal(err)
		}
		v := 0.0
		for _, mf := range mfs {
			if mf.GetName() != "heapdel_commands_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == outcome {
						v += m.GetCounter().GetValue()
					}
				}
			}
		}
		total += v
		byReplica = append(byReplica, v)
	}
	return total, byReplica
}

// TestClusterProvisioningRace starts replicas at the same moment on a fresh R3
// cluster (one of them also on a cluster that has not elected its meta leader yet):
// every one must start without a restart (provisioning retries with backoff), then
// process a few hundred commands with no failed and each user submitted once.
func TestClusterProvisioningRace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		electing bool
	}{
		{"two replicas", 2, false},
		{"three replicas", 3, false},
		{"three replicas, no meta leader yet", 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newClusterEnv(t, clustertest.Options{NoWait: tc.electing})
			took := e.startReplicas(tc.replicas, false)
			cmds := identityCmds("race", 300)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := e.publish(ctx, cmds, len(cmds)); err != nil {
				t.Fatal(err)
			}
			e.waitAllTerminal(time.Minute, ids(cmds))
			if twice := e.check(cmds); twice > 0 {
				t.Errorf("%d users submitted to Heap twice without a crash", twice)
			}
			t.Logf("%d replicas ready %s after starting together on a fresh R3 cluster (meta leader elected before: %v); %d commands, %d Heap submissions",
				tc.replicas, took.Round(time.Millisecond), !tc.electing, len(cmds), len(e.sim.Submissions()))
		})
	}
}

// fault is one node lost while commands flow: kill picks the node to shut down.
type fault struct {
	name string
	kill func(e *clusterEnv) (int, error)
}

// leaderOf is the fault "the leader of stream is lost".
func leaderOf(stream string) fault {
	return fault{"leader of " + stream, func(e *clusterEnv) (int, error) {
		return e.c.WaitStreamLeader(stream, 30*time.Second)
	}}
}

// consumerLeaderOf is the fault "the leader of a durable consumer is lost".
func consumerLeaderOf(stream, durable string) fault {
	return fault{"leader of consumer " + durable, func(e *clusterEnv) (int, error) {
		leader := -1
		err := pollFor(30*time.Second, func() bool { leader = e.c.ConsumerLeader(stream, durable); return leader >= 0 })
		return leader, err
	}}
}

// connectedNode is the fault "the node replica 1 is connected to is lost".
func connectedNode() fault {
	return fault{"node of replica 1's connection", func(e *clusterEnv) (int, error) {
		e.mu.Lock()
		url := e.conns[0].ConnectedUrl()
		e.mu.Unlock()
		for i := range e.c.Nodes() {
			if e.c.URL(i) == url {
				return i, nil
			}
		}
		return -1, fmt.Errorf("replica 1 is connected to %q, no node of the cluster", url)
	}}
}

func pollFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return nil
}

// faultFigures are what one fault cost.
type faultFigures struct {
	name      string
	node      string
	failover  time.Duration // node down → its stream has a leader again (0 when n/a)
	resumed   time.Duration // node down → a further batch of commands complete
	rejoined  time.Duration // node restarted → every node healthy
	completes int64         // terminal request ids when the node went down
}

// runFaults publishes cmds while replicas process them and, at even steps of
// progress, loses a node chosen by each fault, waits until work resumes without it,
// and brings it back. With rolling set it then restarts every node in turn. It
// returns the figures of each fault.
func (e *clusterEnv) runFaults(cmds []events.Command, faults []fault, rolling bool, timeout time.Duration) []faultFigures {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	published := make(chan error, 1)
	go func() { published <- e.publish(ctx, cmds, 4*e.cfg.BatchSize) }()

	steps := len(faults)
	if rolling {
		steps += e.c.Nodes()
	}
	var figs []faultFigures
	lose := func(name string, node int, stream string) {
		at := int64(len(cmds) * (len(figs) + 1) / (steps + 1))
		if err := pollFor(timeout, func() bool { return e.terminal.Load() >= at }); err != nil {
			e.t.Fatalf("before losing the %s: %d of %d commands terminal: %v", name, e.terminal.Load(), len(cmds), err)
		}
		f := faultFigures{name: name, node: e.c.Name(node), completes: e.terminal.Load()}
		down := time.Now()
		e.c.Shutdown(node)
		if stream != "" {
			if _, err := e.c.WaitStreamLeader(stream, time.Minute); err != nil {
				e.t.Fatalf("%s: %v", name, err)
			}
			f.failover = time.Since(down)
		}
		// Work resumes without the node: a further batch completes (or everything did).
		target := min(f.completes+int64(e.cfg.BatchSize), int64(len(cmds)))
		if err := pollFor(timeout, func() bool { return e.terminal.Load() >= target }); err != nil {
			e.t.Fatalf("%s: work did not resume without node %s (%d of %d terminal)", name, f.node, e.terminal.Load(), len(cmds))
		}
		f.resumed = time.Since(down)
		back := time.Now()
		e.c.Restart(node)
		if err := e.c.WaitHealthy(2 * time.Minute); err != nil {
			e.t.Fatalf("%s: node %s back: %v", name, f.node, err)
		}
		f.rejoined = time.Since(back)
		figs = append(figs, f)
	}
	for _, fl := range faults {
		node, err := fl.kill(e)
		if err != nil {
			e.t.Fatalf("%s: %v", fl.name, err)
		}
		stream := ""
		if s, ok := strings.CutPrefix(fl.name, "leader of "); ok && !strings.HasPrefix(s, "consumer ") {
			stream = s
		}
		lose(fl.name, node, stream)
	}
	if rolling {
		for i := range e.c.Nodes() {
			lose("rolling restart", i, "")
		}
	}
	if err := <-published; err != nil {
		e.t.Fatalf("publish: %v", err)
	}
	e.waitAllTerminal(timeout, ids(cmds))
	e.waitReady(time.Minute)
	return figs
}

// TestClusterLeaderLost loses the command stream's leader while commands flow and
// brings it back: nothing lost, no failed, every request id complete in the SPEC
// sequence, no user submitted twice. HEAPDEL_FAULTS=long runs 20,000 commands
// through the loss of the leader of every stream, bucket and durable consumer, of
// the node a replica is connected to, and a rolling restart of all three nodes.
func TestClusterLeaderLost(t *testing.T) {
	n, replicas, timeout := 600, 2, 2*time.Minute
	faults := []fault{leaderOf("HEAP_DELETION")}
	rolling := false
	if os.Getenv("HEAPDEL_FAULTS") == "long" {
		n, replicas, timeout, rolling = 20000, 3, 20*time.Minute, true
		faults = []fault{
			leaderOf("HEAP_DELETION"),
			consumerLeaderOf("HEAP_DELETION", "heapdel"),
			leaderOf("HEAP_DELETION_STATUS"),
			leaderOf("KV_HEAP_DELETION_JOBS"),
			leaderOf("KV_HEAP_DELETION_REQUESTS"),
			leaderOf("HEAP_DELETION_SCHEDULE"),
			connectedNode(),
		}
	}
	e := newClusterEnv(t, clustertest.Options{})
	e.startReplicas(replicas, true)
	cmds := identityCmds("lost", n)
	began := time.Now()
	figs := e.runFaults(cmds, faults, rolling, timeout)
	twice := e.check(cmds)
	if twice > 0 {
		t.Errorf("%d users submitted to Heap twice: heapdel never crashed, only NATS nodes did", twice)
	}
	for _, f := range figs {
		t.Logf("lost %s (node %s) at %d/%d terminal: new leader in %s, work resumed in %s, node back and healthy in %s",
			f.name, f.node, f.completes, n, f.failover.Round(time.Millisecond), f.resumed.Round(time.Millisecond), f.rejoined.Round(time.Millisecond))
	}
	t.Logf("%d commands, %d replicas, %d node losses: %d Heap submissions, %d users submitted twice, %s",
		n, replicas, len(figs), len(e.sim.Submissions()), twice, time.Since(began).Round(time.Second))
}

// TestClusterDuplicatesRace publishes many copies of a few request ids at once to
// three replicas on R3: each request id is submitted to Heap once and completes in
// the SPEC sequence, every other copy counts as a duplicate, and the replicas'
// compare-and-set conflicts (R3 answers 10164 for a write racing another in flight)
// are handled as conflicts, never as store failures.
func TestClusterDuplicatesRace(t *testing.T) {
	const nIDs, copies = 10, 40
	e := newClusterEnv(t, clustertest.Options{})
	e.startReplicas(3, true)
	cmds := identityCmds("dup", nIDs)
	// Interleaved copies, published from several goroutines without waiting, so that
	// copies of one request id land in different replicas' batches.
	var all []events.Command
	for range copies {
		all = append(all, cmds...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for g := range errs {
		wg.Go(func() {
			var futures []jetstream.PubAckFuture
			for i := g; i < len(all); i += len(errs) {
				m, err := events.NewCommandMsg(prefixOf(e.cfg)+".requested", all[i], false)
				if err != nil {
					errs[g] = err
					return
				}
				f, err := e.js.PublishMsgAsync(m)
				if err != nil {
					errs[g] = err
					return
				}
				futures = append(futures, f)
			}
			for _, f := range futures {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					errs[g] = err
					return
				case <-ctx.Done():
					errs[g] = ctx.Err()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	e.waitAllTerminal(time.Minute, cmdIDs(cmds))
	// Every copy is taken: the work queue empties.
	eventually(t, time.Minute, func() string {
		accepted, _ := e.commandCount("accepted")
		dups, _ := e.commandCount("duplicate")
		if got := int(accepted + dups); got < len(all) {
			return fmt.Sprintf("%d of %d copies taken (%v accepted, %v duplicates)", got, len(all), accepted, dups)
		}
		return ""
	})
	accepted, acceptedBy := e.commandCount("accepted")
	dups, dupsBy := e.commandCount("duplicate")
	if accepted != nIDs || dups != nIDs*(copies-1) {
		t.Errorf("%v accepted, %v duplicates; want %d and %d", accepted, dups, nIDs, nIDs*(copies-1))
	}
	if twice := e.check(cmds); twice > 0 {
		t.Errorf("%d request ids submitted to Heap more than once", twice)
	}
	if n := e.sim.SubmittedUsers(); n != nIDs {
		t.Errorf("Heap received %d users, want %d", n, nIDs)
	}
	for _, s := range []string{"job store refused a write", "wrong last sequence"} {
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("a compare-and-set conflict was taken for a store failure: log has %q", s)
		}
	}
	t.Logf("%d request ids x %d copies on 3 replicas: accepted by replica %v, duplicates by replica %v; %d Heap submissions",
		nIDs, copies, acceptedBy, dupsBy, len(e.sim.Submissions()))
}

func cmdIDs(cmds []events.Command) []string {
	out := ids(cmds)
	sort.Strings(out)
	return out
}
