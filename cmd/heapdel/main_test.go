package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/embedded"
	"github.com/heapdel/heapdel/internal/testkit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.Buffer

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
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

func natsServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// program is heapdel started in-process through run, as a user starts it.
type program struct {
	cancel context.CancelFunc
	done   chan error
	stdout *syncBuffer
	stderr *syncBuffer
}

func startProgram(t *testing.T, args []string, env map[string]string) *program {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &program{cancel: cancel, done: make(chan error, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() { p.done <- run(ctx, args, envOf(env), p.stdout, p.stderr) }()
	t.Cleanup(func() { _ = p.stop(t) })
	return p
}

func (p *program) stop(t *testing.T) error {
	p.cancel()
	select {
	case err, ok := <-p.done:
		if ok {
			close(p.done)
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("heapdel did not stop within 30s\n%s", p.stderr.String())
		return nil
	}
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReady(t *testing.T, addr string, p *program) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := httpGet("http://" + addr + "/readyz"); code == 200 {
			return
		}
		select {
		case err := <-p.done:
			t.Fatalf("heapdel exited: %v\n%s", err, p.stderr.String())
		default:
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("/readyz never true\n%s", p.stderr.String())
}

func baseEnv(t *testing.T, natsURL, heapURL string) map[string]string {
	return map[string]string{
		"HEAPDEL_NATS_URL":          natsURL,
		"HEAPDEL_DATA_DIR":          t.TempDir(),
		"HEAPDEL_HEAP_APP_ID":       "sim-app",
		"HEAPDEL_HEAP_API_KEY":      "sim-key",
		"HEAPDEL_HEAP_BASE_URL":     heapURL,
		"HEAPDEL_HEAP_RATE":         "100",
		"HEAPDEL_BATCH_SIZE":        "50",
		"HEAPDEL_BATCH_WAIT":        "100ms",
		"HEAPDEL_RECHECK_INTERVAL":  "1s",
		"HEAPDEL_POLL_MAX_INTERVAL": "2s",
		"HEAPDEL_HTTP_ADDR":         freeAddr(t),
		"HEAPDEL_LOG_LEVEL":         "debug",
	}
}

func TestRunServesPublishAndStatus(t *testing.T) {
	srv := natsServer(t)
	sim := heaptest.NewServer(heaptest.Options{CompleteAfter: 300 * time.Millisecond})
	defer sim.Close()
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	p := startProgram(t, []string{"run"}, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)

	var out, errb bytes.Buffer
	pubEnv := map[string]string{"HEAPDEL_NATS_URL": srv.ClientURL()}
	ctx := context.Background()
	if err := run(ctx, []string{"publish", "--request-id", "dsr-cli-1", "--identity", "cli-person@example.com"}, envOf(pubEnv), &out, &errb); err != nil {
		t.Fatalf("publish: %v %s", err, errb.String())
	}
	if err := run(ctx, []string{"publish", "--request-id", "load", "--count", "120", "--structured"}, envOf(pubEnv), &out, &errb); err != nil {
		t.Fatalf("publish --count: %v %s", err, errb.String())
	}
	// The job reaches complete; `status` shows it to a person and as JSON.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out.Reset()
		errb.Reset()
		err := run(ctx, []string{"status", "dsr-cli-1"}, envOf(pubEnv), &out, &errb)
		if err == nil && strings.Contains(out.String(), "status          complete") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never complete: %v\n%s%s", err, out.String(), errb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"heap request", "history", "submitted", "processing"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	for _, args := range [][]string{{"status", "--json", "dsr-cli-1"}, {"status", "dsr-cli-1", "--json"}} {
		out.Reset()
		if err := run(ctx, args, envOf(pubEnv), &out, &errb); err != nil || !strings.Contains(out.String(), `"status": "complete"`) {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
	}
	if err := run(ctx, []string{"status", "no-such-request"}, envOf(pubEnv), &out, &errb); !errors.Is(err, exitCode(1)) {
		t.Fatalf("status of an unknown id: %v, want exit 1", err)
	}

	code, metrics := httpGet("http://" + env["HEAPDEL_HTTP_ADDR"] + "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, name := range []string{"heapdel_commands_total", "heapdel_status_events_total", "heapdel_heap_requests_total",
		"heapdel_heap_request_duration_seconds", "heapdel_heap_batch_users", "heapdel_jobs_pending",
		"heapdel_oldest_pending_seconds", "heapdel_deletion_duration_seconds", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(metrics, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, _ := httpGet("http://" + env["HEAPDEL_HTTP_ADDR"] + "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if err := p.stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM-like cancel", err)
	}
	logs := p.stderr.String()
	if strings.Contains(logs, "cli-person@example.com") || strings.Contains(logs, "sim-key") {
		t.Fatalf("logs hold an identity or the API key")
	}
	for _, want := range []string{`"batch_size":50`, `"heap_api_key":"[redacted]"`, "heapdel stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

func TestRunEmbeddedDefault(t *testing.T) {
	sim := heaptest.NewServer(heaptest.Options{})
	defer sim.Close()
	env := baseEnv(t, "", sim.URL)
	p := startProgram(t, []string{"run"}, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	if !strings.Contains(p.stderr.String(), "embedded JetStream server") {
		t.Errorf("run does not say it started an embedded server")
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"publish", "--request-id", "emb-1", "--user-id", "9223372036854775807"}, envOf(nil), &out, &errb); err != nil {
		t.Fatalf("publish to the embedded server at the default URL: %v %s", err, errb.String())
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(sim.Submissions()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing reached Heap")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := sim.Submissions()[0].Users[0].UserID; got != "9223372036854775807" {
		t.Fatalf("user id reached Heap as %s", got)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
}

func TestDemoRunsToItsTally(t *testing.T) {
	var out, errb syncBuffer
	err := run(context.Background(), []string{"demo", "--count", "150", "--complete-after", "500ms", "--nats-port", "-1", "--http-addr", "127.0.0.1:0", "--timeout", "60s"}, envOf(nil), &out, &errb)
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errb.String())
	}
	text := out.String()
	for _, want := range []string{"Tally", "complete", "failed", "Metrics: http://"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(text, fmt.Sprintf("  %-11s %6d", "failed", 1)) {
		t.Errorf("demo tally should show the one invalid command failed:\n%s", text)
	}
}

func TestCheck(t *testing.T) {
	srv := natsServer(t)
	sim := heaptest.NewServer(heaptest.Options{})
	defer sim.Close()
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"check"}, envOf(env), &out, &errb); err != nil {
		t.Fatalf("check: %v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "all checks passed") || !strings.Contains(out.String(), "token fetched") {
		t.Errorf("check output:\n%s", out.String())
	}
	env["HEAPDEL_HEAP_API_KEY"] = "wrong-key"
	out.Reset()
	if err := run(context.Background(), []string{"check"}, envOf(env), &out, &errb); !errors.Is(err, exitCode(1)) {
		t.Fatalf("check with a wrong key: %v, want exit 1", err)
	}
	if !strings.Contains(out.String(), "FAIL Heap credentials") || !strings.Contains(out.String(), "HEAPDEL_HEAP_API_KEY") || strings.Contains(out.String(), "wrong-key") {
		t.Errorf("check output should name the setting and not the key:\n%s", out.String())
	}
	env["HEAPDEL_PROVISION"] = "false"
	out.Reset()
	_ = run(context.Background(), []string{"check"}, envOf(env), &out, &errb)
	if !strings.Contains(out.String(), "FAIL stream HEAP_DELETION") {
		t.Errorf("check with provisioning off should report the missing stream:\n%s", out.String())
	}
}

func TestCommandLine(t *testing.T) {
	ctx := context.Background()
	for _, name := range []string{"run", "demo", "heapsim", "publish", "status", "check"} {
		var out, errb bytes.Buffer
		if err := run(ctx, []string{name, "--help"}, envOf(nil), &out, &errb); err != nil {
			t.Errorf("%s --help: %v", name, err)
		}
		if !strings.Contains(out.String(), "Usage: heapdel "+name) {
			t.Errorf("%s --help:\n%s", name, out.String())
		}
	}
	var out, errb bytes.Buffer
	_ = run(ctx, []string{"run", "--help"}, envOf(nil), &out, &errb)
	for _, v := range []string{"HEAPDEL_NATS_URL", "HEAPDEL_BATCH_SIZE", "HEAPDEL_HEAP_API_KEY_FILE", "HEAPDEL_RECHECK_INTERVAL"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("run --help lacks %s", v)
		}
	}
	out.Reset()
	if err := run(ctx, []string{"frobnicate"}, envOf(nil), &out, &errb); !errors.Is(err, exitCode(2)) {
		t.Errorf("unknown command: %v, want exit 2", err)
	}
	errb.Reset()
	err := run(ctx, []string{"run"}, envOf(map[string]string{"HEAPDEL_HEAP_APP_ID": "a", "HEAPDEL_HEAP_API_KEY": "k", "HEAPDEL_BATCH_SIZE": "0"}), &out, &errb)
	if !errors.Is(err, exitCode(2)) || !strings.Contains(errb.String(), "HEAPDEL_BATCH_SIZE") {
		t.Errorf("bad setting: %v %q", err, errb.String())
	}
	out.Reset()
	if err := run(ctx, []string{"version"}, envOf(nil), &out, &errb); err != nil || !strings.HasPrefix(out.String(), "heapdel ") {
		t.Errorf("version: %v %q", err, out.String())
	}
}
