package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestEmbeddedServerSyncsEveryWrite: the embedded server `heapdel run` starts
// without HEAPDEL_NATS_URL syncs every write to disk before acknowledging it
// (SPEC.md), unlike nats-server's default of every 2 minutes.
func TestEmbeddedServerSyncsEveryWrite(t *testing.T) {
	sim := heaptest.NewServer(heaptest.Options{})
	defer sim.Close()
	cfg := config.Default()
	cfg.NATSURL, cfg.DataDir = "", t.TempDir()
	cfg.HeapAppID, cfg.HeapAPIKey, cfg.HeapBaseURL = "sim-app", "sim-key", sim.URL
	cfg.HTTPAddr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := start(ctx, cfg, zerolog.Nop(), appOptions{embeddedPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.close() }()
	if a.srv == nil {
		t.Fatal("no embedded server started")
	}
	vz, err := a.srv.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := vz.JetStream.Config; c == nil || !c.SyncAlways {
		t.Errorf("embedded server's JetStream config %+v, want sync_always", c)
	}
}

// TestOperatorCommandsOnEmbeddedServer: status, jobs, report and redrive work
// against `heapdel run` on its embedded server (no HEAPDEL_NATS_URL), as they do
// against an external one: the commands connect to the embedded server's port.
func TestOperatorCommandsOnEmbeddedServer(t *testing.T) {
	var blocked atomic.Bool
	blocked.Store(true)
	sim := heaptest.NewServer(heaptest.Options{Rule: func(u heaptest.User) heaptest.Outcome {
		if blocked.Load() && u.Identity == "reject-me@example.com" {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}})
	defer sim.Close()
	cfg := config.Default()
	cfg.NATSURL, cfg.DataDir = "", t.TempDir()
	cfg.HeapAppID, cfg.HeapAPIKey, cfg.HeapBaseURL = "sim-app", "sim-key", sim.URL
	cfg.HTTPAddr, cfg.RecheckInterval, cfg.BatchWait = "127.0.0.1:0", time.Second, 100*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := start(ctx, cfg, zerolog.Nop(), appOptions{embeddedPort: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.close() }()
	env := map[string]string{"HEAPDEL_NATS_URL": a.srv.ClientURL()}
	jobsOut(t, env, "publish", "--request-id", "emb-ok", "--identity", "fine@example.com")
	jobsOut(t, env, "publish", "--request-id", "emb-bad", "--identity", "reject-me@example.com")
	waitFor := func(args ...string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _, err := runCLI(t, env, args...)
			if err == nil && strings.TrimSpace(out) != "" {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("heapdel %v: %v %q", args, err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("jobs", "--json", "--status", "complete", "--prefix", "emb-ok")
	waitFor("jobs", "--json", "--status", "failed", "--prefix", "emb-bad")
	if out, _ := jobsOut(t, env, "status", "emb-ok"); !strings.Contains(out, "complete") {
		t.Errorf("status: %s", out)
	}
	if out, _ := jobsOut(t, env, "report", "--format", "jsonl"); len(jsonLines(t, out)) != 2 {
		t.Errorf("report: %s", out)
	}
	blocked.Store(false)
	if out, errOut := jobsOut(t, env, "redrive", "--yes"); !strings.Contains(out, "emb-bad") || !strings.Contains(errOut, "1 redriven") {
		t.Fatalf("redrive:\n%s%s", out, errOut)
	}
	waitFor("jobs", "--json", "--status", "complete", "--prefix", "emb-bad")
}
