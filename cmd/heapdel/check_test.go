package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestCheckNoProvisioning runs `heapdel check` with provisioning off against
// objects an administrator made: it passes when they are as heapdel needs them,
// prints a warning without failing for a replica count other than
// HEAPDEL_STREAM_REPLICAS, and fails with one line per finding, each naming the
// object, what is wrong and the fix, when a setting heapdel relies on is changed.
func TestCheckNoProvisioning(t *testing.T) {
	srv := natsServer(t)
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key"})
	defer sim.Close()
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	p := startProgram(t, []string{"run"}, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	if err := p.stop(t); err != nil {
		t.Fatalf("stop the provisioning run: %v", err)
	}
	env["HEAPDEL_PROVISION"] = "false"

	out, errOut, err := runCLI(t, env, "check")
	if err != nil || !strings.Contains(out, "all checks passed") {
		t.Fatalf("check on provisioned objects: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{
		"ok   stream HEAP_DELETION: present, as heapdel needs it",
		"ok   consumer heapdel-recheck: present, as heapdel needs it",
		"ok   key-value bucket HEAP_DELETION_REQUESTS: present, as heapdel needs it",
		"ok   recheck schedule on heap.deletion.schedule.recheck: present, @every 1s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	out, errOut, err = runCLI(t, withEnv(env, "HEAPDEL_STREAM_REPLICAS", "3"), "check")
	if err != nil || !strings.Contains(out, "warn stream HEAP_DELETION: has 1 replica(s), HEAPDEL_STREAM_REPLICAS is 3") {
		t.Errorf("check with other replicas: %v, want a warning and success\n%s%s", err, out, errOut)
	}

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.Stream(ctx, "HEAP_DELETION")
	if err != nil {
		t.Fatal(err)
	}
	sc := st.CachedInfo().Config
	sc.AllowRollup = true
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(ctx, "HEAP_DELETION_SCHEDULE", "heapdel-recheck"); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = runCLI(t, env, "check")
	if !errors.Is(err, exitCode(1)) {
		t.Fatalf("check with a misconfigured stream: %v, want exit 1\n%s%s", err, out, errOut)
	}
	for _, want := range []string{
		"FAIL stream HEAP_DELETION: allows roll-ups: a publisher's Nats-Rollup header deletes the commands queued before it",
		"FAIL consumer heapdel-recheck: does not exist on stream HEAP_DELETION_SCHEDULE; fix: run heapdel once with HEAPDEL_PROVISION=true",
		"ok   consumer heapdel: present, as heapdel needs it",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}
