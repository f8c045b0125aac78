package clustertest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
//     with three replicas, through JetStream's snapshot and restore API: the calls
//     `nats stream backup` and `nats stream restore --replicas 3` make (the nats
//     CLI itself does not run here).
//  4. Every stream on the cluster has three current replicas and the same
//     messages, sequences and consumers as on the old server; both buckets hold the
//     same keys, values and revisions.
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
	for _, name := range heapdelStreams {
		req, data := backupStream(t, src, name)
		req.Config.Replicas = 3
		si := restoreStream(t, dst, req, data)
		t.Logf("%s: %d messages, %d bytes of snapshot, restored with %d replicas", name, si.State.Msgs, len(data), si.Config.Replicas)
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
