package main

import (
	"context"
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
