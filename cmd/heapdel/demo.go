package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// demoOptions are the knobs of `heapdel demo`.
type demoOptions struct {
	count         int
	completeAfter time.Duration
	keepRunning   bool
	httpAddr      string
	batchSize     int
	timeout       time.Duration
	natsPort      int
	logLevel      string
}

func cmdDemo(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("demo [flags]", "Runs everything in one process: an embedded NATS JetStream server, the Heap simulator,\nthe heapdel service and sample traffic (unique commands, some duplicated, a few invalid).\nShows live progress, then a tally per status. Nothing leaves this machine.", stdout)
	o := demoOptions{}
	fs.IntVar(&o.count, "count", 1000, "deletion commands to publish (about 3% are duplicates and 1% invalid)")
	fs.DurationVar(&o.completeAfter, "complete-after", 3*time.Second, "how long the simulated Heap keeps a deletion pending")
	fs.BoolVar(&o.keepRunning, "keep-running", false, "stay up after the tally (Ctrl-C to stop), to explore /metrics or publish more")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9090", "address of /metrics, /healthz and /readyz")
	fs.IntVar(&o.batchSize, "batch-size", 100, "users per Heap request")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up when the run has not finished by then")
	fs.IntVar(&o.natsPort, "nats-port", 4222, "port of the embedded NATS server (-1: any free port)")
	fs.StringVar(&o.logLevel, "log-level", "error", "service log level (logs go to stderr): debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.count < 1 {
		fmt.Fprintln(stderr, "heapdel demo: --count must be at least 1")
		return exitCode(2)
	}
	return demo(ctx, o, stdout, stderr)
}

func demo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "heapdel-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	sim := heaptest.NewServer(heaptest.Options{CompleteAfter: o.completeAfter})
	defer sim.Close()

	cfg := config.Default()
	cfg.DataDir = dir
	cfg.HeapAppID, cfg.HeapAPIKey, cfg.HeapBaseURL = "sim-app", "sim-key", sim.URL
	cfg.BatchSize = o.batchSize
	cfg.BatchWait = 200 * time.Millisecond
	cfg.HeapRate, cfg.HeapBurst = 50, 10
	cfg.RecheckInterval, cfg.PollMaxInterval = time.Second, 2*time.Second
	cfg.HTTPAddr = o.httpAddr
	cfg.LogLevel, cfg.LogFormat = o.logLevel, "console"
	cfg.ShutdownTimeout = 10 * time.Second
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := newLogger(cfg, stderr)

	fmt.Fprintf(stdout, "heapdel demo: embedded NATS, Heap simulator at %s, %d commands\n", sim.URL, o.count)
	a, err := start(ctx, cfg, log, appOptions{embeddedPort: o.natsPort})
	if err != nil {
		return fmt.Errorf("%w\n(the demo takes no HEAPDEL_* settings: if port 4222 or 9090 is taken, run it with --nats-port -1 --http-addr 127.0.0.1:0)", err)
	}
	defer func() { _ = a.close() }()

	tally := newTally()
	stopWatch, err := watchStatus(ctx, a.nc, cfg.StatusStreamName(), tally)
	if err != nil {
		return err
	}
	defer stopWatch()

	traffic := demoTraffic(o.count)
	js, err := jetstream.New(a.nc)
	if err != nil {
		return err
	}
	if err := publishAll(ctx, js, traffic.msgs); err != nil {
		return fmt.Errorf("publish sample traffic: %w", err)
	}
	fmt.Fprintf(stdout, "published %d commands: %d unique deletions, %d duplicates, %d invalid (one of them not a CloudEvent at all)\n",
		len(traffic.msgs), len(traffic.msgs)-traffic.duplicates-traffic.invalid, traffic.duplicates, traffic.invalid)

	deadline := time.After(o.timeout)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	live := isTerminal(stdout)
	lastLine := time.Time{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout)
			return nil
		case <-deadline:
			fmt.Fprintln(stdout)
			printTally(stdout, tally, sim.Sim, a.httpAddr)
			return fmt.Errorf("demo did not finish within %s (see the tally above)", o.timeout)
		case <-tick.C:
		}
		terminal := tally.terminal(traffic.expect)
		done = terminal == len(traffic.expect)
		if live || done || time.Since(lastLine) >= 2*time.Second {
			line := progressLine(len(traffic.msgs), tally, sim.Sim, terminal, len(traffic.expect))
			if live {
				fmt.Fprintf(stdout, "\r\033[K%s", line)
			} else {
				fmt.Fprintln(stdout, line)
			}
			lastLine = time.Now()
		}
	}
	if live {
		fmt.Fprintln(stdout)
	}
	printTally(stdout, tally, sim.Sim, a.httpAddr)
	if !o.keepRunning {
		fmt.Fprintln(stdout, "(run with --keep-running to keep NATS, the simulator and /metrics up for exploring)")
	}
	if bad := tally.unexpected(traffic.expect); bad != "" {
		return fmt.Errorf("demo finished with unexpected outcomes: %s", bad)
	}
	if o.keepRunning {
		fmt.Fprintf(stdout, "\nStill running (Ctrl-C to stop). NATS: %s  metrics: http://%s/metrics\n", a.nc.ConnectedUrl(), a.httpAddr)
		fmt.Fprintf(stdout, "Try: go run ./cmd/heapdel publish --nats-url %s --request-id dsr-1 --identity someone@example.com\n", a.nc.ConnectedUrl())
		<-ctx.Done()
	}
	return nil
}

// sampleTraffic is the demo's commands and the terminal status each request id must reach.
type sampleTraffic struct {
	msgs       []*nats.Msg
	expect     map[string]events.Status
	duplicates int
	invalid    int
}

func demoTraffic(n int) sampleTraffic {
	t := sampleTraffic{expect: map[string]events.Status{}}
	subject := "heap.deletion.requested"
	invalidEvery, dupEvery := 100, 25
	for i := 1; i <= n; i++ {
		reqID := fmt.Sprintf("demo-%06d", i)
		switch {
		case i%invalidEvery == 0:
			// Invalid: both an identity and a user id. Its request id is readable.
			m := nats.NewMsg(subject)
			m.Header.Set("ce-specversion", "1.0")
			m.Header.Set("ce-id", reqID)
			m.Header.Set("ce-source", "heapdel-demo")
			m.Header.Set("ce-type", "heap.deletion.requested")
			m.Header.Set("content-type", "application/json")
			m.Data = fmt.Appendf(nil, `{"request_id":%q,"identity":"person-%d@example.com","user_id":%d}`, reqID, i, i)
			t.msgs = append(t.msgs, m)
			t.expect[reqID] = events.StatusFailed
			t.invalid++
			continue
		case i%dupEvery == 0 && i > 1:
			// A duplicate of the previous command: no second Heap submission.
			prev := fmt.Sprintf("demo-%06d", i-1)
			m, _ := events.NewCommandMsg(subject, events.Command{RequestID: prev, Identity: fmt.Sprintf("person-%d@example.com", i-1)}, i%2 == 0)
			t.msgs = append(t.msgs, m)
			t.duplicates++
			continue
		}
		c := events.Command{RequestID: reqID, Identity: fmt.Sprintf("person-%d@example.com", i), Source: "heapdel-demo"}
		if i%3 == 0 {
			c.Identity, c.UserID = "", uint64(8_512_376_125_342_183+i)
		}
		m, _ := events.NewCommandMsg(subject, c, i%2 == 0)
		t.msgs = append(t.msgs, m)
		t.expect[reqID] = events.StatusComplete
	}
	// One message that is not a CloudEvent at all: only a metric and a log line.
	bad := nats.NewMsg(subject)
	bad.Data = []byte("this is not a cloudevent")
	t.msgs = append(t.msgs, bad)
	t.invalid++
	return t
}

func publishAll(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := publishAsync(ctx, js, m)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publishAsync publishes without waiting for the ack. When too many acks are
// outstanding it waits for them and tries again, as a well-behaved producer does.
func publishAsync(ctx context.Context, js jetstream.JetStream, m *nats.Msg) (jetstream.PubAckFuture, error) {
	for {
		f, err := js.PublishMsgAsync(m)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return f, err
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tally counts status events per status and remembers each request id's latest.
type tally struct {
	mu     sync.Mutex
	counts map[events.Status]int
	last   map[string]events.Status
	ids    map[string]bool
}

func newTally() *tally {
	return &tally{counts: map[events.Status]int{}, last: map[string]events.Status{}, ids: map[string]bool{}}
}

func (t *tally) add(ev events.StatusEvent, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ids[id] {
		return // a re-published transition: same id, counted once
	}
	t.ids[id] = true
	t.counts[ev.Status]++
	if cur := t.last[ev.RequestID]; cur != events.StatusComplete && cur != events.StatusFailed {
		t.last[ev.RequestID] = ev.Status
	}
}

func (t *tally) terminal(expect map[string]events.Status) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for id := range expect {
		if st := t.last[id]; st == events.StatusComplete || st == events.StatusFailed {
			n++
		}
	}
	return n
}

func (t *tally) unexpected(expect map[string]events.Status) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var bad []string
	for id, want := range expect {
		if got := t.last[id]; got != want {
			bad = append(bad, fmt.Sprintf("%s: %s, want %s", id, got, want))
		}
	}
	sort.Strings(bad)
	if len(bad) > 5 {
		bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
	}
	return strings.Join(bad, "; ")
}

func (t *tally) get(st events.Status) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[st]
}

// watchStatus follows the status stream from its start with an ordered consumer.
func watchStatus(ctx context.Context, nc *nats.Conn, stream string, t *tally) (func(), error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", stream, err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		ev, id, err := events.DecodeStatus(m.Headers(), m.Data())
		if err == nil {
			t.add(ev, id)
		}
	})
	if err != nil {
		return nil, err
	}
	return cc.Stop, nil
}

func progressLine(published int, t *tally, sim *heaptest.Sim, terminal, expected int) string {
	return fmt.Sprintf("commands in %d | submitted %d | processing %d | complete %d | failed %d | Heap calls: %d submit, %d status | done %d/%d",
		published, t.get(events.StatusSubmitted), t.get(events.StatusProcessing), t.get(events.StatusComplete),
		t.get(events.StatusFailed), sim.Requests("user_deletion"), sim.Requests("deletion_status"), terminal, expected)
}

func printTally(w io.Writer, t *tally, sim *heaptest.Sim, httpAddr string) {
	fmt.Fprintln(w, "\nTally (status events, each counted once):")
	for _, st := range []events.Status{events.StatusSubmitted, events.StatusProcessing, events.StatusComplete, events.StatusFailed} {
		fmt.Fprintf(w, "  %-11s %6d\n", st, t.get(st))
	}
	fmt.Fprintf(w, "Heap simulator: %d token fetches, %d deletion requests (%d users), %d status checks\n",
		sim.Requests("auth_token"), sim.Requests("user_deletion"), sim.SubmittedUsers(), sim.Requests("deletion_status"))
	fmt.Fprintf(w, "Metrics: http://%s/metrics (heapdel_commands_total, heapdel_status_events_total, ...)\n", httpAddr)
}
