package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// apiReplica starts one more replica with heapdel run's configuration (env) on
// its own connection and registers the request-reply API on it, so the commands
// find a service whether or not `heapdel run` registers one itself.
func apiReplica(t *testing.T, env map[string]string, opts ...nats.Option) micro.Service {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	cfg, err := config.NewLoader(fs, envOf(env), config.SetAll).Load()
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(io.Discard)
	_, nc, err := connectNATS(cfg, log, 0, "heapdel-test-api", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	reg := prometheus.NewRegistry()
	heap, err := newHeapClient(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := consumer.New(consumerConfig(cfg, appOptions{}), nc, heap, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	api := svc.API()
	if api == nil {
		t.Fatal("the API did not start")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Close(ctx)
	})
	return api
}

// jobsOut runs `heapdel jobs|report|status …` and fails the test on an error.
func jobsOut(t *testing.T, env map[string]string, args ...string) (stdout, stderr string) {
	t.Helper()
	out, errOut, err := runCLI(t, env, args...)
	if err != nil {
		t.Fatalf("heapdel %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out, errOut
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var row map[string]any
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		rows = append(rows, row)
	}
	return rows
}

func requestIDs(rows []map[string]any) []string {
	var ids []string
	for _, r := range rows {
		ids = append(ids, r["request_id"].(string))
	}
	return ids
}

// runJobs takes seven commands through `heapdel run`: five complete, one
// completed after its (past) deadline, one rejected by Heap.
func runJobs(t *testing.T, env map[string]string) {
	t.Helper()
	p := startProgram(t, []string{"run"}, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	nenv := natsEnv(env)
	jobsOut(t, nenv, "publish", "--request-id", "jr", "--count", "5")
	jobsOut(t, nenv, "publish", "--request-id", "jr-late", "--identity", "late-person@example.com", "--deadline", "2020-01-01T00:00:00Z")
	jobsOut(t, nenv, "publish", "--request-id", "jr-bad", "--identity", "reject-me@example.com")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err := runCLI(t, nenv, "jobs", "--direct", "--limit", "0", "--status", "complete,failed", "--json")
		if err == nil && len(jsonLines(t, out)) == 7 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs never all finished: %v\n%s\n%s", err, out, p.stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func rejectSim(t *testing.T) *heaptest.Server {
	sim := heaptest.NewServer(heaptest.Options{CompleteAfter: 200 * time.Millisecond, Rule: func(u heaptest.User) heaptest.Outcome {
		if u.Identity == "reject-me@example.com" {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}})
	t.Cleanup(sim.Close)
	return sim
}

func TestJobsAndReportCommands(t *testing.T) {
	srv := natsServer(t)
	env := baseEnv(t, srv.ClientURL(), rejectSim(t).URL)
	runJobs(t, env)
	api := apiReplica(t, env)
	nenv := natsEnv(env)
	all := []string{"jr-000001", "jr-000002", "jr-000003", "jr-000004", "jr-000005", "jr-bad", "jr-late"}
	var outputs []string

	// A table for people, sorted, from the service and from the job store alike.
	table, _ := jobsOut(t, nenv, "jobs")
	direct, _ := jobsOut(t, nenv, "jobs", "--direct")
	if table != direct {
		t.Errorf("the service's page and the job store's differ:\n%s\n%s", table, direct)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[0], "REQUEST ID") || !strings.Contains(lines[0], "HEAP REQUEST ID") {
		t.Fatalf("jobs table:\n%s", table)
	}
	if !strings.HasPrefix(lines[6], "jr-bad") || !strings.Contains(lines[6], "failed") || !strings.Contains(lines[6], "heap_rejected") {
		t.Errorf("jr-bad row: %q", lines[6])
	}
	outputs = append(outputs, table)

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--status", "failed"}, []string{"jr-bad"}},
		{[]string{"--reason", "heap_rejected"}, []string{"jr-bad"}},
		{[]string{"--breached"}, []string{"jr-late"}},
		{[]string{"--prefix", "jr-00"}, all[:5]},
		{[]string{"--older-than", "1h"}, nil},
		{[]string{"--due-within", "7d"}, nil},
		{[]string{"--limit", "0", "--status", "complete"}, []string{"jr-000001", "jr-000002", "jr-000003", "jr-000004", "jr-000005", "jr-late"}},
		{[]string{"--direct", "--status", "complete,failed"}, all},
		{[]string{"--since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, all},
		{[]string{"--direct", "--since", "2020-01-01", "--until", "2020-01-02"}, nil},
	} {
		args := append([]string{"jobs", "--json"}, tc.args...)
		out, _ := jobsOut(t, nenv, args...)
		got := requestIDs(jsonLines(t, out))
		slices.Sort(got) // --limit 0 streams unsorted
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v, want %v", args, got, tc.want)
		}
		if strings.Contains(out, "identity_hash") {
			t.Errorf("%v shows identity hashes:\n%s", args, out)
		}
		outputs = append(outputs, out)
	}

	// Pages of three, through the service and directly.
	for _, via := range [][]string{nil, {"--direct"}} {
		var got []string
		after := ""
		for page := 0; page < 5; page++ {
			args := append([]string{"jobs", "--json", "--limit", "3", "--after", after}, via...)
			out, errOut := jobsOut(t, nenv, args...)
			got = append(got, requestIDs(jsonLines(t, out))...)
			_, next, more := strings.Cut(errOut, "--after ")
			if !more {
				break
			}
			after = strings.Fields(next)[0]
		}
		if !slices.Equal(got, all) {
			t.Errorf("pages %v: %v, want %v", via, got, all)
		}
	}
	if _, _, err := runCLI(t, nenv, "jobs", "--status", "done"); !errors.Is(err, exitCode(2)) {
		t.Errorf("jobs --status done: %v, want exit status 2", err)
	}

	// The report: every finished job, one row each, streamed from the job store.
	out, errOut := jobsOut(t, nenv, "report")
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) != 8 || strings.Join(rows[0], ",") != "request_id,status,reason,heap_deletion_request_id,requested_at,submitted_at,completed_at,deadline,deadline_met,attempt" {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if !strings.Contains(errOut, "7 finished jobs") {
		t.Errorf("report's summary: %q", errOut)
	}
	byID := map[string][]string{}
	for _, r := range rows[1:] {
		byID[r[0]] = r
	}
	if r := byID["jr-late"]; r[1] != "complete" || r[7] != "2020-01-01T00:00:00Z" || r[8] != "false" || r[3] == "" {
		t.Errorf("jr-late row: %v", r)
	}
	if r := byID["jr-bad"]; r[1] != "failed" || r[2] != "heap_rejected" || r[8] != "" || r[9] != "1" {
		t.Errorf("jr-bad row: %v", r)
	}
	if r := byID["jr-000001"]; r[8] != "" || !strings.HasSuffix(r[6], "Z") {
		t.Errorf("jr-000001 row: %v", r)
	}
	outputs = append(outputs, out)
	out, _ = jobsOut(t, nenv, "report", "--format", "jsonl", "--since", "2000-01-01", "--until", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if n := len(jsonLines(t, out)); n != 7 {
		t.Errorf("report --format jsonl in a window holding all: %d rows", n)
	}
	outputs = append(outputs, out)
	out, _ = jobsOut(t, nenv, "report", "--since", time.Now().Add(48*time.Hour).Format(time.DateOnly))
	if strings.Count(out, "\n") != 1 {
		t.Errorf("report of a future window holds rows:\n%s", out)
	}
	for _, bad := range [][]string{{"--format", "xlsx"}, {"--since", "yesterday"}, {"--since", "2026-02-01", "--until", "2026-01-01"}} {
		if _, _, err := runCLI(t, nenv, append([]string{"report"}, bad...)...); !errors.Is(err, exitCode(2)) {
			t.Errorf("report %v: %v, want exit status 2", bad, err)
		}
	}

	// status: the service does not serve the identity hash; the job store does.
	out, _ = jobsOut(t, nenv, "status", "jr-bad")
	if !strings.Contains(out, "heap_rejected") || strings.Contains(out, "identity hash") {
		t.Errorf("status through the service:\n%s", out)
	}
	outputs = append(outputs, out)
	if out, _ := jobsOut(t, nenv, "status", "--direct", "jr-bad"); !strings.Contains(out, "identity hash") {
		t.Errorf("status --direct:\n%s", out)
	}
	if _, _, err := runCLI(t, nenv, "status", "no-such-job"); !errors.Is(err, exitCode(1)) {
		t.Errorf("status of an unknown id through the service: %v, want exit status 1", err)
	}
	if _, _, err := runCLI(t, nenv, "status", "not a request id"); !errors.Is(err, exitCode(2)) && !errors.Is(err, exitCode(1)) {
		t.Errorf("status of a malformed id: %v", err)
	}
	var served int
	for _, ep := range api.Stats().Endpoints {
		served += ep.NumRequests
	}
	if served == 0 {
		t.Error("no command asked the service")
	}
	// Without a service, the commands read the job store.
	if err := api.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, _ := jobsOut(t, nenv, "status", "jr-000001"); !strings.Contains(out, "complete") {
		t.Errorf("status without the test's service:\n%s", out)
	}
	for _, o := range outputs {
		if strings.Contains(o, "@example.com") || strings.Contains(o, "identity_hash") {
			t.Fatalf("an output holds an identity or its hash:\n%s", o)
		}
	}
}

// TestJobsCommandsWithoutAPIPermission runs status, jobs and report as a user
// that may read the job store but not publish on the API's subjects: the server
// refuses the request, and each command reads the job store at once instead.
func TestJobsCommandsWithoutAPIPermission(t *testing.T) {
	reader := &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.STREAM.INFO.KV_HEAP_DELETION_JOBS",
			"$JS.API.DIRECT.GET.KV_HEAP_DELETION_JOBS.>",
			"$JS.API.CONSUMER.CREATE.KV_HEAP_DELETION_JOBS.*.$KV.HEAP_DELETION_JOBS.>",
			"$JS.API.CONSUMER.DELETE.KV_HEAP_DELETION_JOBS.*",
			"$JS.FC.KV_HEAP_DELETION_JOBS.>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		Users: []*server.User{
			{Username: "admin", Password: "pw-admin"},
			{Username: "reader", Password: "pw-reader", Permissions: reader},
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
	env := baseEnv(t, srv.ClientURL(), rejectSim(t).URL)
	env["HEAPDEL_NATS_USER"], env["HEAPDEL_NATS_PASSWORD"] = "admin", "pw-admin"
	runJobs(t, env)
	apiReplica(t, env)

	renv := maps.Clone(natsEnv(env))
	renv["HEAPDEL_NATS_USER"], renv["HEAPDEL_NATS_PASSWORD"] = "reader", "pw-reader"
	if out, errOut := jobsOut(t, renv, "status", "jr-bad"); !strings.Contains(out, "identity hash") || strings.Contains(errOut, "refused") {
		t.Errorf("status as a reader without API permission:\n%s%s", out, errOut)
	}
	if out, _ := jobsOut(t, renv, "jobs", "--status", "failed", "--json"); len(jsonLines(t, out)) != 1 {
		t.Errorf("jobs as a reader: %s", out)
	}
	if out, _ := jobsOut(t, renv, "report", "--format", "jsonl"); len(jsonLines(t, out)) != 7 {
		t.Errorf("report as a reader: %s", out)
	}
}
