package consumer_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/internal/embedded"
)

// jobStore is a job bucket on a real server, filled by the test.
func jobStore(t *testing.T, bucket string) jetstream.KeyValue {
	t.Helper()
	srv := natsServer(t, t.TempDir())
	js, err := jetstream.New(connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func putJobs(t *testing.T, kv jetstream.KeyValue, jobs ...consumer.Job) {
	t.Helper()
	for _, j := range jobs {
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(context.Background(), consumer.JobKey(j.RequestID), b); err != nil {
			t.Fatal(err)
		}
	}
}

// now is the fixed time the sample jobs are measured against.
var sampleNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sampleJobs is one job of each kind the filters tell apart.
func sampleJobs() []consumer.Job {
	h := func(hours int) time.Time { return sampleNow.Add(time.Duration(hours) * time.Hour) }
	return []consumer.Job{
		// completed in time
		{RequestID: "dsr-a.1", Status: "complete", Attempt: 1, IdentityHash: "hash-a", HeapDeletionRequestID: "heap-1",
			RequestedAt: h(-100), SubmittedAt: h(-99), CompletedAt: h(-90), Deadline: h(-80)},
		// completed late
		{RequestID: "dsr-a:2", Status: "complete", Attempt: 1, IdentityHash: "hash-b", HeapDeletionRequestID: "heap-1",
			RequestedAt: h(-100), SubmittedAt: h(-99), CompletedAt: h(-70), Deadline: h(-80)},
		// failed, rejected by Heap, no deadline
		{RequestID: "dsr-b-3", Status: "failed", Attempt: 2, IdentityHash: "hash-c", Reason: "heap_rejected",
			RequestedAt: h(-10), CompletedAt: h(-9)},
		// processing, deadline in 12h
		{RequestID: "dsr-b-4", Status: "processing", Attempt: 1, IdentityHash: "hash-d", HeapDeletionRequestID: "heap-2",
			RequestedAt: h(-2), SubmittedAt: h(-2), Deadline: h(12)},
		// processing, deadline passed
		{RequestID: "other-5", Status: "processing", Attempt: 1, IdentityHash: "hash-e", HeapDeletionRequestID: "heap-2",
			RequestedAt: h(-200), SubmittedAt: h(-199), Deadline: h(-1)},
		// held
		{RequestID: "other-6", Status: "held", Attempt: 1, IdentityHash: "hash-f", Reason: "heap_answer_unreadable",
			RequestedAt: h(-30)},
		// accepted, deadline in 3 days
		{RequestID: "other-7", Status: "accepted", Attempt: 1, IdentityHash: "hash-g", RequestedAt: h(0), Deadline: h(72)},
	}
}

func listIDs(t *testing.T, kv jetstream.KeyValue, f consumer.JobFilter) []string {
	t.Helper()
	var got []string
	err := consumer.ListJobs(context.Background(), kv, f, func(j consumer.Job) error {
		got = append(got, j.RequestID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func TestJobsFilter(t *testing.T) {
	kv := jobStore(t, "HEAP_DELETION_JOBS")
	putJobs(t, kv, sampleJobs()...)
	if _, err := kv.Put(context.Background(), "garbage", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	deleted := consumer.Job{RequestID: "gone-1", Status: "failed"}
	putJobs(t, kv, deleted)
	if err := kv.Delete(context.Background(), consumer.JobKey(deleted.RequestID)); err != nil {
		t.Fatal(err)
	}
	h := func(hours int) time.Time { return sampleNow.Add(time.Duration(hours) * time.Hour) }
	for _, tc := range []struct {
		name string
		f    consumer.JobFilter
		want []string
	}{
		{"all", consumer.JobFilter{}, []string{"dsr-a.1", "dsr-a:2", "dsr-b-3", "dsr-b-4", "other-5", "other-6", "other-7"}},
		{"status", consumer.JobFilter{Status: []string{"processing", "held"}}, []string{"dsr-b-4", "other-5", "other-6"}},
		{"reason", consumer.JobFilter{Reason: "heap_rejected"}, []string{"dsr-b-3"}},
		{"older than", consumer.JobFilter{OlderThan: 24 * time.Hour}, []string{"dsr-a.1", "dsr-a:2", "other-5", "other-6"}},
		{"breached", consumer.JobFilter{Breached: true}, []string{"dsr-a:2", "other-5"}},
		{"due within 1d", consumer.JobFilter{DueWithin: 24 * time.Hour}, []string{"dsr-b-4"}},
		{"due within 4d", consumer.JobFilter{DueWithin: 96 * time.Hour}, []string{"dsr-b-4", "other-7"}},
		{"prefix with escaped characters", consumer.JobFilter{Prefix: "dsr-a"}, []string{"dsr-a.1", "dsr-a:2"}},
		{"prefix dot", consumer.JobFilter{Prefix: "dsr-a."}, []string{"dsr-a.1"}},
		{"after", consumer.JobFilter{After: "dsr-b-4"}, []string{"other-5", "other-6", "other-7"}},
		{"completed since", consumer.JobFilter{Since: h(-80)}, []string{"dsr-a:2", "dsr-b-3"}},
		{"completed until", consumer.JobFilter{Until: h(-70)}, []string{"dsr-a.1"}},
		{"completed window and status", consumer.JobFilter{Status: consumer.TerminalStates(), Since: h(-95), Until: h(0)}, []string{"dsr-a.1", "dsr-a:2", "dsr-b-3"}},
		{"all must hold", consumer.JobFilter{Status: []string{"processing"}, Breached: true, Prefix: "dsr"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.Now = sampleNow
			if got := listIDs(t, kv, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestJobsListStopsAndFails(t *testing.T) {
	kv := jobStore(t, "HEAP_DELETION_JOBS")
	putJobs(t, kv, sampleJobs()...)
	n := 0
	err := consumer.ListJobs(context.Background(), kv, consumer.JobFilter{}, func(consumer.Job) error {
		if n++; n == 2 {
			return consumer.ErrStop
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Fatalf("ErrStop: err %v after %d jobs, want nil after 2", err, n)
	}
	boom := errors.New("boom")
	if err := consumer.ListJobs(context.Background(), kv, consumer.JobFilter{}, func(consumer.Job) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn's error: got %v", err)
	}
	// An empty store lists nothing, and does not wait.
	empty := jobStore(t, "EMPTY")
	if got := listIDs(t, empty, consumer.JobFilter{}); len(got) != 0 {
		t.Fatalf("empty store listed %v", got)
	}
}

func TestJobsPage(t *testing.T) {
	kv := jobStore(t, "HEAP_DELETION_JOBS")
	var want []string
	for i := range 57 {
		id := fmt.Sprintf("page-%03d", (i*37)%57) // written out of order
		want = append(want, id)
		putJobs(t, kv, consumer.Job{RequestID: id, Status: "complete", Attempt: 1})
	}
	slices.Sort(want)
	var got []string
	f := consumer.JobFilter{}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		jobs, next, err := consumer.JobPage(context.Background(), kv, f, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) > 10 {
			t.Fatalf("page of %d jobs, limit 10", len(jobs))
		}
		for _, j := range jobs {
			got = append(got, j.RequestID)
		}
		if next == "" {
			break
		}
		if next != jobs[len(jobs)-1].RequestID {
			t.Fatalf("next %q is not the page's last request id %q", next, jobs[len(jobs)-1].RequestID)
		}
		f.After = next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages hold %v,\nwant %v", got, want)
	}
	// A page that holds the rest exactly has no next.
	jobs, next, err := consumer.JobPage(context.Background(), kv, consumer.JobFilter{After: "page-046"}, 10)
	if err != nil || len(jobs) != 10 || next != "" {
		t.Fatalf("last full page: %d jobs, next %q, %v", len(jobs), next, err)
	}
}

func TestJobsRequestFilter(t *testing.T) {
	f, err := consumer.JobsRequest{Status: []string{"failed"}, OlderThan: "7d", DueWithin: "36h"}.Filter(sampleNow)
	if err != nil || f.OlderThan != 7*24*time.Hour || f.DueWithin != 36*time.Hour || !f.Now.Equal(sampleNow) {
		t.Fatalf("got %+v, %v", f, err)
	}
	for _, bad := range []consumer.JobsRequest{
		{Status: []string{"done"}}, {OlderThan: "a week"}, {DueWithin: "-1h"}, {OlderThan: "1.5d"}, {Limit: -1},
	} {
		if _, err := bad.Filter(sampleNow); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestReportWriter(t *testing.T) {
	jobs := sampleJobs()
	var b bytes.Buffer
	w, err := consumer.NewReportWriter(&b, "csv")
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs[:3] {
		if err := w.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"request_id", "status", "reason", "heap_deletion_request_id", "requested_at", "submitted_at", "completed_at", "deadline", "deadline_met", "attempt"},
		{"dsr-a.1", "complete", "", "heap-1", "2026-02-25T08:00:00Z", "2026-02-25T09:00:00Z", "2026-02-25T18:00:00Z", "2026-02-26T04:00:00Z", "true", "1"},
		{"dsr-a:2", "complete", "", "heap-1", "2026-02-25T08:00:00Z", "2026-02-25T09:00:00Z", "2026-02-26T14:00:00Z", "2026-02-26T04:00:00Z", "false", "1"},
		{"dsr-b-3", "failed", "heap_rejected", "", "2026-03-01T02:00:00Z", "", "2026-03-01T03:00:00Z", "", "", "2"},
	}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Fatalf("csv:\n%v\nwant\n%v", rows, want)
	}

	b.Reset()
	if w, err = consumer.NewReportWriter(&b, "jsonl"); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs[1:3] {
		if err := w.Write(j); err != nil {
			t.Fatal(err)
		}
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("jsonl: %d lines:\n%s", len(lines), b.String())
	}
	var row map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &row); err != nil {
		t.Fatal(err)
	}
	if len(row) != len(consumer.ReportColumns()) || row["deadline_met"] != nil || row["submitted_at"] != nil || row["attempt"] != 2.0 || row["reason"] != "heap_rejected" {
		t.Fatalf("jsonl row: %v", row)
	}
	if strings.Contains(b.String(), "hash-") {
		t.Fatal("the report holds an identity hash")
	}
	if _, err := consumer.NewReportWriter(&b, "xlsx"); err == nil {
		t.Fatal("format xlsx accepted")
	}
}

func TestJobsPublicHasNoIdentityHash(t *testing.T) {
	j := sampleJobs()[0]
	b, err := json.Marshal(consumer.Public(j))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "identity_hash") || strings.Contains(string(b), j.IdentityHash) {
		t.Fatalf("public job shows the identity hash: %s", b)
	}
	var back consumer.Job
	if err := json.Unmarshal(b, &back); err != nil || back.RequestID != j.RequestID || !back.Deadline.Equal(j.Deadline) {
		t.Fatalf("public job does not decode as a job: %+v, %v", back, err)
	}
}

// BenchmarkJobs reads a job store of 100,000 jobs (a fifth failed): every job,
// the failed ones, one sorted page, and the audit report. It prints the time of
// one whole read per operation.
//
//	go test -run '^$' -bench Jobs -benchtime 3x ./consumer/
func BenchmarkJobs(b *testing.B) {
	const n = 100_000
	srv, err := embedded.Start(embedded.Options{Port: -1, StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "HEAP_DELETION_JOBS"})
	if err != nil {
		b.Fatal(err)
	}
	t0 := sampleNow.Add(-1000 * time.Hour)
	for i := range n {
		j := consumer.Job{RequestID: fmt.Sprintf("dsr-2026-%06d", i), Attempt: 1, Status: "complete", Seq: uint64(i + 1),
			IdentityHash: "3a0af6455dcb7755727798327df00322", HeapDeletionRequestID: "c93fae81-f67a-46d6-acf1-0c3ba1c3e5a6",
			RequestedAt: t0, SubmittedAt: t0.Add(time.Second), CompletedAt: t0.Add(time.Hour), Deadline: t0.Add(720 * time.Hour),
			History: []consumer.Transition{{Status: "accepted", At: t0}, {Status: "submitted", At: t0.Add(time.Second)},
				{Status: "processing", At: t0.Add(time.Second)}, {Status: "complete", At: t0.Add(time.Hour)}}}
		if i%5 == 0 {
			j.Status, j.Reason, j.History = "failed", "heap_rejected", j.History[:2]
		}
		v, _ := json.Marshal(j)
		if _, err := js.PublishAsync("$KV.HEAP_DELETION_JOBS."+consumer.JobKey(j.RequestID), v); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	count := func(f consumer.JobFilter) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				if err := consumer.ListJobs(ctx, kv, f, func(consumer.Job) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("list-all", count(consumer.JobFilter{}))
	b.Run("list-failed", count(consumer.JobFilter{Status: []string{"failed"}}))
	b.Run("page-100", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := consumer.JobPage(ctx, kv, consumer.JobFilter{}, 100); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("report-csv", func(b *testing.B) {
		for b.Loop() {
			w, _ := consumer.NewReportWriter(io.Discard, "csv")
			if err := consumer.ListJobs(ctx, kv, consumer.JobFilter{Status: consumer.TerminalStates()}, w.Write); err != nil {
				b.Fatal(err)
			}
			_ = w.Flush()
		}
	})
}

// A listing that stops early (ErrStop, an error from fn, the context ended) leaves
// no goroutine behind: a key-value watch that nobody reads any more blocks its
// delivery goroutine on the full updates channel for as long as the process lives
// (the randomized fault test's leak check found one after a reconciliation was cut
// short at Close).
func TestListJobsStoppedEarlyLeavesNoGoroutine(t *testing.T) {
	srv := natsServer(t, t.TempDir())
	nc := connect(t, srv)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "LEAK_JOBS"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 { // more than the watch's channel holds
		j := consumer.Job{RequestID: fmt.Sprintf("leak-%03d", i), Status: consumer.JobComplete}
		b, _ := json.Marshal(j)
		if _, err := kv.Put(ctx, consumer.JobKey(j.RequestID), b); err != nil {
			t.Fatal(err)
		}
	}
	before := goleak.IgnoreCurrent()
	// fn is slow, as a caller writing each job to a slow reader is: meanwhile the
	// watch fills its channel and its delivery blocks.
	slowStop := func(consumer.Job) error {
		time.Sleep(300 * time.Millisecond)
		return consumer.ErrStop
	}
	if err := consumer.ListJobs(ctx, kv, consumer.JobFilter{}, slowStop); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	err = consumer.ListJobs(cctx, kv, consumer.JobFilter{}, func(consumer.Job) error {
		if n++; n == 1 {
			time.Sleep(300 * time.Millisecond)
			cancel()
		}
		return nil
	})
	if err == nil {
		t.Fatal("a listing whose context ended returned no error")
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("a listing stopped early left goroutines behind: %v", err)
	}
}
