package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/embedded"
	"github.com/heapdel/heapdel/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server keeps a few process-wide goroutines after Shutdown.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// natsServer starts a real embedded JetStream server for one test.
func natsServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Options{Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func connect(t *testing.T, srv *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.Buffer

// env is one test's world: NATS, the Heap simulator, and heapdel replicas.
type env struct {
	t    *testing.T
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	sim  *heaptest.Server
	logs *syncBuffer
	cfg  consumer.Config
	heap heapclient.Config

	mu     sync.Mutex
	regs   []*prometheus.Registry
	events []received
	ids    map[string]bool
}

type received struct {
	ev events.StatusEvent
	id string
}

func fastConfig() consumer.Config {
	return consumer.Config{
		BatchSize:       100,
		BatchWait:       50 * time.Millisecond,
		RecheckInterval: time.Second,
		PollMaxInterval: 2 * time.Second,
		Provision:       true,
		HashKey:         []byte("test-hash-key"),
		AckWait:         5 * time.Second,
		RetryDelay:      100 * time.Millisecond,
	}
}

func newEnv(t *testing.T, simOpts heaptest.Options, mutate func(*consumer.Config)) *env {
	t.Helper()
	srv := natsServer(t, t.TempDir())
	e := &env{t: t, srv: srv, logs: &syncBuffer{}, ids: map[string]bool{}}
	e.nc = connect(t, srv)
	var err error
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	e.sim = heaptest.NewServer(simOpts)
	t.Cleanup(e.sim.Close)
	e.cfg = fastConfig()
	if mutate != nil {
		mutate(&e.cfg)
	}
	e.heap = heapclient.Config{
		BaseURL: e.sim.URL, AppID: "sim-app", APIKey: "sim-key",
		Rate: 1000, Burst: 100, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		MaxRetries: 3, RetryBudget: 2 * time.Second, RequestTimeout: 2 * time.Second,
	}
	return e
}

// replica starts one heapdel service on its own NATS connection.
func (e *env) replica(mutate func(*heapclient.Config)) *consumer.Service {
	e.t.Helper()
	hc := e.heap
	if mutate != nil {
		mutate(&hc)
	}
	log := zerolog.New(e.logs).Level(zerolog.DebugLevel)
	hc.Logger = log
	nc := connect(e.t, e.srv)
	reg := prometheus.NewRegistry()
	hc.Registerer = reg
	heap, err := heapclient.New(hc)
	if err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.regs = append(e.regs, reg)
	e.mu.Unlock()
	svc, err := consumer.New(e.cfg, nc, heap, log, reg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { stop(e.t, svc) })
	e.followStatus()
	return svc
}

func stop(t *testing.T, svc *consumer.Service) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

var followOnce sync.Map

// followStatus records every status event, as a downstream subscriber would.
func (e *env) followStatus() {
	if _, loaded := followOnce.LoadOrStore(e, true); loaded {
		return
	}
	e.t.Cleanup(func() { followOnce.Delete(e) })
	ctx := context.Background()
	stream := consumer.StreamBase(prefixOf(e.cfg)) + "_STATUS"
	c, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
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
		e.events = append(e.events, received{ev, id})
		e.mu.Unlock()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cc.Stop)
}

func prefixOf(c consumer.Config) string {
	if c.Prefix == "" {
		return "heap.deletion"
	}
	return c.Prefix
}

// publish sends commands (binary mode unless structured), waits for the stream's
// acks and returns the commands' stream sequences, which status event ids depend on.
func (e *env) publish(structured bool, cmds ...events.Command) []uint64 {
	e.t.Helper()
	seqs := make([]uint64, len(cmds))
	for i, c := range cmds {
		m, err := events.NewCommandMsg(prefixOf(e.cfg)+".requested", c, structured)
		if err != nil {
			e.t.Fatal(err)
		}
		seqs[i] = e.publishMsg(m)
	}
	return seqs
}

// publishMsg publishes m and returns its stream sequence.
func (e *env) publishMsg(m *nats.Msg) uint64 {
	e.t.Helper()
	ack, err := e.js.PublishMsg(context.Background(), m)
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// publishAsync publishes commands without waiting for each ack, then waits for all
// of them and returns the commands' stream sequences by request id.
func (e *env) publishAsync(cmds []events.Command) map[string]uint64 {
	e.t.Helper()
	futures := make([]jetstream.PubAckFuture, len(cmds))
	for i, c := range cmds {
		m, err := events.NewCommandMsg(prefixOf(e.cfg)+".requested", c, false)
		if err != nil {
			e.t.Fatal(err)
		}
		futures[i] = e.publishAsyncMsg(m)
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		e.t.Fatal("publish acks did not arrive")
	}
	seqs := make(map[string]uint64, len(cmds))
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			seqs[cmds[i].RequestID] = ack.Sequence
		case err := <-f.Err():
			e.t.Fatalf("publish %s: %v", cmds[i].RequestID, err)
		}
	}
	return seqs
}

// publishAsyncMsg publishes without waiting for the ack; when too many acks are
// outstanding (a loaded machine), it waits for them and tries again, as a producer would.
func (e *env) publishAsyncMsg(m *nats.Msg) jetstream.PubAckFuture {
	e.t.Helper()
	for {
		f, err := e.js.PublishMsgAsync(m)
		if err == nil {
			return f
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			e.t.Fatal(err)
		}
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			e.t.Fatal("publish acks did not arrive")
		}
	}
}

// history returns the distinct status events seen for a request id, in order.
func (e *env) history(reqID string) []events.StatusEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []events.StatusEvent
	seen := map[string]bool{}
	for _, r := range e.events {
		if r.ev.RequestID == reqID && !seen[r.id] {
			seen[r.id] = true
			out = append(out, r.ev)
		}
	}
	return out
}

func (e *env) statuses(reqID string) []events.Status {
	var out []events.Status
	for _, ev := range e.history(reqID) {
		out = append(out, ev.Status)
	}
	return out
}

// terminal is the request id's last terminal status, or "".
func (e *env) terminal(reqID string) events.Status {
	h := e.history(reqID)
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Status == events.StatusComplete || h[i].Status == events.StatusFailed {
			return h[i].Status
		}
	}
	return ""
}

// waitTerminal waits until every request id has a terminal status.
func (e *env) waitTerminal(timeout time.Duration, reqIDs ...string) {
	e.t.Helper()
	eventually(e.t, timeout, func() string {
		missing := 0
		first := ""
		for _, id := range reqIDs {
			if e.terminal(id) == "" {
				if missing == 0 {
					first = id
				}
				missing++
			}
		}
		if missing > 0 {
			return fmt.Sprintf("%d of %d request ids have no terminal status (first: %s, history %v)", missing, len(reqIDs), first, e.statuses(first))
		}
		return ""
	})
}

func (e *env) allEvents() []received {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]received(nil), e.events...)
}

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func identityCmds(prefix string, n int) []events.Command {
	out := make([]events.Command, n)
	for i := range out {
		out[i] = events.Command{
			RequestID: fmt.Sprintf("%s-%05d", prefix, i),
			Identity:  fmt.Sprintf("%s-person-%05d@example.com", prefix, i),
		}
	}
	return out
}

func ids(cmds []events.Command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.RequestID
	}
	return out
}
