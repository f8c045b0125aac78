package consumer_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// apiEnv is a running replica with its API, one real job taken to complete, and
// the sample jobs written beside it.
func apiEnv(t *testing.T) (*env, micro.Service) {
	t.Helper()
	e := newEnv(t, heaptest.Options{}, func(c *consumer.Config) { c.Version = "v1.2.3" })
	svc := e.replica(nil)
	e.publish(false, events.Command{RequestID: "api-real-1", Identity: "api-person@example.com"})
	e.waitTerminal(15*time.Second, "api-real-1")
	kv, err := e.js.KeyValue(context.Background(), "HEAP_DELETION_JOBS")
	if err != nil {
		t.Fatal(err)
	}
	putJobs(t, kv, sampleJobs()[:3]...) // complete, complete late, failed
	api := svc.API()
	if api == nil {
		t.Fatal("the API did not start")
	}
	return e, api
}

// call sends one API request and returns the reply, with its micro error code ("" on success).
func call(t *testing.T, nc *nats.Conn, subject string, body any) (data []byte, code string, m *nats.Msg) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	m, err := nc.Request(subject, b, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return m.Data, m.Header.Get(micro.ErrorCodeHeader), m
}

func TestAPIStatus(t *testing.T) {
	e, _ := apiEnv(t)
	subj := consumer.APISubject("heap.deletion", consumer.EndpointStatus)

	data, code, _ := call(t, e.nc, subj, consumer.StatusRequest{RequestID: "api-real-1"})
	if code != "" {
		t.Fatalf("status of a known job: error %s %s", code, data)
	}
	var job consumer.Job
	if err := json.Unmarshal(data, &job); err != nil || job.RequestID != "api-real-1" || job.Status != "complete" || job.HeapDeletionRequestID == "" || len(job.History) < 3 {
		t.Fatalf("status reply %s (%v)", data, err)
	}
	if strings.Contains(string(data), "identity_hash") || strings.Contains(string(data), "api-person") {
		t.Fatalf("status reply shows the identity or its hash: %s", data)
	}

	for _, tc := range []struct {
		name, body, code string
	}{
		{"unknown", `{"request_id":"no-such-id"}`, "404"},
		{"not json", `request_id=x`, "400"},
		{"no id", `{}`, "400"},
		{"bad id", `{"request_id":"has space"}`, "400"},
		{"too long", `{"request_id":"` + strings.Repeat("x", 129) + `"}`, "400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, code, m := call(t, e.nc, subj, tc.body)
			if code != tc.code || m.Header.Get(micro.ErrorHeader) == "" {
				t.Fatalf("code %q (%s), want %s", code, m.Header.Get(micro.ErrorHeader), tc.code)
			}
			var apiErr consumer.APIError
			if err := json.Unmarshal(data, &apiErr); err != nil || apiErr.Error == "" || apiErr.Code == 0 {
				t.Fatalf("error body %s", data)
			}
		})
	}
	if !strings.Contains(e.logs.String(), "request-reply API registered") {
		t.Error("the API's start is not logged")
	}
}

func TestAPIJobs(t *testing.T) {
	e, _ := apiEnv(t)
	subj := consumer.APISubject("heap.deletion", consumer.EndpointJobs)
	jobs := func(req any) (consumer.JobsReply, string) {
		t.Helper()
		data, code, _ := call(t, e.nc, subj, req)
		var r consumer.JobsReply
		if code == "" {
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			if strings.Contains(string(data), "identity_hash") || strings.Contains(string(data), "hash-") {
				t.Fatalf("jobs reply shows identity hashes: %s", data)
			}
		}
		return r, code
	}
	ids := func(r consumer.JobsReply) []string {
		var out []string
		for _, j := range r.Jobs {
			out = append(out, j.RequestID)
		}
		return out
	}
	// No filter: every job, sorted.
	if r, code := jobs(""); code != "" || !slices.Equal(ids(r), []string{"api-real-1", "dsr-a.1", "dsr-a:2", "dsr-b-3"}) || r.Next != "" {
		t.Fatalf("all: %s %v next %q", code, ids(r), r.Next)
	}
	if r, _ := jobs(consumer.JobsRequest{Status: []string{"failed"}}); !slices.Equal(ids(r), []string{"dsr-b-3"}) {
		t.Fatalf("failed: %v", ids(r))
	}
	if r, _ := jobs(consumer.JobsRequest{Reason: "heap_rejected", OlderThan: "1h"}); !slices.Equal(ids(r), []string{"dsr-b-3"}) {
		t.Fatalf("reason and age: %v", ids(r))
	}
	if r, _ := jobs(consumer.JobsRequest{Breached: true}); !slices.Equal(ids(r), []string{"dsr-a:2"}) {
		t.Fatalf("breached: %v", ids(r))
	}
	// Pages of two.
	r, _ := jobs(consumer.JobsRequest{Limit: 2})
	if !slices.Equal(ids(r), []string{"api-real-1", "dsr-a.1"}) || r.Next != "dsr-a.1" {
		t.Fatalf("page 1: %v next %q", ids(r), r.Next)
	}
	r, _ = jobs(consumer.JobsRequest{Limit: 2, After: r.Next})
	if !slices.Equal(ids(r), []string{"dsr-a:2", "dsr-b-3"}) || r.Next != "" {
		t.Fatalf("page 2: %v next %q", ids(r), r.Next)
	}
	for _, bad := range []any{`[1,2]`, consumer.JobsRequest{Status: []string{"gone"}}, consumer.JobsRequest{OlderThan: "soon"}, consumer.JobsRequest{Limit: consumer.MaxPageLimit + 1}} {
		if _, code := jobs(bad); code != "400" {
			t.Errorf("%v: code %q, want 400", bad, code)
		}
	}
}

func TestAPIReport(t *testing.T) {
	e, _ := apiEnv(t)
	subj := consumer.APISubject("heap.deletion", consumer.EndpointReport)
	data, code, m := call(t, e.nc, subj, consumer.ReportRequest{Limit: 2})
	if code != "" {
		t.Fatalf("report: %s %s", code, data)
	}
	rows, err := csv.NewReader(strings.NewReader(string(data))).ReadAll()
	if err != nil || len(rows) != 3 || !slices.Equal(rows[0], consumer.ReportColumns()) || rows[1][0] != "api-real-1" || rows[2][0] != "dsr-a.1" {
		t.Fatalf("report page 1: %v %v", rows, err)
	}
	next := m.Header.Get(consumer.ReportNextHeader)
	if next != "dsr-a.1" {
		t.Fatalf("next %q", next)
	}
	data, _, m = call(t, e.nc, subj, consumer.ReportRequest{Format: "jsonl", After: next})
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"request_id":"dsr-a:2"`) || !strings.Contains(lines[1], `"status":"failed"`) || m.Header.Get(consumer.ReportNextHeader) != "" {
		t.Fatalf("report page 2: %s", data)
	}
	// A window on completion time.
	data, _, _ = call(t, e.nc, subj, consumer.ReportRequest{Since: sampleNow.Add(-80 * time.Hour), Until: sampleNow})
	if rows, _ := csv.NewReader(strings.NewReader(string(data))).ReadAll(); len(rows) != 3 || rows[1][0] != "dsr-a:2" || rows[2][0] != "dsr-b-3" {
		t.Fatalf("window: %v", rows)
	}
	if _, code, _ := call(t, e.nc, subj, consumer.ReportRequest{Format: "xml"}); code != "400" {
		t.Fatalf("format xml: code %q", code)
	}
}

func TestAPIDiscovery(t *testing.T) {
	e, api := apiEnv(t)
	call(t, e.nc, consumer.APISubject("heap.deletion", consumer.EndpointStatus), consumer.StatusRequest{RequestID: "api-real-1"})

	data, _, _ := call(t, e.nc, "$SRV.INFO.heapdel", "")
	var info micro.Info
	if err := json.Unmarshal(data, &info); err != nil || info.Name != "heapdel" || info.Version != "1.2.3" || info.Metadata["build_version"] != "v1.2.3" {
		t.Fatalf("$SRV.INFO.heapdel: %s (%v)", data, err)
	}
	var subjects []string
	for _, ep := range info.Endpoints {
		subjects = append(subjects, ep.Subject)
	}
	slices.Sort(subjects)
	if want := []string{"heap.deletion.api.jobs", "heap.deletion.api.redrive", "heap.deletion.api.report", "heap.deletion.api.status"}; !slices.Equal(subjects, want) {
		t.Fatalf("endpoints %v, want %v", subjects, want)
	}
	data, _, _ = call(t, e.nc, "$SRV.STATS.heapdel."+api.Info().ID, "")
	var stats micro.Stats
	if err := json.Unmarshal(data, &stats); err != nil {
		t.Fatal(err)
	}
	for _, ep := range stats.Endpoints {
		if ep.Name == consumer.EndpointStatus && ep.NumRequests < 1 {
			t.Fatalf("stats count no status request: %s", data)
		}
	}
	if data, _, _ := call(t, e.nc, "$SRV.PING", ""); !strings.Contains(string(data), `"name":"heapdel"`) {
		t.Fatalf("$SRV.PING: %s", data)
	}
}

// noHeap is a Heap that is never asked: the permission test sends no command.
type noHeap struct{}

func (noHeap) Submit(context.Context, []heapclient.User) (string, error) {
	return "", errors.New("not used")
}

func (noHeap) Status(context.Context, string) (heapclient.Status, error) {
	return "", errors.New("not used")
}

// TestAPIPermissions runs the API as a user that may subscribe only to its inbox,
// the API's subjects and the micro discovery subjects, and asks it as a caller
// allowed to publish on heap.deletion.api.> and $SRV.> (answered) and as one who
// is not (refused by the server; the service never sees the request).
func TestAPIPermissions(t *testing.T) {
	perm := func(pub, sub []string) *server.Permissions {
		return &server.Permissions{Publish: &server.SubjectPermission{Allow: pub}, Subscribe: &server.SubjectPermission{Allow: sub}}
	}
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		Users: []*server.User{
			{Username: "svc", Password: "pw-svc", Permissions: perm([]string{">"}, []string{"_INBOX.>", "heap.deletion.api.>", "$SRV.>"})},
			{Username: "caller", Password: "pw-caller", Permissions: perm([]string{"heap.deletion.api.>", "$SRV.>"}, []string{"_INBOX.>"})},
			{Username: "stranger", Password: "pw-stranger", Permissions: perm([]string{"heap.deletion.requested"}, []string{"_INBOX.>"})},
		},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	var mu sync.Mutex
	asyncErrs := map[string][]error{}
	dial := func(user string) *nats.Conn {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, "pw-"+user),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				mu.Lock()
				defer mu.Unlock()
				asyncErrs[user] = append(asyncErrs[user], err)
			}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	svcConn := dial("svc")
	logs := &syncBuffer{}
	svc, err := consumer.New(fastConfig(), svcConn, noHeap{}, zerolog.New(logs), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(t, svc) })
	api := svc.API()
	if api == nil {
		t.Fatalf("the API did not start:\n%s", logs.String())
	}

	caller := dial("caller")
	if _, code, _ := call(t, caller, "heap.deletion.api.status", `{"request_id":"nobody"}`); code != "404" {
		t.Fatalf("allowed caller: code %q, want 404", code)
	}
	if data, _, _ := call(t, caller, "$SRV.INFO.heapdel", ""); !strings.Contains(string(data), `"name":"heapdel"`) {
		t.Fatalf("allowed caller's discovery: %s", data)
	}

	stranger := dial("stranger")
	for _, subj := range []string{"heap.deletion.api.status", "heap.deletion.api.jobs", "$SRV.INFO.heapdel"} {
		if m, err := stranger.Request(subj, []byte(`{"request_id":"nobody"}`), 500*time.Millisecond); err == nil {
			t.Fatalf("a caller without permission got an answer on %s: %s", subj, m.Data)
		}
	}
	eventually(t, 5*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		for _, err := range asyncErrs["stranger"] {
			if errors.Is(err, nats.ErrPermissionViolation) {
				return ""
			}
		}
		return "the server did not report the stranger's publish as a permission violation"
	})
	for _, ep := range api.Stats().Endpoints {
		if ep.Name == consumer.EndpointStatus && ep.NumRequests != 1 {
			t.Fatalf("the status endpoint saw %d requests, want the allowed caller's 1", ep.NumRequests)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asyncErrs["svc"]) > 0 || len(asyncErrs["caller"]) > 0 {
		t.Fatalf("service or allowed caller refused: %v %v", asyncErrs["svc"], asyncErrs["caller"])
	}
}
