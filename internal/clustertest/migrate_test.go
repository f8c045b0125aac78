package clustertest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/clustertest"
	"github.com/heapdel/heapdel/internal/embedded"
	"github.com/heapdel/heapdel/internal/testkit"
)

// heapdelStreams are the streams that hold heapdel's state with the default prefix:
// the procedure in docs/nats-cluster.md moves these five.
var heapdelStreams = []string{
	"HEAP_DELETION",
	"HEAP_DELETION_SCHEDULE",
	"HEAP_DELETION_STATUS",
	"KV_HEAP_DELETION_JOBS",
	"KV_HEAP_DELETION_REQUESTS",
}

// TestMigrateEmbeddedToCluster runs the move from heapdel's embedded server to a
// three-node cluster that docs/nats-cluster.md gives operators, and checks nothing
// is lost on the way:
//
//  1. heapdel runs on its embedded server (the one `heapdel run` starts, syncing
//     every write) and submits a first set of commands, which Heap keeps pending:
//     jobs `processing`, Heap requests followed in HEAP_DELETION_REQUESTS. heapdel
//     stops; more commands are queued that no heapdel has seen.
//  2. The embedded server stops; a plain nats-server serves its store directory
//     (`nats-server --jetstream --store_dir "$HEAPDEL_DATA_DIR"`).
//  3. Each of the five streams is backed up from it and restored onto the cluster
//     with three replicas. Where the nats CLI is installed (.ci/run installs it),
//     the test runs the page's own commands: `stream ls --all`, the counts from
//     `stream info --json`, `stream backup`, `stream restore --replicas 3`, and on
//     a failed restore what the page says to do. Without it, the test makes the
//     JetStream snapshot and restore calls those commands make, so the procedure
//     is still proved; the log says which path ran.
//  4. Every stream on the cluster has three current replicas and the same
//     messages, sequences and consumers as on the old server; both buckets hold the
//     same keys, values and revisions. With the CLI, the page's counts after the
//     restore equal those before, and `stream report` runs.
//  5. heapdel started against the cluster (HEAPDEL_STREAM_REPLICAS=3) completes
//     every job, old and queued, and no user reaches Heap twice.
func TestMigrateEmbeddedToCluster(t *testing.T) {
	const submitted, queued = 120, 300

	// Heap keeps every deletion pending for an hour. Its clock is the real one until
	// the move is over, then an hour later at each call, so that every deletion,
	// submitted before the move or after, completes soon after.
	var moved atomic.Bool
	var hours atomic.Int64
	sim := heaptest.NewServer(heaptest.Options{
		CompleteAfter: time.Hour,
		TokenTTL:      100000 * time.Hour,
		Now: func() time.Time {
			if !moved.Load() {
				return time.Now()
			}
			return time.Now().Add(time.Duration(hours.Add(1)) * time.Hour)
		},
	})
	t.Cleanup(sim.Close)
	cfg := consumer.Config{
		BatchSize:       50,
		BatchWait:       50 * time.Millisecond,
		RecheckInterval: time.Second,
		PollMaxInterval: 2 * time.Second,
		Provision:       true,
		HashKey:         []byte("test-hash-key"),
		AckWait:         5 * time.Second,
		RetryDelay:      100 * time.Millisecond,
	}
	logs := &testkit.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("heapdel's log:\n%s", logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 1. heapdel on its embedded server.
	dataDir := t.TempDir()
	emb, err := embedded.Start(embedded.Options{Port: -1, StoreDir: dataDir, SyncAlways: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Shutdown(); emb.WaitForShutdown() })
	nc := connectTo(t, emb.ClientURL())
	svc := startHeapdel(ctx, t, cfg, nc, sim.URL, logs)
	publishCommands(ctx, t, nc, 0, submitted)
	kv := bucket(ctx, t, nc, "HEAP_DELETION_JOBS")
	waitJobs(ctx, t, kv, submitted, consumer.JobProcessing)
	closeHeapdel(t, svc)
	publishCommands(ctx, t, nc, submitted, queued)
	nc.Close()

	// 2. The operator stops heapdel (its server with it) and serves the store with a
	// plain nats-server.
	emb.Shutdown()
	emb.WaitForShutdown()
	plain, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dataDir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go plain.Start()
	t.Cleanup(func() { plain.Shutdown(); plain.WaitForShutdown() })
	if !plain.ReadyForConnections(10 * time.Second) {
		t.Fatal("the plain nats-server on the embedded store did not start")
	}
	src := connectTo(t, plain.ClientURL())
	before := streamStates(ctx, t, src)
	if got := before["HEAP_DELETION"].State.Msgs; got != queued {
		t.Fatalf("HEAP_DELETION holds %d commands on the old store, want the %d queued", got, queued)
	}
	if got := before["KV_HEAP_DELETION_JOBS"].State.NumSubjects; got != submitted {
		t.Fatalf("the job bucket holds %d keys on the old store, want %d", got, submitted)
	}
	jobsBefore := bucketContents(ctx, t, src, "HEAP_DELETION_JOBS")
	requestsBefore := bucketContents(ctx, t, src, "HEAP_DELETION_REQUESTS")

	// 3. Back up each stream from the old store, restore it on the cluster with R3.
	c := clustertest.Start(t, clustertest.Options{})
	dst := connectTo(t, c.URLs())
	cli := findNatsCLI(t)
	var countsBefore map[string]string
	if cli != nil {
		t.Logf("moving the streams with the nats CLI (%s), running the commands of docs/nats-cluster.md", cli.path)
		cli.checkStreamList(t, plain.ClientURL())
		countsBefore = cli.counts(t, plain.ClientURL())
		for _, name := range heapdelStreams {
			// The schedule is live on the plain server too: it adds recheck ticks.
			if want := countsLine(before[name].StreamInfo); name != "HEAP_DELETION_SCHEDULE" && countsBefore[name] != want {
				t.Fatalf("the counts of the page for %s are %s; the server says %s", name, countsBefore[name], want)
			}
			cli.backup(t, plain.ClientURL(), name)
		}
		// c.URLs() lists the three nodes; the client picks one at random per
		// command, as a port-forward to the client service picks a pod.
		for _, name := range heapdelStreams {
			cli.restore(t, c.URLs(), name, before[name].State.Msgs)
		}
	} else {
		t.Log("the nats CLI is not installed (go install github.com/nats-io/natscli/nats@v0.5.0): moving the streams through the JetStream API calls its stream backup and restore make")
		for _, name := range heapdelStreams {
			req, data := backupStream(t, src, name)
			req.Config.Replicas = 3
			si := restoreStream(t, dst, req, data)
			t.Logf("%s: %d messages, %d bytes of snapshot, restored with %d replicas", name, si.State.Msgs, len(data), si.Config.Replicas)
		}
	}

	// 4. The same state on the cluster, three current copies of each stream.
	if err := c.WaitHealthy(time.Minute); err != nil {
		t.Fatal(err)
	}
	after := streamStates(ctx, t, dst)
	for _, name := range heapdelStreams {
		b, a := before[name], after[name]
		if a.Config.Replicas != 3 {
			t.Errorf("%s: %d replicas on the cluster, want 3", name, a.Config.Replicas)
		}
		if a.Cluster == nil || a.Cluster.Leader == "" || len(a.Cluster.Replicas) != 2 {
			t.Errorf("%s: cluster info %+v, want a leader and 2 replicas", name, a.Cluster)
		} else {
			for _, r := range a.Cluster.Replicas {
				if !r.Current {
					t.Errorf("%s: replica %s is not current", name, r.Name)
				}
			}
		}
		if name == "HEAP_DELETION_SCHEDULE" {
			// The restored schedule is live at once: the cluster adds recheck ticks
			// (heapdel takes them when it starts). What must come across is the
			// schedule itself.
			if got, want := lastMsg(ctx, t, dst, name, "heap.deletion.schedule.recheck"), lastMsg(ctx, t, src, name, "heap.deletion.schedule.recheck"); got != want {
				t.Errorf("%s: the schedule on the cluster is %s, on the old store %s", name, got, want)
			}
			continue
		}
		if a.State.Msgs != b.State.Msgs || a.State.FirstSeq != b.State.FirstSeq || a.State.LastSeq != b.State.LastSeq || a.State.NumSubjects != b.State.NumSubjects {
			t.Errorf("%s: state on the cluster %d msgs, seq %d–%d, %d subjects; on the old store %d msgs, seq %d–%d, %d subjects",
				name, a.State.Msgs, a.State.FirstSeq, a.State.LastSeq, a.State.NumSubjects, b.State.Msgs, b.State.FirstSeq, b.State.LastSeq, b.State.NumSubjects)
		}
		if !slices.Equal(a.consumers, b.consumers) {
			t.Errorf("%s: consumers on the cluster %v, on the old store %v", name, a.consumers, b.consumers)
		}
	}
	for name, want := range map[string]map[string]kvEntry{"HEAP_DELETION_JOBS": jobsBefore, "HEAP_DELETION_REQUESTS": requestsBefore} {
		got := bucketContents(ctx, t, dst, name)
		if !maps.EqualFunc(got, want, func(a, b kvEntry) bool { return a.rev == b.rev && bytes.Equal(a.value, b.value) }) {
			t.Errorf("bucket %s differs on the cluster: %d keys, %d on the old store", name, len(got), len(want))
		}
	}
	if len(requestsBefore) == 0 {
		t.Error("no Heap request was followed on the old store: the test moved none")
	}
	if cli != nil {
		// Step 5 of the page: the counts must be equal but for the schedule, and
		// the report runs.
		countsAfter := cli.counts(t, c.URLs())
		for _, name := range heapdelStreams {
			if name != "HEAP_DELETION_SCHEDULE" && countsAfter[name] != countsBefore[name] {
				t.Errorf("the page's counts differ: %s before, %s after", countsBefore[name], countsAfter[name])
			}
		}
		report, err := cli.run(c.URLs(), "stream", "report")
		if err != nil {
			t.Error(err)
		}
		t.Logf("nats stream report:\n%s", report)
	}
	t.Logf("moved %d queued commands, %d jobs, %d entries of followed Heap requests", after["HEAP_DELETION"].State.Msgs, len(jobsBefore), len(requestsBefore))
	if t.Failed() {
		return
	}

	// 5. heapdel on the cluster finishes everything; Heap now completes deletions.
	moved.Store(true)
	cfg.Replicas = 3
	svc = startHeapdel(ctx, t, cfg, connectTo(t, c.URLs()), sim.URL, logs)
	waitJobs(ctx, t, bucket(ctx, t, dst, "HEAP_DELETION_JOBS"), submitted+queued, consumer.JobComplete)
	closeHeapdel(t, svc)
	users := map[string]int{}
	for _, s := range sim.Submissions() {
		for _, u := range s.Users {
			users[u.Identity]++
		}
	}
	if len(users) != submitted+queued {
		t.Errorf("Heap received %d distinct users, want %d", len(users), submitted+queued)
	}
	for u, n := range users {
		if n > 1 {
			t.Errorf("user %s submitted to Heap %d times", u, n)
		}
	}
}

func connectTo(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func startHeapdel(ctx context.Context, t *testing.T, cfg consumer.Config, nc *nats.Conn, heapURL string, logs *testkit.Buffer) *consumer.Service {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := zerolog.New(logs).Level(zerolog.InfoLevel)
	heap, err := heapclient.New(heapclient.Config{
		BaseURL: heapURL, AppID: "sim-app", APIKey: "sim-key",
		Rate: 1000, Burst: 100, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		MaxRetries: 3, RetryBudget: 2 * time.Second, RequestTimeout: 2 * time.Second,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := consumer.New(cfg, nc, heap, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := svc.Start(sctx); err != nil {
		closeHeapdel(t, svc)
		t.Fatalf("start heapdel: %v", err)
	}
	return svc
}

func closeHeapdel(t *testing.T, svc *consumer.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	if err := svc.Close(ctx); err != nil {
		t.Errorf("close heapdel: %v", err)
	}
}

// publishCommands publishes n deletion commands, request ids and identities from
// first on, each acknowledged by JetStream.
func publishCommands(ctx context.Context, t *testing.T, nc *nats.Conn, first, n int) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for i := first; i < first+n; i++ {
		m, err := events.NewCommandMsg("heap.deletion.requested", events.Command{
			RequestID: fmt.Sprintf("dsr-%04d", i),
			Identity:  fmt.Sprintf("user-%04d@example.com", i),
		}, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish command %d: %v", i, err)
		}
	}
}

func bucket(ctx context.Context, t *testing.T, nc *nats.Conn, name string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
	return kv
}

// waitJobs waits until n jobs are in state status.
func waitJobs(ctx context.Context, t *testing.T, kv jetstream.KeyValue, n int, status string) {
	t.Helper()
	got := 0
	for {
		got = 0
		err := consumer.ListJobs(ctx, kv, consumer.JobFilter{Status: []string{status}}, func(consumer.Job) error {
			got++
			return nil
		})
		if err == nil && got == n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d of %d jobs %s (%v)", got, n, status, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamState is what the migration must keep of a stream.
type streamState struct {
	server.StreamInfo
	consumers []string // name: pending, ack floor, delivered
}

func streamStates(ctx context.Context, t *testing.T, nc *nats.Conn) map[string]streamState {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]streamState{}
	for _, name := range heapdelStreams {
		var si server.StreamInfo
		apiRequest(t, nc, "$JS.API.STREAM.INFO."+name, nil, &si)
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		st := streamState{StreamInfo: si}
		for ci := range s.ListConsumers(ctx).Info() {
			st.consumers = append(st.consumers, fmt.Sprintf("%s: %d pending, %d ack pending, ack floor %d, delivered %d",
				ci.Name, ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.Delivered.Stream))
		}
		slices.Sort(st.consumers)
		out[name] = st
	}
	return out
}

// lastMsg returns the last message on subject in stream: its sequence, headers
// and data.
func lastMsg(ctx context.Context, t *testing.T, nc *nats.Conn, stream, subject string) string {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatalf("%s: last message on %s: %v", stream, subject, err)
	}
	return fmt.Sprintf("seq %d %v %q", m.Sequence, m.Header, m.Data)
}

type kvEntry struct {
	rev   uint64
	value []byte
}

// bucketContents returns every key of bucket with its value and revision.
func bucketContents(ctx context.Context, t *testing.T, nc *nats.Conn, name string) map[string]kvEntry {
	t.Helper()
	kv := bucket(ctx, t, nc, name)
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kvEntry{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatalf("bucket %s key %s: %v", name, k, err)
		}
		out[k] = kvEntry{rev: e.Revision(), value: e.Value()}
	}
	return out
}

// apiRequest sends a JetStream API request and decodes the answer into resp
// (which embeds server.ApiResponse or is a server.StreamInfo), failing the test on
// an API error.
func apiRequest(t *testing.T, nc *nats.Conn, subject string, req, resp any) {
	t.Helper()
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			t.Fatal(err)
		}
	}
	m, err := nc.Request(subject, body, 30*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var apiErr server.ApiResponse
	if err := json.Unmarshal(m.Data, &apiErr); err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	if apiErr.Error != nil {
		t.Fatalf("%s: %v", subject, apiErr.Error)
	}
	if err := json.Unmarshal(m.Data, resp); err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
}

// backupStream is `nats stream backup` (consumers included): it asks the server for
// a snapshot of stream and returns the restore request it implies (the stream's
// configuration and state) and the snapshot's bytes.
func backupStream(t *testing.T, nc *nats.Conn, stream string) (server.JSApiStreamRestoreRequest, []byte) {
	t.Helper()
	chunks := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(nats.NewInbox(), chunks)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var resp server.JSApiStreamSnapshotResponse
	apiRequest(t, nc, "$JS.API.STREAM.SNAPSHOT."+stream, server.JSApiStreamSnapshotRequest{
		DeliverSubject: sub.Subject, ChunkSize: 128 << 10, CheckMsgs: true,
	}, &resp)
	var data bytes.Buffer
	for {
		select {
		case m := <-chunks:
			if len(m.Data) == 0 { // the end: no status, or 204, when all went well
				if s := m.Header.Get("Status"); s != "" && s != "204" {
					t.Fatalf("snapshot of %s: %s %s", stream, s, m.Header.Get("Description"))
				}
				return server.JSApiStreamRestoreRequest{Config: *resp.Config, State: *resp.State}, data.Bytes()
			}
			data.Write(m.Data)
			if m.Reply != "" {
				if err := m.Respond(nil); err != nil {
					t.Fatal(err)
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("snapshot of %s: no chunk for 30s", stream)
		}
	}
}

// restoreStream is `nats stream restore`: it sends the snapshot to the server in
// chunks and returns the restored stream's info. Where the nats CLI would stop with
// an error it does what docs/nats-cluster.md tells the operator to do, and says so
// in the test log: a restore request that timed out (no meta leader at that moment)
// is sent again once the stream is known not to exist; a chunk that met no responders
// (the stream leader's restore subscription not yet known to the node this client is
// on) reached nobody, and is sent again.
func restoreStream(t *testing.T, nc *nats.Conn, req server.JSApiStreamRestoreRequest, data []byte) server.StreamInfo {
	t.Helper()
	name := req.Config.Name
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var m *nats.Msg
	for attempt := 1; ; attempt++ {
		if m, err = nc.Request("$JS.API.STREAM.RESTORE."+name, body, 20*time.Second); err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("restore %s: %v", name, err)
		}
		var info server.JSApiStreamInfoResponse
		if r, err := nc.Request("$JS.API.STREAM.INFO."+name, nil, 20*time.Second); err != nil || json.Unmarshal(r.Data, &info) != nil || info.Error == nil {
			t.Fatalf("restore %s timed out, and the stream may exist (%v): remove it and restore again", name, err)
		}
		t.Logf("restore %s: the request timed out; the stream does not exist; sent again", name)
	}
	var resp server.JSApiStreamRestoreResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil || resp.Error != nil {
		t.Fatalf("restore %s: %v %v", name, err, resp.Error)
	}
	const chunk = 128 << 10
	for off := 0; off < len(data); off += chunk {
		deadline := time.Now().Add(5 * time.Second)
		for {
			m, err = nc.Request(resp.DeliverSubject, data[off:min(off+chunk, len(data))], 30*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
				break
			}
			t.Logf("restore %s: chunk at %d met no responders; sent again", name, off)
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("restore %s: chunk at %d: %v", name, off, err)
		}
		if len(m.Data) > 0 {
			t.Fatalf("restore %s: chunk at %d: %s", name, off, m.Data)
		}
	}
	var done server.JSApiStreamCreateResponse
	apiRequest(t, nc, resp.DeliverSubject, nil, &done)
	if done.StreamInfo == nil {
		t.Fatalf("restore %s: no stream info in the answer", name)
	}
	return *done.StreamInfo
}

// natsCLI runs the nats CLI (github.com/nats-io/natscli) as an operator following
// docs/nats-cluster.md would, from a directory that is also its HOME, so that no
// context or setting of the machine's user applies.
type natsCLI struct {
	path string
	dir  string
}

// findNatsCLI returns the nats CLI from $NATS_CLI, the PATH or $(go env
// GOPATH)/bin, as cmd/heapdel's natsCLI does, or nil where it is not installed.
func findNatsCLI(t *testing.T) *natsCLI {
	t.Helper()
	path := testkit.NatsCLI()
	if path == "" {
		return nil
	}
	return &natsCLI{path: path, dir: t.TempDir()}
}

// run runs `nats -s url --no-context args...` and returns its standard output; on
// failure the error holds both outputs. The NATS_ variables of the environment
// (a user, credentials) are left out: the servers here have no authentication.
func (c *natsCLI) run(url string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, append([]string{"-s", url, "--no-context"}, args...)...)
	cmd.Dir = c.dir
	cmd.Env = []string{"HOME=" + c.dir}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "NATS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("nats %s: %w\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String(), nil
}

// checkStreamList runs step 2's `nats stream ls --all`, which must list the five
// streams (without --all it leaves out the buckets' KV_ streams) and no
// HEAP_DELETION_MIGRATION.
func (c *natsCLI) checkStreamList(t *testing.T, url string) {
	t.Helper()
	out, err := c.run(url, "stream", "ls", "--all")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range heapdelStreams {
		if !strings.Contains(out, " "+name+" ") {
			t.Errorf("nats stream ls --all does not list %s:\n%s", name, out)
		}
	}
	if strings.Contains(out, "HEAP_DELETION_MIGRATION") {
		t.Errorf("nats stream ls --all lists an interrupted upgrade:\n%s", out)
	}
}

// counts returns, by stream, the line that the loop of steps 3 and 5 prints:
// `nats stream info "$s" --json | jq -c '{stream: .config.name, messages:
// .state.messages, first: .state.first_seq, last: .state.last_seq, subjects:
// .state.num_subjects}'`. A field missing from the CLI's JSON, which jq would
// print as null and so compare equal before and after, fails the test.
func (c *natsCLI) counts(t *testing.T, url string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range heapdelStreams {
		js, err := c.run(url, "stream", "info", name, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			Config struct {
				Name *string `json:"name"`
			} `json:"config"`
			State struct {
				Messages    *uint64 `json:"messages"`
				FirstSeq    *uint64 `json:"first_seq"`
				LastSeq     *uint64 `json:"last_seq"`
				NumSubjects *uint64 `json:"num_subjects"`
			} `json:"state"`
		}
		if err := json.Unmarshal([]byte(js), &info); err != nil {
			t.Fatalf("nats stream info %s --json: %v\n%s", name, err, js)
		}
		if info.Config.Name == nil || info.State.Messages == nil || info.State.FirstSeq == nil || info.State.LastSeq == nil || info.State.NumSubjects == nil {
			t.Fatalf("nats stream info %s --json lacks a field the page's jq line reads:\n%s", name, js)
		}
		line, err := json.Marshal(struct {
			Stream   string `json:"stream"`
			Messages uint64 `json:"messages"`
			First    uint64 `json:"first"`
			Last     uint64 `json:"last"`
			Subjects uint64 `json:"subjects"`
		}{*info.Config.Name, *info.State.Messages, *info.State.FirstSeq, *info.State.LastSeq, *info.State.NumSubjects})
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(line)
	}
	return out
}

// countsLine is the line of [natsCLI.counts] for the stream info the server gives.
func countsLine(si server.StreamInfo) string {
	return fmt.Sprintf(`{"stream":%q,"messages":%d,"first":%d,"last":%d,"subjects":%d}`,
		si.Config.Name, si.State.Msgs, si.State.FirstSeq, si.State.LastSeq, si.State.NumSubjects)
}

// backup runs step 3's `nats stream backup "$s" "backup/$s" --no-progress`.
func (c *natsCLI) backup(t *testing.T, url, name string) {
	t.Helper()
	if out, err := c.run(url, "stream", "backup", name, "backup/"+name, "--no-progress"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// restore runs step 4's `nats stream restore "backup/$s" --replicas 3
// --no-progress`. When it fails, it does what the page then tells the operator:
// look at the stream with `nats stream info <stream> --no-select`; restore again
// if it does not exist; remove it (`nats stream rm <stream> -f`) and restore again
// if it holds fewer than counted messages; and stop there if it holds them all.
func (c *natsCLI) restore(t *testing.T, url, name string, counted uint64) {
	t.Helper()
	const attempts = 4
	for attempt := 1; ; attempt++ {
		out, err := c.run(url, "stream", "restore", "backup/"+name, "--replicas", "3", "--no-progress")
		if err == nil {
			if !strings.Contains(out, fmt.Sprintf("Restored stream %q", name)) {
				t.Fatalf("nats stream restore backup/%s succeeded without saying so:\n%s", name, out)
			}
			return
		}
		if attempt == attempts {
			t.Fatalf("restore %s failed %d times, the last: %v", name, attempts, err)
		}
		msgs, exists := c.look(t, url, name)
		switch {
		case !exists:
			t.Logf("restore %s failed (%v); the stream does not exist; restoring again", name, err)
		case msgs < counted:
			t.Logf("restore %s failed (%v); the stream exists with %d of %d messages; removing it and restoring again", name, err, msgs, counted)
			if out, err := c.run(url, "stream", "rm", name, "-f"); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		default:
			t.Logf("restore %s failed (%v), but the stream exists with its %d messages", name, err, counted)
			return
		}
	}
}

// look runs `nats stream info <stream> --no-select --json` until it answers, for
// at most 30s, and returns the stream's message count and whether it exists. A
// stream the server does not know is one the CLI cannot pick: without a terminal
// it says so ("could not pick a Stream"), at a terminal "unknown stream".
func (c *natsCLI) look(t *testing.T, url, name string) (msgs uint64, exists bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.run(url, "stream", "info", name, "--no-select", "--json")
		if err == nil {
			var info server.StreamInfo
			if err := json.Unmarshal([]byte(out), &info); err != nil {
				t.Fatalf("nats stream info %s: %v\n%s", name, err, out)
			}
			return info.State.Msgs, true
		}
		if strings.Contains(err.Error(), "could not pick a Stream") {
			return 0, false
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not look at %s after a failed restore: %v", name, err)
		}
		t.Logf("nats stream info %s: %v; looking again", name, err)
		time.Sleep(time.Second)
	}
}
