package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/testkit"
)

// natsCLI returns the path of the nats CLI; the test that uses it is skipped,
// saying how to install it, where it is missing.
func natsCLI(t *testing.T) string {
	t.Helper()
	p := testkit.NatsCLI()
	if p == "" {
		t.Skip("the nats CLI is not installed: go install github.com/nats-io/natscli/nats@v0.5.0 (.ci/run does)")
	}
	return p
}

// TestNatsCLIFindsTheService: the request-reply API of `heapdel run` is what the
// nats CLI expects of a micro service: `nats micro ls`, `info` and `stats` find
// heapdel and its four endpoints, and `nats req` gets a job's state.
func TestNatsCLIFindsTheService(t *testing.T) {
	nats := natsCLI(t)
	srv := natsServer(t)
	sim := heaptest.NewServer(heaptest.Options{})
	defer sim.Close()
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	p := startProgram(t, []string{"run"}, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	nenv := natsEnv(env)
	jobsOut(t, nenv, "publish", "--request-id", "cli-1", "--identity", "cli-person@example.com")
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, err := runCLI(t, nenv, "status", "--json", "cli-1")
		if err == nil && strings.Contains(out, `"status": "complete"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cli-1 never completed: %v %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cli := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, nats, append([]string{"--server", srv.ClientURL(), "--no-context"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user contexts
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := cli("micro", "ls"); !strings.Contains(out, "heapdel") {
		t.Errorf("nats micro ls:\n%s", out)
	}
	info := cli("micro", "info", "heapdel")
	for _, want := range []string{"heapdel", "heap.deletion.api.status", "heap.deletion.api.jobs", "heap.deletion.api.redrive", "heap.deletion.api.report"} {
		if !strings.Contains(info, want) {
			t.Errorf("nats micro info heapdel lacks %q:\n%s", want, info)
		}
	}
	if out := cli("req", "heap.deletion.api.status", `{"request_id":"cli-1"}`); !strings.Contains(out, `"status":"complete"`) || strings.Contains(out, "cli-person") {
		t.Errorf("nats req heap.deletion.api.status:\n%s", out)
	}
	if out := cli("micro", "stats", "heapdel"); !strings.Contains(out, "heapdel") {
		t.Errorf("nats micro stats heapdel:\n%s", out)
	}
}
