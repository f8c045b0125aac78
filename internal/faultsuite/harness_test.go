package faultsuite

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/embedded"
)

var longFlag = flag.Bool("long", false, "run the long fault scenarios (same as HEAPDEL_FAULTS=long)")

// long reports whether the long scenarios were asked for.
func long() bool { return *longFlag || os.Getenv("HEAPDEL_FAULTS") == "long" }

// scale picks the short or the long figure of a scenario.
func scale(short, full int) int {
	if long() {
		return full
	}
	return short
}

// The settings every child runs with (the brief of the suite): small batches and
// a fast recheck, so that a run is short and many batches are in flight.
const (
	batchSize       = 500
	shutdownTimeout = 10 * time.Second
	// ackWait is the command consumer's AckWait, fixed in the product (consumer
	// Config.AckWait, not a setting): a command held by a killed process comes back
	// only this long after it was delivered.
	ackWait = time.Minute
)

// bin is the heapdel binary, built once for the whole package.
var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	flag.Parse()
	// The scenarios spend most of their time waiting for JetStream to redeliver
	// what a killed process held (AckWait, a minute), not computing: run them all
	// at once whatever the number of CPUs, unless -parallel says otherwise.
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if p := flag.Lookup("test.parallel"); !set && p != nil {
		if n, err := strconv.Atoi(p.Value.String()); err == nil && n < 8 {
			_ = flag.Set("test.parallel", "8")
		}
	}
	code := m.Run()
	httpClient.CloseIdleConnections()
	if bin.dir != "" {
		_ = os.RemoveAll(bin.dir)
	}
	if code == 0 {
		if err := goleak.Find(
			// nats-server keeps a few process-wide goroutines after Shutdown.
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
			goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
			goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// heapdelBinary builds ./cmd/heapdel once, without -race whatever the test's
// flags, and returns its path.
func heapdelBinary(t *testing.T) string {
	t.Helper()
	bin.once.Do(func() {
		goTool := "go"
		if _, err := exec.LookPath(goTool); err != nil {
			goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		}
		out, err := exec.Command(goTool, "env", "GOMOD").Output()
		if err != nil {
			bin.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			bin.err = errors.New("go env GOMOD: not inside the heapdel module")
			return
		}
		if bin.dir, err = os.MkdirTemp("", "heapdel-faultsuite-"); err != nil {
			bin.err = err
			return
		}
		bin.path = filepath.Join(bin.dir, "heapdel")
		cmd := exec.Command(goTool, "build", "-o", bin.path, "./cmd/heapdel")
		cmd.Dir = filepath.Dir(gomod)
		cmd.Env = buildEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build ./cmd/heapdel: %w\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// buildEnv is the environment without -race in GOFLAGS: the child is the product
// as shipped, and the race detector would only slow it down.
func buildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if v, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			var keep []string
			for _, f := range strings.Fields(v) {
				if f != "-race" && f != "--race" && !strings.HasPrefix(f, "-race=") {
					keep = append(keep, f)
				}
			}
			kv = "GOFLAGS=" + strings.Join(keep, " ")
		}
		env = append(env, kv)
	}
	return env
}

// window is a stretch of time during which a double submission to Heap is
// allowed: a kill (a moment), a NATS outage, a SIGTERM.
type window struct {
	what       string
	start, end time.Time
}

// world is one scenario's surroundings: a real JetStream server, the Heap
// simulator, a NATS connection for publishing and following status events, and
// heapdel child processes.
type world struct {
	t        *testing.T
	name     string
	storeDir string
	logDir   string
	port     int
	sim      *heaptest.Server
	nc       *nats.Conn
	js       jetstream.JetStream

	mu       sync.Mutex
	srv      *server.Server
	follower *follower
	windows  []window
	replicas []*replica
}

func newWorld(t *testing.T, name string, simOpts heaptest.Options) *world {
	t.Helper()
	w := &world{t: t, name: name, storeDir: t.TempDir(), logDir: t.TempDir()}
	if keep := os.Getenv("HEAPDEL_FAULTS_LOGS"); keep != "" {
		// Keep the children's logs for a post-mortem.
		w.logDir = filepath.Join(keep, name)
		if err := os.MkdirAll(w.logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := embedded.Start(embedded.Options{Port: -1, StoreDir: w.storeDir})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	w.port = srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		w.mu.Lock()
		srv := w.srv
		w.srv = nil
		w.mu.Unlock()
		if srv != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})
	w.sim = heaptest.NewServer(simOpts)
	t.Cleanup(w.sim.Close)
	w.nc, err = nats.Connect(w.natsURL(), nats.Name("faultsuite "+name),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.nc.Close)
	if w.js, err = jetstream.New(w.nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			w.dumpLogs()
		}
	})
	return w
}

func (w *world) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", w.port) }

// stopNATS shuts the JetStream server down; startNATS starts a new one on the
// same port and store.
func (w *world) stopNATS() {
	w.mu.Lock()
	srv := w.srv
	w.srv = nil
	w.mu.Unlock()
	srv.Shutdown()
	srv.WaitForShutdown()
}

func (w *world) startNATS() {
	w.t.Helper()
	srv, err := embedded.Start(embedded.Options{Port: w.port, StoreDir: w.storeDir})
	if err != nil {
		w.t.Fatalf("restart NATS on port %d: %v", w.port, err)
	}
	w.mu.Lock()
	w.srv = srv
	w.mu.Unlock()
}

func (w *world) addWindow(what string, start, end time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.windows = append(w.windows, window{what, start, end})
}

// env is the environment of a child: the suite's settings and nothing
// HEAPDEL_* inherited from the test's own environment.
func (w *world) env(extra map[string]string) map[string]string {
	m := map[string]string{
		"HEAPDEL_NATS_URL":          w.natsURL(),
		"HEAPDEL_DATA_DIR":          filepath.Join(w.logDir, "unused-data"),
		"HEAPDEL_HEAP_APP_ID":       "sim-app",
		"HEAPDEL_HEAP_API_KEY":      "sim-key",
		"HEAPDEL_HEAP_BASE_URL":     w.sim.URL,
		"HEAPDEL_BATCH_SIZE":        strconv.Itoa(batchSize),
		"HEAPDEL_BATCH_WAIT":        "100ms",
		"HEAPDEL_RECHECK_INTERVAL":  "1s",
		"HEAPDEL_POLL_MAX_INTERVAL": "2s",
		"HEAPDEL_HEAP_RATE":         "200",
		"HEAPDEL_LOG_LEVEL":         "info",
		"HEAPDEL_SHUTDOWN_TIMEOUT":  shutdownTimeout.String(),
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// replica is one heapdel deployment slot: a child process that may be killed and
// started again, each incarnation with its own log file and HTTP port.
type replica struct {
	w     *world
	name  string
	extra map[string]string

	mu   sync.Mutex
	runs int
	cur  *proc
}

// proc is one incarnation of a replica.
type proc struct {
	cmd     *exec.Cmd
	addr    string
	logPath string
	started time.Time
	done    chan struct{} // closed when the process has exited; state is set then
	state   *os.ProcessState
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// replica declares a replica; start starts it. Every incarnation still running
// when the test ends is killed.
func (w *world) replica(name string, extra map[string]string) *replica {
	r := &replica{w: w, name: name, extra: extra}
	w.mu.Lock()
	w.replicas = append(w.replicas, r)
	w.mu.Unlock()
	w.t.Cleanup(func() {
		r.mu.Lock()
		p := r.cur
		r.mu.Unlock()
		if p != nil && !p.exited() {
			_ = p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				w.t.Errorf("%s: pid %d not reaped 10s after SIGKILL", r.name, p.cmd.Process.Pid)
			}
		}
	})
	return r
}

// start runs a new incarnation and waits until its /readyz answers 200.
func (r *replica) start() *proc {
	t := r.w.t
	t.Helper()
	r.mu.Lock()
	r.runs++
	run := r.runs
	r.mu.Unlock()
	env := r.w.env(r.extra)
	env["HEAPDEL_HTTP_ADDR"] = freeAddr(t)
	p := &proc{
		addr:    env["HEAPDEL_HTTP_ADDR"],
		logPath: filepath.Join(r.w.logDir, fmt.Sprintf("%s.%02d.log", r.name, run)),
		done:    make(chan struct{}),
	}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(heapdelBinary(t), "run")
	p.cmd.Env = childEnv(env)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.started = time.Now()
	err = p.cmd.Start()
	_ = f.Close()
	if err != nil {
		t.Fatalf("start %s: %v", r.name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	r.mu.Lock()
	r.cur = p
	r.mu.Unlock()
	r.waitReady(p, 30*time.Second)
	return p
}

func (r *replica) current() *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *replica) waitReady(p *proc, timeout time.Duration) {
	t := r.w.t
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if code, _ := readyz(p.addr); code == http.StatusOK {
			return
		}
		if p.exited() {
			t.Fatalf("%s exited before /readyz was true: %v\n%s", r.name, p.state, tail(p.logPath, 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz not true within %s\n%s", r.name, timeout, tail(p.logPath, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL to the current incarnation and waits until it is gone. The
// moment is recorded as a window in which a double submission is allowed.
func (r *replica) kill() time.Time {
	t := r.w.t
	t.Helper()
	p := r.current()
	at := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", r.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not gone 10s after SIGKILL", r.name)
	}
	// A request the process wrote before dying may still be answered by Heap: the
	// window stays open a moment after the process is gone.
	r.w.addWindow("kill -9 "+r.name, at, time.Now().Add(time.Second))
	return at
}

// terminate sends SIGTERM and waits up to limit for the process to exit. It
// returns how long the exit took and how it ended (nil if it did not within
// limit).
func (r *replica) terminate(limit time.Duration) (time.Duration, *os.ProcessState) {
	t := r.w.t
	t.Helper()
	p := r.current()
	at := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", r.name, err)
	}
	select {
	case <-p.done:
		took := time.Since(at)
		r.w.addWindow("SIGTERM "+r.name, at, time.Now().Add(time.Second))
		return took, p.state
	case <-time.After(limit):
		return time.Since(at), nil
	}
}

func childEnv(m map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HEAPDEL_") {
			env = append(env, kv)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+m[k])
	}
	return env
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// readyz returns the status code of /readyz (0 when nothing answers) and its body.
func readyz(addr string) (int, string) {
	resp, err := httpClient.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// metric returns the value of one sample of a process's /metrics (such as
// `heapdel_commands_total{outcome="accepted"}`): 0 when absent, -1 when /metrics
// does not answer.
func metric(p *proc, sample string) float64 {
	resp, err := httpClient.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return f
		}
	}
	return 0
}

// Samples of heapdel's /metrics that tell where a process is in its work.
const (
	sampleAccepted   = `heapdel_commands_total{outcome="accepted"}`                       // commands taken on
	sampleHeapAccept = `heapdel_heap_requests_total{code="201",endpoint="user_deletion"}` // batches Heap accepted
)

// accepted returns the commands a process has taken on.
func accepted(p *proc) float64 { return metric(p, sampleAccepted) }

// waitBusy waits up to limit for p to take on more commands than before, and
// reports whether it did: a kill then lands on work in flight.
func waitBusy(p *proc, before float64, limit time.Duration) bool {
	return waitRise(p, sampleAccepted, before, limit)
}

// waitRise waits up to limit for a sample of p's /metrics to exceed before, and
// reports whether it did.
func waitRise(p *proc, sample string, before float64, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if metric(p, sample) > before {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// waitHeapAccepts waits up to limit for Heap to accept more users than before,
// and reports whether it did: a kill then lands while heapdel records a batch
// Heap has accepted, the moment a crash costs a double submission.
func (w *world) waitHeapAccepts(before int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if w.sim.SubmittedUsers() > before {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// tail returns the last n lines of a log file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return path + ":\n" + strings.Join(lines, "\n")
}

// grepLogs returns the log lines of every incarnation that contain any of subs,
// prefixed with the log file's name, at most max of them.
func (w *world) grepLogs(max int, subs ...string) []string {
	files, _ := filepath.Glob(filepath.Join(w.logDir, "*.log"))
	sort.Strings(files)
	var out []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			for _, s := range subs {
				if strings.Contains(line, s) {
					if len(out) < max {
						out = append(out, filepath.Base(f)+": "+line)
					}
					break
				}
			}
		}
		_ = fh.Close()
	}
	return out
}

// dumpLogs puts the warnings and errors of every incarnation, and the end of
// each log, into the test log.
func (w *world) dumpLogs() {
	lines := w.grepLogs(80, `"level":"warn"`, `"level":"error"`, `"level":"fatal"`, "panic", "heapdel:")
	w.t.Logf("heapdel warnings and errors (%d shown):\n%s", len(lines), strings.Join(lines, "\n"))
	files, _ := filepath.Glob(filepath.Join(w.logDir, "*.log"))
	sort.Strings(files)
	for _, f := range files {
		w.t.Logf("%s", tail(f, 8))
	}
}

// follower records every status event from the status stream, as a downstream
// subscriber does, deduplicating by CloudEvent id.
type follower struct {
	mu       sync.Mutex
	msgs     int // messages received, repeats included
	bad      []string
	ids      map[string]struct{}
	reqs     map[string]*seen
	terminal int // request ids with at least one terminal event
}

// seen is what the status events say of one request id: distinct event ids per
// status, and the failures' reasons.
type seen struct {
	n        map[events.Status]int
	failures []string
}

// follow starts following the status stream, from its beginning. heapdel creates
// the stream at start, so call it once a replica is ready.
func (w *world) follow() *follower {
	w.t.Helper()
	f := &follower{ids: map[string]struct{}{}, reqs: map[string]*seen{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := w.js.OrderedConsumer(ctx, "HEAP_DELETION_STATUS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		w.t.Fatalf("follow status events: %v", err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		ev, id, err := events.DecodeStatus(m.Headers(), m.Data())
		f.add(ev, id, err)
	})
	if err != nil {
		w.t.Fatalf("follow status events: %v", err)
	}
	w.t.Cleanup(cc.Stop)
	w.mu.Lock()
	w.follower = f
	w.mu.Unlock()
	return f
}

func (f *follower) add(ev events.StatusEvent, id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs++
	if err != nil {
		if len(f.bad) < 10 {
			f.bad = append(f.bad, err.Error())
		}
		return
	}
	if _, dup := f.ids[id]; dup {
		return
	}
	f.ids[id] = struct{}{}
	s := f.reqs[ev.RequestID]
	if s == nil {
		s = &seen{n: map[events.Status]int{}}
		f.reqs[ev.RequestID] = s
	}
	s.n[ev.Status]++
	if ev.Status == events.StatusFailed {
		s.failures = append(s.failures, string(ev.Reason)+": "+ev.Message)
	}
	if (ev.Status == events.StatusComplete || ev.Status == events.StatusFailed) &&
		s.n[events.StatusComplete]+s.n[events.StatusFailed] == 1 {
		f.terminal++
	}
}

func (f *follower) terminalCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.terminal
}

// counts returns the messages received and the distinct events among them.
func (f *follower) counts() (msgs, distinct int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msgs, len(f.ids)
}

// commands returns n deletion commands with distinct request ids and users: an
// identity for even i, a user id for odd i.
func commands(prefix string, n int) []events.Command {
	out := make([]events.Command, n)
	for i := range out {
		out[i].RequestID = fmt.Sprintf("%s-%06d", prefix, i)
		if i%2 == 0 {
			out[i].Identity = fmt.Sprintf("%s-person-%06d@example.com", prefix, i)
		} else {
			out[i].UserID = 4_000_000_000_000_000 + uint64(i)
		}
	}
	return out
}

// userOf is a command's user as the simulator records it.
func userOf(c events.Command) heaptest.User {
	if c.Identity != "" {
		return heaptest.User{Identity: c.Identity}
	}
	return heaptest.User{UserID: strconv.FormatUint(c.UserID, 10)}
}

// publish sends cmds at about perSecond commands a second (0: as fast as the
// acknowledgements come), each with its request id as Nats-Msg-Id so that a retry
// after an outage is deduplicated by the stream. A publish that fails is retried
// until ctx ends.
func (w *world) publish(ctx context.Context, cmds []events.Command, perSecond int) error {
	const chunk = 250
	var gap time.Duration
	if perSecond > 0 {
		gap = time.Duration(float64(time.Second) * chunk / float64(perSecond))
	}
	next := time.Now()
	for start := 0; start < len(cmds); start += chunk {
		if gap > 0 {
			select {
			case <-time.After(time.Until(next)):
			case <-ctx.Done():
				return ctx.Err()
			}
			next = next.Add(gap)
		}
		todo := cmds[start:min(start+chunk, len(cmds))]
		for len(todo) > 0 {
			var failed []events.Command
			var lastErr error
			futures := make([]jetstream.PubAckFuture, len(todo))
			for i, c := range todo {
				m, err := events.NewCommandMsg("heap.deletion.requested", c, i%5 == 4)
				if err != nil {
					return err
				}
				if futures[i], err = w.js.PublishMsgAsync(m, jetstream.WithMsgID("cmd-"+c.RequestID)); err != nil {
					lastErr = err
				}
			}
			for i, f := range futures {
				if f == nil {
					failed = append(failed, todo[i])
					continue
				}
				select {
				case <-f.Ok():
				case err := <-f.Err():
					lastErr = err
					failed = append(failed, todo[i])
				case <-time.After(10 * time.Second):
					lastErr = errors.New("no publish ack within 10s")
					failed = append(failed, todo[i])
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if len(failed) > 0 {
				select {
				case <-time.After(200 * time.Millisecond):
				case <-ctx.Done():
					return fmt.Errorf("publishing %d commands: %w (last error: %v)", len(failed), ctx.Err(), lastErr)
				}
			}
			todo = failed
		}
	}
	return nil
}

// publishInBackground runs publish in a goroutine; the channel carries its result.
func (w *world) publishInBackground(cmds []events.Command, perSecond int, limit time.Duration) <-chan error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	w.t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		done <- w.publish(ctx, cmds, perSecond)
	}()
	return done
}

func waitPublished(t *testing.T, done <-chan error, limit time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
	case <-time.After(limit):
		t.Fatalf("publish: not finished within %s", limit)
	}
}

// waitTerminal waits until every command has a terminal status event and then
// until the command consumer holds nothing (every command acknowledged), logging
// progress every 15s. It returns when each happened. The second can come up to
// AckWait after the first: an acknowledgement lost in a fault is only settled
// when JetStream redelivers the command.
func (w *world) waitTerminal(cmds []events.Command, timeout time.Duration) (terminal, drained time.Time) {
	w.t.Helper()
	f := w.follower
	start := time.Now()
	deadline := start.Add(timeout)
	lastLog := start
	for {
		done := f.terminalCount()
		if done >= len(cmds) {
			break
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("after %s: %d of %d request ids have no terminal status event (consumer: %s)",
				timeout, len(cmds)-done, len(cmds), w.consumerState())
		}
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			w.t.Logf("%s: %d/%d terminal; Heap: %d requests, %d users; consumer: %s", w.name, done, len(cmds),
				len(w.sim.Submissions()), w.sim.SubmittedUsers(), w.consumerState())
		}
		time.Sleep(100 * time.Millisecond)
	}
	terminal = time.Now()
	for {
		info, err := w.commandConsumer()
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			return terminal, time.Now()
		}
		if time.Now().After(deadline.Add(ackWait)) {
			w.t.Fatalf("every request id is terminal, but the command consumer still holds work: %s", w.consumerState())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (w *world) commandConsumer() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := w.js.Consumer(ctx, "HEAP_DELETION", "heapdel")
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

func (w *world) consumerState() string {
	info, err := w.commandConsumer()
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
}

// since formats the time from start to t, to the second.
func since(start, t time.Time) string { return t.Sub(start).Round(time.Second).String() }

// tally is what a scenario's outcome adds up to.
type tally struct {
	requests       int
	statusMsgs     int // status messages received, repeats included
	statusEvents   int // distinct status events
	heapRequests   int // accepted user_deletion requests
	heapUsers      int // users in them
	deletionCalls  int // user_deletion calls, answered or not
	statusCalls    int // deletion_status calls
	dupUsers       int // users submitted more than once
	superseded     int // Heap deletion requests with a user that was submitted again later
	maxCopies      int // most submissions of one user
	unexplained    int // repeat submissions outside every allowed window
	windows        int
	problems       []string
	problemsByKind map[string]int
}

func (tl *tally) problem(kind, format string, args ...any) {
	if tl.problemsByKind == nil {
		tl.problemsByKind = map[string]int{}
	}
	tl.problemsByKind[kind]++
	if tl.problemsByKind[kind] <= 5 {
		tl.problems = append(tl.problems, kind+": "+fmt.Sprintf(format, args...))
	}
}

// check verifies SPEC.md's delivery guarantees for cmds: every request id has
// exactly one terminal event, complete (no fault here is permanent), after its
// submitted and processing events; every user reached Heap; a user reached Heap
// twice only across an allowed window (a kill, an outage, a SIGTERM); and no more
// than maxDup users did. It fails the test on any violation and returns the figures.
func (w *world) check(cmds []events.Command, maxDup int) tally {
	w.t.Helper()
	f := w.follower
	var tl tally
	tl.requests = len(cmds)
	f.mu.Lock()
	tl.statusMsgs, tl.statusEvents = f.msgs, len(f.ids)
	for _, b := range f.bad {
		tl.problem("undecodable status event", "%s", b)
	}
	for _, c := range cmds {
		s := f.reqs[c.RequestID]
		if s == nil {
			tl.problem("lost", "%s has no status event at all", c.RequestID)
			continue
		}
		term := s.n[events.StatusComplete] + s.n[events.StatusFailed]
		switch {
		case term == 0:
			tl.problem("no terminal status", "%s: events %v", c.RequestID, s.n)
		case term > 1:
			tl.problem("several terminal statuses", "%s: events %v, failures %q", c.RequestID, s.n, s.failures)
		case s.n[events.StatusFailed] > 0:
			tl.problem("failed", "%s: %q (a transient fault must never fail a command)", c.RequestID, s.failures)
		}
		if s.n[events.StatusSubmitted] != 1 || s.n[events.StatusProcessing] != 1 {
			tl.problem("sequence", "%s: want one submitted and one processing event, got %v", c.RequestID, s.n)
		}
	}
	f.mu.Unlock()

	subs := w.sim.Submissions()
	tl.heapRequests = len(subs)
	tl.deletionCalls = w.sim.Requests(heaptest.EndpointUserDeletion)
	tl.statusCalls = w.sim.Requests(heaptest.EndpointDeletionStatus)
	when := map[heaptest.User][]time.Time{}
	for _, s := range subs {
		tl.heapUsers += len(s.Users)
		for _, u := range s.Users {
			when[u] = append(when[u], s.At)
		}
	}
	w.mu.Lock()
	windows := slices.Clone(w.windows)
	w.mu.Unlock()
	tl.windows = len(windows)
	for _, c := range cmds {
		u := userOf(c)
		ts := when[u]
		if len(ts) == 0 {
			tl.problem("never reached Heap", "%s", c.RequestID)
			continue
		}
		tl.maxCopies = max(tl.maxCopies, len(ts))
		if len(ts) < 2 {
			continue
		}
		tl.dupUsers++
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(ts); i++ {
			if !explained(windows, ts[i-1], ts[i]) {
				tl.unexplained++
				tl.problem("double submission outside a fault window", "%s: submitted at %s and again at %s",
					c.RequestID, ts[i-1].Format(time.StampMilli), ts[i].Format(time.StampMilli))
			}
		}
	}
	for _, s := range subs {
		for _, u := range s.Users {
			if ts := when[u]; len(ts) > 1 && ts[len(ts)-1].After(s.At) {
				tl.superseded++
				break
			}
		}
	}
	if tl.dupUsers > maxDup {
		tl.problem("too many double submissions", "%d users reached Heap more than once; the bound is %d", tl.dupUsers, maxDup)
	}
	if len(tl.problems) > 0 {
		kinds := make([]string, 0, len(tl.problemsByKind))
		for k, n := range tl.problemsByKind {
			kinds = append(kinds, fmt.Sprintf("%s ×%d", k, n))
		}
		sort.Strings(kinds)
		w.t.Errorf("%s: delivery guarantees broken (%s):\n  %s", w.name, strings.Join(kinds, ", "), strings.Join(tl.problems, "\n  "))
	}
	return tl
}

// explained reports whether a user submitted at a and again at b was in flight
// across one of the windows: the first submission no later than the window's
// end, the second no earlier than its start.
func explained(ws []window, a, b time.Time) bool {
	for _, w := range ws {
		if !a.After(w.end) && !b.Before(w.start) {
			return true
		}
	}
	return false
}

func (tl tally) String() string {
	return fmt.Sprintf("%d request ids; Heap: %d deletion requests (%d user_deletion calls) carrying %d users, "+
		"%d users submitted more than once (most copies of one user: %d) in %d superseded deletion requests, %d outside a fault window (%d windows); "+
		"%d deletion_status calls (%.2f per deletion request); status stream: %d events received, %d distinct",
		tl.requests, tl.heapRequests, tl.deletionCalls, tl.heapUsers, tl.dupUsers, tl.maxCopies, tl.superseded, tl.unexplained,
		tl.windows, tl.statusCalls, float64(tl.statusCalls)/float64(max(tl.heapRequests, 1)), tl.statusMsgs, tl.statusEvents)
}
