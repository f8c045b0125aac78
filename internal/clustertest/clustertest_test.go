package clustertest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/internal/clustertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server keeps a few process-wide goroutines after Shutdown.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).Start.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// TestClusterLeaderLost forms a three-node cluster, creates an R3 stream, shuts
// its leader down, sees another node take over with every message, and brings the
// node back on the same address and store. It also records what an R3 stream
// answers to a compare-and-set on a stale sequence (what heapdel must treat as a
// conflict).
func TestClusterLeaderLost(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitStreamLeader("S", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 { // sequences 1–10
		if _, err := js.Publish(ctx, "s.a", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}

	// A stale expected last sequence per subject: R3 answers 10164 or 10071.
	_, err = js.Publish(ctx, "s.a", []byte("x"), jetstream.WithExpectLastSequencePerSubject(1))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || (apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence && apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		t.Fatalf("stale compare-and-set on R3: %v, want error 10071 or 10164", err)
	}
	t.Logf("stale compare-and-set on R3 answers %d (%s)", apiErr.ErrorCode, apiErr.Description)

	// Concurrent compare-and-sets on one subject: one wins; R3 refuses the others
	// with 10071 when it has seen the winner's write, 10164 while it is in flight.
	futures := make([]jetstream.PubAckFuture, 50)
	for i := range futures {
		if futures[i], err = js.PublishAsync("s.a", []byte("y"), jetstream.WithExpectLastSequencePerSubject(10)); err != nil {
			t.Fatal(err)
		}
	}
	won, codes := 0, map[jetstream.ErrorCode]int{}
	for _, f := range futures {
		select {
		case <-f.Ok():
			won++
		case err := <-f.Err():
			if !errors.As(err, &apiErr) {
				t.Fatalf("concurrent compare-and-set: %v", err)
			}
			codes[apiErr.ErrorCode]++
		case <-ctx.Done():
			t.Fatal("publish acks did not arrive")
		}
	}
	if won != 1 || codes[jetstream.JSErrCodeStreamWrongLastSequence]+codes[jetstream.JSErrCodeStreamWrongLastSequenceConstant] != len(futures)-1 {
		t.Fatalf("concurrent compare-and-sets: %d won, refusals %v; want 1 and only 10071/10164", won, codes)
	}
	t.Logf("50 concurrent compare-and-sets on R3: 1 won, refusals by error code %v", codes)

	c.Shutdown(leader)
	next, err := c.WaitStreamLeader("S", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("node %s leads S while shut down", c.Name(leader))
	}
	info, err := js.Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 11 {
		t.Fatalf("new leader %s has %d messages, want 11", c.Name(next), n)
	}
	c.Restart(leader)
	if err := c.WaitHealthy(time.Minute); err != nil {
		t.Fatal(err)
	}
	if !c.Running(leader) || c.MetaLeader() < 0 {
		t.Fatalf("after restart: running %v, meta leader %d", c.Running(leader), c.MetaLeader())
	}
}

// TestNewOutsideATest forms a cluster the way `heapdel bench --cluster` does, with
// errors instead of a test to fail, and closes it twice.
func TestNewOutsideATest(t *testing.T) {
	if _, err := clustertest.New(clustertest.Options{}); err == nil {
		t.Fatal("New without a StoreDir: no error")
	}
	c, err := clustertest.New(clustertest.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if c.MetaLeader() < 0 {
		t.Error("New returned before the cluster had a meta leader")
	}
	c.Close()
	c.Close()
	for i := range c.Nodes() {
		if c.Running(i) {
			t.Errorf("node %s still running after Close", c.Name(i))
		}
	}
}
