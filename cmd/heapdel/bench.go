package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/clustertest"
	"github.com/heapdel/heapdel/internal/embedded"
)

type benchOptions struct {
	mode      string
	count     int
	batchSize int
	batchWait time.Duration
	rate      int
	asJSON    bool
	requests  int
	users     int
	progress  io.Writer
	inProcess bool
	heapProf  string // write an in-use heap profile half way through
	memLimit  string // GOMEMLIMIT of the service process

	cluster    bool // run on a three-node cluster, once with R1 streams and once with R3
	syncAlways bool // the servers sync every write before acknowledging it
	replicas   int  // HEAPDEL_STREAM_REPLICAS of this run; 0 leaves the default (1)
}

// benchResult is what `heapdel bench` prints; --json gives it as is.
type benchResult struct {
	Mode           string  `json:"mode"`
	Commands       int     `json:"commands"`
	BatchSize      int     `json:"batch_size"`
	BatchWaitMS    float64 `json:"batch_wait_ms"`
	OfferedRate    int     `json:"offered_rate,omitempty"`
	Seconds        float64 `json:"seconds"`
	Throughput     float64 `json:"commands_per_second"`
	LatencyP50MS   float64 `json:"latency_p50_ms"`
	LatencyP99MS   float64 `json:"latency_p99_ms"`
	LatencyMaxMS   float64 `json:"latency_max_ms"`
	HeapRequests   int     `json:"heap_requests"`
	HeapPer10k     float64 `json:"heap_requests_per_10k"`
	CPUPer10k      float64 `json:"cpu_seconds_per_10k"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	BasePublish    float64 `json:"baseline_publish_per_second,omitempty"`
	BaseConsume    float64 `json:"baseline_consume_ack_per_second,omitempty"`
	RatioToPublish float64 `json:"ratio_to_baseline_publish,omitempty"`
	StartToReadyMS float64 `json:"start_to_ready_ms"`
	ServiceProcess bool    `json:"service_in_own_process"`
	ClusterNodes   int     `json:"cluster_nodes,omitempty"`   // 0: one embedded server
	StreamReplicas int     `json:"stream_replicas,omitempty"` // with --cluster
	SyncAlways     bool    `json:"sync_always,omitempty"`

	Recheck []recheckResult `json:"recheck,omitempty"`
}

// clusterBenchResult is what `heapdel bench --cluster` prints: the same workload with
// R1 and with R3 streams on a three-node cluster, and R3's figures over R1's.
type clusterBenchResult struct {
	R1    benchResult  `json:"r1"`
	R3    benchResult  `json:"r3"`
	Ratio clusterRatio `json:"ratio"`
}

// clusterRatio is R3's figure over R1's: below 1 for throughput means R3 is slower,
// above 1 for latency means R3 takes longer. A figure one run lacks gives 0.
type clusterRatio struct {
	Throughput   float64 `json:"commands_per_second"`
	LatencyP50   float64 `json:"latency_p50_ms"`
	LatencyP99   float64 `json:"latency_p99_ms"`
	BasePublish  float64 `json:"baseline_publish_per_second,omitempty"`
	CPUPer10k    float64 `json:"cpu_seconds_per_10k"`
	HeapRequests float64 `json:"heap_requests"`
}

func ratioOf(r1, r3 benchResult) clusterRatio {
	div := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	return clusterRatio{
		Throughput:   div(r3.Throughput, r1.Throughput),
		LatencyP50:   div(r3.LatencyP50MS, r1.LatencyP50MS),
		LatencyP99:   div(r3.LatencyP99MS, r1.LatencyP99MS),
		BasePublish:  div(r3.BasePublish, r1.BasePublish),
		CPUPer10k:    div(r3.CPUPer10k, r1.CPUPer10k),
		HeapRequests: div(float64(r3.HeapRequests), float64(r1.HeapRequests)),
	}
}

type recheckResult struct {
	Requests       int     `json:"heap_requests_pending"`
	UsersEach      int     `json:"users_each"`
	FillSeconds    float64 `json:"fill_seconds"`
	NoneDueMS      float64 `json:"tick_none_due_ms"`
	NoneDueCalls   int     `json:"tick_none_due_heap_calls"`
	AllDueMS       float64 `json:"tick_all_due_ms"`
	AllDueCalls    int     `json:"tick_all_due_heap_calls"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	ServiceProcess bool    `json:"service_in_own_process"`
	PerCheckMicro  float64 `json:"all_due_us_per_check"`
}

func cmdBench(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("bench [flags]", "Measures heapdel on this machine: an embedded JetStream server (file storage) and the Heap\nsimulator answering at once in this process, and the service as a child `heapdel run`\nprocess (--in-process: in this one). Modes:\n  throughput  publish --count commands as fast as JetStream takes them; also measures the\n              raw JetStream baseline (async publish, consume+ack) in the same run\n  latency     offer --rate commands/s and report publish→submitted latency\n  recheck     time one recheck tick with --requests pending Heap requests of --users each\n--cluster runs the throughput or latency workload twice on three in-process nats-server\nnodes joined by routes, with HEAPDEL_STREAM_REPLICAS=1 and then 3 (a new cluster each),\nand prints both and R3/R1.\nAbsolute figures swing on shared machines: compare ratios from one run.", stdout)
	o := benchOptions{progress: stderr}
	fs.StringVar(&o.mode, "mode", "throughput", "throughput, latency or recheck")
	fs.IntVar(&o.count, "count", 100_000, "commands to publish (throughput, latency)")
	fs.IntVar(&o.batchSize, "batch-size", 10_000, "HEAPDEL_BATCH_SIZE for the run")
	fs.DurationVar(&o.batchWait, "batch-wait", time.Second, "HEAPDEL_BATCH_WAIT for the run")
	fs.IntVar(&o.rate, "rate", 2000, "offered commands per second (latency mode)")
	fs.IntVar(&o.requests, "requests", 100_000, "pending Heap requests to track (recheck mode)")
	fs.IntVar(&o.users, "users", 1, "users per pending Heap request (recheck mode)")
	fs.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	fs.StringVar(&o.memLimit, "service-memlimit", "", "GOMEMLIMIT of the service process, e.g. 120MiB (without it the service runs with no memory limit, even in a container)")
	fs.StringVar(&o.heapProf, "heapprofile", "", "with --in-process: write an in-use heap profile half way through the run")
	fs.BoolVar(&o.cluster, "cluster", false, "run on a three-node cluster, with R1 streams and then R3, and print both and the ratio R3/R1 (throughput and latency modes)")
	fs.BoolVar(&o.syncAlways, "sync-always", false, "the NATS servers sync every write to disk before acknowledging it (sync_interval: always, as heapdel run's embedded server); by default every 2 minutes, nats-server's default")
	fs.BoolVar(&o.inProcess, "in-process", false, "run the service inside the bench process (needed for --cpuprofile of the service); CPU and RSS then cover the server and publisher too")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	memProfile := fs.String("memprofile", "", "write an allocation profile at the end to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if o.count < 1 || o.batchSize < 1 || o.batchSize > 10000 || o.rate < 1 || o.requests < 1 || o.users < 1 {
		fmt.Fprintln(stderr, "heapdel bench: --count, --rate, --requests, --users must be positive and --batch-size 1–10000")
		return exitCode(2)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		defer func() {
			if f, err := os.Create(*memProfile); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if o.cluster {
		if o.mode != "throughput" && o.mode != "latency" {
			fmt.Fprintf(stderr, "heapdel bench: --cluster measures the throughput or latency mode, not %q\n", o.mode)
			return exitCode(2)
		}
		res, err := benchCluster(ctx, o)
		if err != nil {
			return err
		}
		if o.asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		}
		printClusterBench(stdout, res)
		return nil
	}
	var res benchResult
	var err error
	switch o.mode {
	case "throughput", "latency":
		res, err = benchPipeline(ctx, o)
	case "recheck":
		res, err = benchRecheck(ctx, o)
	default:
		fmt.Fprintf(stderr, "heapdel bench: --mode %q is not throughput, latency or recheck\n", o.mode)
		return exitCode(2)
	}
	if err != nil {
		return err
	}
	if o.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printBench(stdout, res)
	return nil
}

// benchWorld is the NATS server (or cluster) and simulator of one bench run.
type benchWorld struct {
	dir      string
	url      string // the client URLs, comma-separated for a cluster
	nodes    int    // 0: one embedded server
	shutdown func()
	sim      *heaptest.Server
	rss      *rssSampler
}

// newBenchWorld starts one embedded server, or with o.cluster a three-node cluster.
func newBenchWorld(o benchOptions, opts heaptest.Options) (*benchWorld, error) {
	dir, err := os.MkdirTemp("", "heapdel-bench-")
	if err != nil {
		return nil, err
	}
	w := &benchWorld{dir: dir}
	if o.cluster {
		c, err := clustertest.New(clustertest.Options{Name: "heapdel-bench", StoreDir: dir, SyncAlways: o.syncAlways})
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("bench cluster: %w", err)
		}
		w.url, w.nodes, w.shutdown = c.URLs(), c.Nodes(), c.Close
	} else {
		srv, err := embedded.Start(embedded.Options{Port: -1, StoreDir: dir, SyncAlways: o.syncAlways})
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		w.url = srv.ClientURL()
		w.shutdown = func() { srv.Shutdown(); srv.WaitForShutdown() }
	}
	opts.DiscardUsers = true
	w.sim, w.rss = heaptest.NewServer(opts), newRSSSampler()
	return w, nil
}

func (w *benchWorld) close() {
	w.rss.stop()
	w.sim.Close()
	w.shutdown()
	os.RemoveAll(w.dir)
}

func (w *benchWorld) config(o benchOptions) config.Config {
	cfg := config.Default()
	cfg.NATSURL, cfg.DataDir = w.url, w.dir
	if o.replicas > 0 {
		cfg.StreamReplicas = o.replicas
	}
	cfg.HeapAppID, cfg.HeapAPIKey, cfg.HeapBaseURL = "sim-app", "sim-key", w.sim.URL
	cfg.HeapRate, cfg.HeapBurst = 1000, 100 // the simulator is not Heap: never the bottleneck
	cfg.BatchSize, cfg.BatchWait = o.batchSize, o.batchWait
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.LogLevel = "error"
	return cfg
}

func benchPipeline(ctx context.Context, o benchOptions) (benchResult, error) {
	res := benchResult{Mode: o.mode, Commands: o.count, BatchSize: o.batchSize, BatchWaitMS: ms(o.batchWait), SyncAlways: o.syncAlways}
	w, err := newBenchWorld(o, heaptest.Options{CompleteAfter: time.Hour})
	if err != nil {
		return res, err
	}
	defer w.close()
	cfg := w.config(o)

	svc, err := startBenchService(ctx, cfg, o)
	if err != nil {
		return res, err
	}
	defer svc.stop()
	res.StartToReadyMS = ms(svc.startToReady)
	res.ServiceProcess = svc.child != nil
	res.ClusterNodes = w.nodes
	if w.nodes > 0 {
		res.StreamReplicas = cfg.StreamReplicas
	}

	nc, err := nats.Connect(w.url)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return res, err
	}

	msgs := benchCommands(o.count, cfg.SubjectPrefix+".requested")
	published := make([]int64, o.count) // unix nanos per command index
	var seen atomic.Int64
	var lastSeen atomic.Int64
	lat := make([]int64, o.count)
	var latMu sync.Mutex
	got := make([]bool, o.count)
	sub, err := nc.Subscribe(cfg.SubjectPrefix+".status.submitted", func(m *nats.Msg) {
		idx, ok := benchIndex(m.Header.Get("ce-subject"))
		if !ok {
			return
		}
		now := time.Now().UnixNano()
		latMu.Lock()
		if !got[idx] {
			got[idx] = true
			lat[idx] = now - atomic.LoadInt64(&published[idx])
			seen.Add(1)
			lastSeen.Store(now)
		}
		latMu.Unlock()
	})
	if err != nil {
		return res, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	cpu0 := svc.cpuSeconds()
	w.rss.reset()
	start := time.Now()
	progress := newProgress(o.progress, o.count, &seen)
	defer progress.stop()
	if o.heapProf != "" {
		go func() {
			for seen.Load() < int64(o.count/2) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			if f, err := os.Create(o.heapProf); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	var interval time.Duration
	if o.mode == "latency" {
		interval = time.Second / time.Duration(o.rate)
		res.OfferedRate = o.rate
	}
	for i, m := range msgs {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		atomic.StoreInt64(&published[i], time.Now().UnixNano())
		if _, err := publishAsync(ctx, js, m); err != nil {
			return res, fmt.Errorf("publish: %w", err)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	deadline := time.Now().Add(5*time.Minute + time.Duration(o.count)*time.Millisecond)
	for seen.Load() < int64(o.count) {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d commands submitted before the deadline", seen.Load(), o.count)
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		time.Sleep(5 * time.Millisecond)
	}
	progress.stop()
	elapsed := time.Duration(lastSeen.Load() - start.UnixNano())
	res.Seconds = elapsed.Seconds()
	res.Throughput = float64(o.count) / elapsed.Seconds()
	res.CPUPer10k = (svc.cpuSeconds() - cpu0) / float64(o.count) * 10_000
	res.PeakRSSMiB = w.rss.peakMiB()
	if svc.child != nil {
		res.PeakRSSMiB = svc.peakRSSMiB()
	}
	res.HeapRequests = w.sim.Requests("auth_token") + w.sim.Requests("user_deletion")
	res.HeapPer10k = float64(res.HeapRequests) / float64(o.count) * 10_000
	slices.Sort(lat)
	res.LatencyP50MS = float64(lat[len(lat)/2]) / 1e6
	res.LatencyP99MS = float64(lat[min(len(lat)-1, len(lat)*99/100)]) / 1e6
	res.LatencyMaxMS = float64(lat[len(lat)-1]) / 1e6

	if o.mode == "throughput" {
		on := "server"
		if w.nodes > 0 {
			on = fmt.Sprintf("cluster (R%d)", cfg.StreamReplicas)
		}
		fmt.Fprintf(o.progress, "measuring the raw JetStream baseline on the same %s…\n", on)
		res.BasePublish, res.BaseConsume, err = jetstreamBaseline(ctx, js, len(msgs[0].Data)+headerSize(msgs[0]), o.count, cfg.StreamReplicas)
		if err != nil {
			return res, err
		}
		res.RatioToPublish = res.Throughput / res.BasePublish
	}
	return res, nil
}

// benchCluster runs the pipeline workload on a new three-node cluster with R1
// streams, then on another with R3 streams, the same options otherwise, and returns
// both and R3's figures over R1's. R1 runs first each time: on a machine that slows
// down during the run, that flatters R1.
func benchCluster(ctx context.Context, o benchOptions) (clusterBenchResult, error) {
	var res clusterBenchResult
	for _, run := range []struct {
		replicas int
		into     *benchResult
	}{{1, &res.R1}, {3, &res.R3}} {
		fmt.Fprintf(o.progress, "three-node cluster, HEAPDEL_STREAM_REPLICAS=%d…\n", run.replicas)
		ro := o
		ro.replicas = run.replicas
		r, err := benchPipeline(ctx, ro)
		if err != nil {
			return res, fmt.Errorf("R%d: %w", run.replicas, err)
		}
		*run.into = r
	}
	res.Ratio = ratioOf(res.R1, res.R3)
	return res, nil
}

// benchCommands builds the commands up front, so building them is not measured.
func benchCommands(n int, subject string) []*nats.Msg {
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		c := events.Command{RequestID: "bench-" + strconv.Itoa(i), Identity: fmt.Sprintf("bench-person-%d@example.com", i), Source: "heapdel-bench"}
		msgs[i], _ = events.NewCommandMsg(subject, c, false)
	}
	return msgs
}

func benchIndex(requestID string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(requestID, "bench-"))
	return n, err == nil
}

func headerSize(m *nats.Msg) int {
	n := 0
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// jetstreamBaseline measures raw JetStream on the same server: asynchronous publish
// of n messages of the given size, then consume-and-ack of them, on a stream of
// heapdel's replicas (R3 is compared with R3).
func jetstreamBaseline(ctx context.Context, js jetstream.JetStream, size, n, replicas int) (pubRate, consumeRate float64, err error) {
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "HEAPDEL_BENCH_BASELINE", Subjects: []string{"heapdel.bench.baseline"}, Storage: jetstream.FileStorage, Replicas: replicas})
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "HEAPDEL_BENCH_BASELINE") }()
	payload := make([]byte, size)
	start := time.Now()
	for range n {
		if _, err := publishAsync(ctx, js, &nats.Msg{Subject: "heapdel.bench.baseline", Data: payload}); err != nil {
			return 0, 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	pubRate = float64(n) / time.Since(start).Seconds()

	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "baseline", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return 0, 0, err
	}
	var acked atomic.Int64
	done := make(chan struct{})
	start = time.Now()
	cc, err := c.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if acked.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(2000))
	if err != nil {
		return 0, 0, err
	}
	defer cc.Stop()
	select {
	case <-done:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(5 * time.Minute):
		return 0, 0, errors.New("baseline consume timed out")
	}
	consumeRate = float64(n) / time.Since(start).Seconds()
	return pubRate, consumeRate, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// rssSampler records the peak resident set size, read from /proc every 20 ms, so a
// phase's peak can be told from an earlier phase's.
type rssSampler struct {
	peak atomic.Int64
	quit chan struct{}
	once sync.Once
}

func newRSSSampler() *rssSampler {
	r := &rssSampler{quit: make(chan struct{})}
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v := readRSS(); v > r.peak.Load() {
				r.peak.Store(v)
			}
			select {
			case <-r.quit:
				return
			case <-t.C:
			}
		}
	}()
	return r
}

func (r *rssSampler) reset()           { runtime.GC(); r.peak.Store(readRSS()) }
func (r *rssSampler) peakMiB() float64 { return float64(r.peak.Load()) / (1 << 20) }
func (r *rssSampler) stop()            { r.once.Do(func() { close(r.quit) }) }

func readRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

type progress struct {
	quit chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newProgress(w io.Writer, total int, done *atomic.Int64) *progress {
	p := &progress{quit: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				fmt.Fprintf(w, "  %d/%d submitted\n", done.Load(), total)
			}
		}
	}()
	return p
}

func (p *progress) stop() { p.once.Do(func() { close(p.quit); p.wg.Wait() }) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func printBench(w io.Writer, r benchResult) {
	if r.Mode == "recheck" {
		fmt.Fprintf(w, "%-28s %10s %10s %12s %10s %12s %10s\n", "pending Heap requests", "fill s", "none due", "(Heap calls)", "all due", "(Heap calls)", "heapdel RSS")
		for _, c := range r.Recheck {
			fmt.Fprintf(w, "%-28s %10.1f %8.1fms %12d %8.0fms %12d %7.0f MiB\n",
				fmt.Sprintf("%d × %d users", c.Requests, c.UsersEach), c.FillSeconds, c.NoneDueMS, c.NoneDueCalls, c.AllDueMS, c.AllDueCalls, c.PeakRSSMiB)
		}
		return
	}
	fmt.Fprintf(w, "heapdel bench (%s): %d commands, batch size %d, batch wait %s\n", r.Mode, r.Commands, r.BatchSize, time.Duration(r.BatchWaitMS*float64(time.Millisecond)))
	row := func(k, v string) { fmt.Fprintf(w, "  %-34s %s\n", k, v) }
	if r.OfferedRate > 0 {
		row("offered rate", fmt.Sprintf("%d commands/s", r.OfferedRate))
	}
	row("throughput", fmt.Sprintf("%.0f commands/s (%.2f s)", r.Throughput, r.Seconds))
	if r.BasePublish > 0 {
		row("JetStream async publish baseline", fmt.Sprintf("%.0f msgs/s", r.BasePublish))
		row("JetStream consume+ack baseline", fmt.Sprintf("%.0f msgs/s", r.BaseConsume))
		row("ratio to publish baseline", fmt.Sprintf("%.3f", r.RatioToPublish))
	}
	row("publish→submitted p50 / p99 / max", fmt.Sprintf("%.1f / %.1f / %.1f ms", r.LatencyP50MS, r.LatencyP99MS, r.LatencyMaxMS))
	row("Heap HTTP requests per 10,000", fmt.Sprintf("%.2f (%d in all)", r.HeapPer10k, r.HeapRequests))
	scope := "the heapdel process alone"
	if !r.ServiceProcess {
		scope = "whole bench process: NATS server, publisher and service"
	}
	row("CPU seconds per 10,000 commands", fmt.Sprintf("%.3f (%s)", r.CPUPer10k, scope))
	row("peak RSS", fmt.Sprintf("%.0f MiB (%s)", r.PeakRSSMiB, scope))
	row("start to ready", fmt.Sprintf("%.0f ms", r.StartToReadyMS))
}

func printClusterBench(w io.Writer, r clusterBenchResult) {
	sync := "every 2 minutes (nats-server's default)"
	if r.R1.SyncAlways {
		sync = "every write (sync_interval: always)"
	}
	fmt.Fprintf(w, "heapdel bench --cluster (%s): %d commands, batch size %d, batch wait %s\n", r.R1.Mode, r.R1.Commands, r.R1.BatchSize, time.Duration(r.R1.BatchWaitMS*float64(time.Millisecond)))
	fmt.Fprintf(w, "  %d in-process nats-server nodes with routes on this machine, syncing %s\n", r.R1.ClusterNodes, sync)
	row := func(k, r1, r3, ratio string) {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-34s %18s %18s %8s", k, r1, r3, ratio), " "))
	}
	f := func(format string, v float64) string { return fmt.Sprintf(format, v) }
	row("", fmt.Sprintf("R%d", r.R1.StreamReplicas), fmt.Sprintf("R%d", r.R3.StreamReplicas), "R3/R1")
	if r.R1.OfferedRate > 0 {
		row("offered rate (commands/s)", strconv.Itoa(r.R1.OfferedRate), strconv.Itoa(r.R3.OfferedRate), "")
	}
	row("throughput (commands/s)", f("%.0f", r.R1.Throughput), f("%.0f", r.R3.Throughput), f("%.3f", r.Ratio.Throughput))
	row("publish→submitted p50 (ms)", f("%.1f", r.R1.LatencyP50MS), f("%.1f", r.R3.LatencyP50MS), f("%.3f", r.Ratio.LatencyP50))
	row("publish→submitted p99 (ms)", f("%.1f", r.R1.LatencyP99MS), f("%.1f", r.R3.LatencyP99MS), f("%.3f", r.Ratio.LatencyP99))
	row("publish→submitted max (ms)", f("%.1f", r.R1.LatencyMaxMS), f("%.1f", r.R3.LatencyMaxMS), "")
	if r.R1.BasePublish > 0 {
		row("JetStream async publish (msgs/s)", f("%.0f", r.R1.BasePublish), f("%.0f", r.R3.BasePublish), f("%.3f", r.Ratio.BasePublish))
		row("JetStream consume+ack (msgs/s)", f("%.0f", r.R1.BaseConsume), f("%.0f", r.R3.BaseConsume), "")
		row("ratio to publish baseline", f("%.3f", r.R1.RatioToPublish), f("%.3f", r.R3.RatioToPublish), "")
	}
	row("Heap HTTP requests", strconv.Itoa(r.R1.HeapRequests), strconv.Itoa(r.R3.HeapRequests), "")
	scope := "heapdel process"
	if !r.R1.ServiceProcess {
		scope = "whole bench process"
	}
	row("CPU s per 10,000 ("+scope+")", f("%.3f", r.R1.CPUPer10k), f("%.3f", r.R3.CPUPer10k), f("%.3f", r.Ratio.CPUPer10k))
	row("peak RSS MiB ("+scope+")", f("%.0f", r.R1.PeakRSSMiB), f("%.0f", r.R3.PeakRSSMiB), "")
	row("start to ready (ms)", f("%.0f", r.R1.StartToReadyMS), f("%.0f", r.R3.StartToReadyMS), "")
}

// benchRecheck fills the request bucket with pending Heap requests (known to the
// simulator), starts the service and times one tick with none due, then one with all
// due. It runs the configured scenario plus, by default, 1,000 requests of 1,000 users.
func benchRecheck(ctx context.Context, o benchOptions) (benchResult, error) {
	res := benchResult{Mode: "recheck"}
	scenarios := [][2]int{{o.requests, o.users}}
	if o.requests == 100_000 && o.users == 1 {
		scenarios = append([][2]int{{1000, 1000}}, scenarios...)
	}
	for _, sc := range scenarios {
		r, err := recheckScenario(ctx, o, sc[0], sc[1])
		if err != nil {
			return res, err
		}
		res.Recheck = append(res.Recheck, r)
	}
	return res, nil
}

func recheckScenario(ctx context.Context, o benchOptions, requests, users int) (recheckResult, error) {
	r := recheckResult{Requests: requests, UsersEach: users}
	w, err := newBenchWorld(o, heaptest.Options{NeverComplete: true})
	if err != nil {
		return r, err
	}
	defer w.close()
	cfg := w.config(o)
	cfg.RecheckInterval, cfg.PollMaxInterval = 10*time.Minute, time.Hour // ticks come from the bench
	cfg.HeapRate, cfg.HeapBurst = 1e6, 1000

	fmt.Fprintf(o.progress, "filling %d pending Heap requests of %d users…\n", requests, users)
	began := time.Now()
	ids := w.sim.Preload(requests, users)
	nc, err := nats.Connect(w.url)
	if err != nil {
		return r, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return r, err
	}
	bucket := consumer.StreamBase(cfg.SubjectPrefix) + "_REQUESTS"
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Storage: jetstream.FileStorage, LimitMarkerTTL: time.Hour}); err != nil {
		return r, err
	}
	future := time.Now().Add(time.Hour)
	members := make([]consumer.Member, users)
	for i, id := range ids {
		for j := range members {
			members[j] = consumer.Member{RequestID: fmt.Sprintf("bench-%d-%d", i, j), Attempt: 1}
		}
		mv, _ := json.Marshal(members)
		rv, _ := json.Marshal(consumer.HeapRequest{ID: id, SubmittedAt: time.Now(), NextCheckAt: future, Users: users})
		for _, kv := range [][2]any{{"m." + consumer.JobKey(id), mv}, {consumer.JobKey(id), rv}} {
			m := nats.NewMsg("$KV." + bucket + "." + kv[0].(string))
			m.Data = kv[1].([]byte)
			if _, err := publishAsync(ctx, js, m); err != nil {
				return r, err
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.FillSeconds = time.Since(began).Seconds()

	w.rss.reset()
	a, err := startBenchService(ctx, cfg, o)
	if err != nil {
		return r, err
	}
	defer a.stop()

	tick := func() (time.Duration, int, error) {
		before := w.sim.Requests("deletion_status")
		count0, _ := tickStats(a)
		if _, err := js.Publish(ctx, cfg.SubjectPrefix+".recheck", nil); err != nil {
			return 0, 0, err
		}
		deadline := time.Now().Add(10 * time.Minute)
		for {
			count, sum := tickStats(a)
			if count > count0 {
				return time.Duration(sum * float64(time.Second)), w.sim.Requests("deletion_status") - before, nil
			}
			if time.Now().After(deadline) {
				return 0, 0, errors.New("tick not handled within 10 minutes")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	d, calls, err := tick()
	if err != nil {
		return r, err
	}
	r.NoneDueMS, r.NoneDueCalls = ms(d), calls

	// Make every request due: rewrite their next check into the past.
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return r, err
	}
	past := time.Now().Add(-time.Second)
	for _, id := range ids {
		rv, _ := json.Marshal(consumer.HeapRequest{ID: id, SubmittedAt: past, NextCheckAt: past, Users: users})
		m := nats.NewMsg("$KV." + bucket + "." + consumer.JobKey(id))
		m.Data = rv
		if _, err := publishAsync(ctx, js, m); err != nil {
			return r, err
		}
	}
	<-js.PublishAsyncComplete()
	// Wait until this replica's index has seen the rewrite.
	last, _ := kv.Get(ctx, consumer.JobKey(ids[len(ids)-1]))
	_ = last
	for !a.allDue(requests) {
		time.Sleep(10 * time.Millisecond)
	}
	_, sum0 := tickStats(a)
	d, calls, err = tick()
	if err != nil {
		return r, err
	}
	_, sum1 := tickStats(a)
	d = time.Duration((sum1 - sum0) * float64(time.Second))
	r.AllDueMS, r.AllDueCalls = ms(d), calls
	if calls > 0 {
		r.PerCheckMicro = float64(d.Microseconds()) / float64(calls)
	}
	r.PeakRSSMiB = w.rss.peakMiB()
	if a.child != nil {
		r.PeakRSSMiB = a.peakRSSMiB()
	}
	r.ServiceProcess = a.child != nil
	return r, nil
}

// tickStats reads the tick-duration histogram: ticks handled and seconds spent.
func tickStats(a *benchService) (count uint64, sum float64) {
	var text string
	if a.app != nil {
		mfs, err := a.app.reg.Gather()
		if err != nil {
			return 0, 0
		}
		for _, mf := range mfs {
			if mf.GetName() == "heapdel_recheck_tick_duration_seconds" && len(mf.GetMetric()) > 0 {
				h := mf.GetMetric()[0].GetHistogram()
				return h.GetSampleCount(), h.GetSampleSum()
			}
		}
		return 0, 0
	}
	resp, err := http.Get("http://" + a.addr + "/metrics")
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text = string(b)
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "heapdel_recheck_tick_duration_seconds_count "); ok {
			count, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "heapdel_recheck_tick_duration_seconds_sum "); ok {
			sum, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return count, sum
}

// allDue says whether the service sees every one of n requests due: in-process it
// asks the index; a child process is given time for its watch to deliver the rewrite.
func (a *benchService) allDue(n int) bool {
	if a.app != nil {
		return a.app.svc.DueCount(time.Now()) >= n
	}
	time.Sleep(3 * time.Second)
	return true
}

// benchService is the service under measurement: a child `heapdel run` process by
// default, so its CPU and memory are told apart from the NATS server's and the
// publisher's; or, with --in-process, inside the bench process.
type benchService struct {
	addr         string
	child        *exec.Cmd
	app          *app
	startToReady time.Duration
}

func startBenchService(ctx context.Context, cfg config.Config, o benchOptions) (*benchService, error) {
	if o.inProcess {
		t0 := time.Now()
		a, err := start(ctx, cfg, zerolog.New(o.progress).Level(zerolog.ErrorLevel), appOptions{})
		if err != nil {
			return nil, err
		}
		for a.svc.Ready() != nil {
			time.Sleep(time.Millisecond)
		}
		return &benchService{app: a, startToReady: time.Since(t0)}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	env := map[string]string{
		"HEAPDEL_NATS_URL": cfg.NATSURL, "HEAPDEL_DATA_DIR": cfg.DataDir,
		"HEAPDEL_HEAP_APP_ID": cfg.HeapAppID, "HEAPDEL_HEAP_API_KEY": cfg.HeapAPIKey, "HEAPDEL_HEAP_BASE_URL": cfg.HeapBaseURL,
		"HEAPDEL_HEAP_RATE": strconv.FormatFloat(cfg.HeapRate, 'f', -1, 64), "HEAPDEL_HEAP_BURST": strconv.Itoa(cfg.HeapBurst),
		"HEAPDEL_BATCH_SIZE": strconv.Itoa(cfg.BatchSize), "HEAPDEL_BATCH_WAIT": cfg.BatchWait.String(),
		"HEAPDEL_HTTP_ADDR": addr, "HEAPDEL_LOG_LEVEL": "error", "HEAPDEL_STREAM_REPLICAS": strconv.Itoa(cfg.StreamReplicas),
	}
	cmd := exec.Command(exe, "run")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if o.memLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+o.memLimit)
	} else {
		// Measure the service unlimited even inside a memory-limited container,
		// where heapdel run would otherwise set GOMEMLIMIT to 90% of that limit.
		cmd.Env = append(cmd.Env, "AUTOMEMLIMIT=off")
	}
	cmd.Stderr = o.progress
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &benchService{child: cmd, addr: addr}
	readyWithin := 30 * time.Second
	if o.cluster {
		readyWithin = 2 * time.Minute // provisioning R3 streams while the cluster elects their leaders
	}
	deadline := time.Now().Add(readyWithin)
	for {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b.stop()
			return nil, fmt.Errorf("the heapdel service did not become ready within %s", readyWithin)
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.startToReady = time.Since(t0)
	return b, nil
}

func (b *benchService) stop() {
	if b.app != nil {
		_ = b.app.close()
		return
	}
	_ = b.child.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = b.child.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = b.child.Process.Kill()
		<-done
	}
}

// cpuSeconds is the service's CPU time so far: the child's from /proc, or the whole
// bench process's in-process.
func (b *benchService) cpuSeconds() float64 {
	if b.child == nil {
		return cpuSeconds()
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", b.child.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are 14 and 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// peakRSSMiB is the child's high-water resident set (VmHWM).
func (b *benchService) peakRSSMiB() float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.child.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
