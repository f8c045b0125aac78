package main

import (
	"errors"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestRedriveCommand runs `heapdel redrive` as an operator would against `heapdel
// run` on an external server: a job Heap rejected is shown by a dry run, redriven
// with --yes once Heap accepts the user, completes as attempt 2, and is refused
// when redriven again; without a service the command works on the job store with
// the identity hash key, and says which setting it needs when it has none.
func TestRedriveCommand(t *testing.T) {
	var blocked atomic.Bool
	blocked.Store(true)
	sim := heaptest.NewServer(heaptest.Options{CompleteAfter: 200 * time.Millisecond, Rule: func(u heaptest.User) heaptest.Outcome {
		if blocked.Load() && strings.HasPrefix(u.Identity, "reject-me") {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}})
	t.Cleanup(sim.Close)
	srv := natsServer(t)
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	p := startProgram(t, []string{"run"}, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	nenv := natsEnv(env)
	jobsOut(t, nenv, "publish", "--request-id", "rr-bad-1", "--identity", "reject-me-1@example.com")
	jobsOut(t, nenv, "publish", "--request-id", "rr-bad-2", "--identity", "reject-me-2@example.com")
	jobsOut(t, nenv, "publish", "--request-id", "rr-ok", "--identity", "fine@example.com")
	waitJobs := func(args []string, want int) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _, err := runCLI(t, nenv, append([]string{"jobs", "--direct", "--limit", "0", "--json"}, args...)...)
			if err == nil && len(jsonLines(t, out)) == want {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("jobs %v: want %d: %v\n%s\n%s", args, want, err, out, p.stderr.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitJobs([]string{"--status", "failed", "--reason", "heap_rejected"}, 2)
	waitJobs([]string{"--status", "complete"}, 1)
	submitted := sim.SubmittedUsers()

	// A dry run, through the service: a table and what to do next.
	out, errOut := jobsOut(t, nenv, "redrive")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "REQUEST ID") || !strings.Contains(lines[1], "rr-bad-1") ||
		!strings.Contains(lines[1], "heap_rejected") || !strings.Contains(lines[1], "would redrive") {
		t.Fatalf("dry run table:\n%s", out)
	}
	if !strings.Contains(errOut, "dry run: 2 would be redriven") || !strings.Contains(errOut, "--yes") {
		t.Errorf("dry run summary: %s", errOut)
	}

	// The job store holds the failed job's user sealed; no command shows it.
	for _, args := range [][]string{{"status", "--direct", "--json", "rr-bad-1"}, {"status", "--json", "rr-bad-1"}, {"jobs", "--json"}, {"jobs", "--direct", "--json"}} {
		if out, _ := jobsOut(t, nenv, args...); strings.Contains(out, "sealed") || strings.Contains(out, "reject-me") {
			t.Errorf("heapdel %v shows the sealed user:\n%s", args, out)
		}
	}

	// Without a service and without the key, the command names the settings.
	if _, errOut, err := runCLI(t, nenv, "redrive", "--direct"); err == nil || !strings.Contains(err.Error()+errOut, "HEAPDEL_IDENTITY_HASH_KEY") {
		t.Fatalf("--direct without a key: %v %s", err, errOut)
	}
	// With heapdel run's settings it opens the seals itself.
	full := maps.Clone(env)
	out, _ = jobsOut(t, full, "redrive", "--direct", "--request-id", "rr-bad-2", "--json")
	if rows := jsonLines(t, out); len(rows) != 1 || rows[0]["request_id"] != "rr-bad-2" || rows[0]["refused"] != nil || rows[0]["attempt"] != float64(2) {
		t.Fatalf("--direct dry run: %s", out)
	}
	if n := sim.SubmittedUsers(); n != submitted {
		t.Fatalf("a dry run reached Heap: %d users submitted, had %d", n, submitted)
	}

	// Heap accepts the users now: redrive one directly and the rest through the service.
	blocked.Store(false)
	jobsOut(t, full, "redrive", "--direct", "--request-id", "rr-bad-2", "--yes")
	out, errOut = jobsOut(t, nenv, "redrive", "--reason", "heap_rejected", "--since", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--yes", "--json")
	if strings.Contains(out+errOut, "reject-me") {
		t.Fatalf("the output holds an identity:\n%s%s", out, errOut)
	}
	if !strings.Contains(errOut, "redriven") {
		t.Errorf("summary: %s", errOut)
	}
	done := waitJobs([]string{"--status", "complete"}, 3)
	for _, row := range jsonLines(t, done) {
		if row["request_id"] != "rr-ok" && row["attempt"] != float64(2) {
			t.Errorf("redriven job %v: attempt %v, want 2", row["request_id"], row["attempt"])
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := sim.SubmittedUsers(); n != submitted+2 {
		t.Fatalf("Heap received %d users after the redrive, want 2", n-submitted)
	}

	if out, _ := jobsOut(t, nenv, "status", "rr-bad-1"); !strings.Contains(out, "(attempt 1)") || !strings.Contains(out, "redrive") {
		t.Errorf("status of a redriven job does not show its earlier attempt and the redrive:\n%s", out)
	}

	// Again: nothing is failed any more.
	out, errOut = jobsOut(t, nenv, "redrive", "--request-id", "rr-bad-1", "--yes")
	if !strings.Contains(out, "refused: not_failed (complete)") || !strings.Contains(errOut, "refused not_failed:") {
		t.Fatalf("redrive of a complete job:\n%s%s", out, errOut)
	}
	for _, bad := range [][]string{{"--reason", "bored"}, {"rr-bad-1"}, {"--since", "yesterday"}, {"--request-id", "not an id"}} {
		if _, _, err := runCLI(t, nenv, append([]string{"redrive"}, bad...)...); !errors.Is(err, exitCode(2)) {
			t.Errorf("redrive %v: %v, want exit status 2", bad, err)
		}
	}
}

// TestPermissionsRedrive redrives without a service as a NATS user holding exactly
// the redriver set of docs/nats-permissions.md: a dry run over every failed job and
// a redrive by request id, with no permission violation and every permission not
// marked situational used.
func TestPermissionsRedrive(t *testing.T) {
	sets := documentedPermissions(t)
	srv, slog, users := permServer(t, map[string]*server.Permissions{
		"heapdel": sets["heapdel"], "publisher": sets["publisher"], "redriver": sets["redriver"],
	})
	var blocked atomic.Bool
	blocked.Store(true)
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", Rule: func(u heaptest.User) heaptest.Outcome {
		if blocked.Load() {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}})
	defer sim.Close()
	watch := watchStatuses(t, srv.ClientURL(), nats.UserInfo("admin", "pw-admin"))

	env := baseEnv(t, "", sim.URL)
	maps.Copy(env, users["heapdel"])
	p := startGuarded(t, env)
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
	pub := maps.Clone(users["publisher"])
	jobsOut(t, pub, "publish", "--request-id", "lp-redrive-1", "--identity", "someone@example.com")
	watch.wait(t, "lp-redrive-1", []string{"failed"}, p)

	blocked.Store(false)
	renv := maps.Clone(users["redriver"])
	renv["HEAPDEL_HEAP_API_KEY"] = env["HEAPDEL_HEAP_API_KEY"] // the key heapdel run derives its hash key from
	if out, _ := jobsOut(t, renv, "redrive", "--direct", "--json"); !strings.Contains(out, `"lp-redrive-1"`) {
		t.Fatalf("dry run as the redriver: %s", out)
	}
	jobsOut(t, renv, "redrive", "--direct", "--request-id", "lp-redrive-1", "--yes")
	watch.wait(t, "lp-redrive-1", []string{"failed", "submitted", "processing", "complete"}, p)
	if v := slog.violations(); len(v) > 0 {
		t.Fatalf("redrive needed more than the documented permissions:\n%s", strings.Join(v, "\n"))
	}
	requireAllUsed(t, slog, "redriver", sets["redriver"])
}
