package main

import (
	"context"
	"errors"
	"maps"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// reload applies a change to a running server's configuration, as a config file
// reload (SIGHUP) does. opts is left as it was: the server goes on reading the
// options it was started with (request handlers hold them across a reload), so
// writing the new ones into that struct would be a data race.
func reload(t *testing.T, srv *server.Server, opts *server.Options, change func(*server.Options)) {
	t.Helper()
	next := *opts
	change(&next)
	if err := srv.ReloadOptions(&next); err != nil {
		t.Fatalf("reload the NATS server: %v", err)
	}
}

// restart stops srv and starts it again on the same port and store, with change
// applied to its options: a password rotated on the server, as a restart with a
// new configuration does. (A live reload of the users trips a data race inside
// nats-server 2.15.2, reloadAuthorization against a new client's stats, which
// -race reports; a restart tests the same thing for heapdel.)
func restart(t *testing.T, srv *server.Server, opts *server.Options, change func(*server.Options)) *server.Server {
	t.Helper()
	port := srv.Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv.WaitForShutdown()
	next := *opts
	change(&next)
	next.Port = port
	ns, err := server.NewServer(&next)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	*opts = next
	return ns
}

func users(heapdelPassword string) []*server.User {
	return []*server.User{
		{Username: "heapdel", Password: heapdelPassword},
		{Username: "admin", Password: "admin-password"},
	}
}

// waitHTTP polls url until it answers with code, or fails the test.
func waitHTTP(t *testing.T, url string, code int, within time.Duration, p *program) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, body := httpGet(url)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answers %d %q, want %d within %s\nheapdel log:\n%s", url, got, body, code, within, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNATSCredentialsRotated rotates heapdel's password on the NATS server before
// the secret is updated: the server drops heapdel and refuses it at every
// reconnect. heapdel must stay alive and keep trying (not ready, saying why), and
// recover on its own once the credentials match again, taking commands as before.
// nats.go's default gives up after two refusals, leaving a pod that looks
// healthy but never processes anything again.
func TestNATSCredentialsRotated(t *testing.T) {
	opts := &server.Options{Users: users("password-one-5d1")}
	srv, _ := startNATS(t, opts)
	sim := heaptest.NewServer(heaptest.Options{AppID: "sim-app", APIKey: "sim-key", CompleteAfter: 200 * time.Millisecond})
	defer sim.Close()
	env := baseEnv(t, srv.ClientURL(), sim.URL)
	admin := withEnv(natsEnv(env), "HEAPDEL_NATS_USER", "admin", "HEAPDEL_NATS_PASSWORD", "admin-password")
	maps.Copy(env, map[string]string{"HEAPDEL_NATS_USER": "heapdel", "HEAPDEL_NATS_PASSWORD": "password-one-5d1"})
	p := startGuarded(t, env)
	addr := "http://" + env["HEAPDEL_HTTP_ADDR"]
	waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)

	srv = restart(t, srv, opts, func(o *server.Options) { o.Users = users("password-two-e8a") })
	// Not ready, and once the server has refused a reconnect, saying why.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(addr + "/readyz")
		if code == 503 && strings.Contains(body, "HEAPDEL_NATS_PASSWORD") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz while the server refuses the credentials: %d %q, want 503 naming HEAPDEL_NATS_PASSWORD\n%s", code, body, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Several refused reconnects: nats.go's default gives up after the second.
	deadline = time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if code, body := httpGet(addr + "/healthz"); code != 200 {
			t.Fatalf("/healthz while reconnecting: %d %q, want 200 (the client is still trying)\n%s", code, body, p.stderr.String())
		}
		select {
		case err := <-p.done:
			t.Fatalf("heapdel exited while the credentials were refused: %v\n%s", err, p.stderr.String())
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "NATS refused heapdel's credentials") {
		t.Errorf("the log does not say NATS refuses the credentials:\n%s", p.stderr.String())
	}

	srv = restart(t, srv, opts, func(o *server.Options) { o.Users = users("password-one-5d1") })
	waitHTTP(t, addr+"/readyz", 200, 15*time.Second, p)
	publishOne(t, admin, "rotated-1", "rotated-person@example.com")
	waitJobStatus(t, admin, "rotated-1", "complete", p)
	if err := p.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	logs := p.stderr.String()
	for _, secret := range []string{"password-one-5d1", "password-two-e8a", "rotated-person"} {
		if strings.Contains(logs, secret) {
			t.Errorf("heapdel's log holds %q", secret)
		}
	}
}

// closeForGood has srv close heapdel's connection in a way nats.go never
// recovers from: a message over a lowered max_payload (the client learnt the
// limit when it connected) makes the server answer "Maximum Payload Violation",
// upon which the client closes the connection instead of reconnecting. It
// publishes a command whose request id heapdel can read but which is not a
// CloudEvent, so that heapdel publishes a failed status event, larger than the
// limit.
func closeForGood(t *testing.T, srv *server.Server, opts *server.Options) {
	t.Helper()
	pub, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	reload(t, srv, opts, func(o *server.Options) { o.MaxPayload = 100 })
	if err := pub.Publish("heap.deletion.requested", []byte(`{"request_id":"closed-1"}`)); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestNATSConnectionClosedForGood: a heapdel whose NATS connection nats.go has
// given up on must not stay up as an idle pod: /healthz fails, and `heapdel run`
// exits with status 1, saying why.
func TestNATSConnectionClosedForGood(t *testing.T) {
	t.Run("healthz fails", func(t *testing.T) {
		opts := &server.Options{}
		srv, _ := startNATS(t, opts)
		sim := heaptest.NewServer(heaptest.Options{})
		defer sim.Close()
		cfg := config.Default()
		cfg.NATSURL, cfg.DataDir = srv.ClientURL(), t.TempDir()
		cfg.HeapAppID, cfg.HeapAPIKey, cfg.HeapBaseURL = "sim-app", "sim-key", sim.URL
		cfg.HTTPAddr, cfg.ShutdownTimeout = "127.0.0.1:0", 5*time.Second
		var logs syncBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a, err := start(ctx, cfg, zerolog.New(&logs), appOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = a.close() }()
		url := "http://" + a.httpAddr + "/healthz"
		if code, body := httpGet(url); code != 200 {
			t.Fatalf("/healthz before: %d %q, want 200", code, body)
		}
		closeForGood(t, srv, opts)
		deadline := time.Now().Add(15 * time.Second)
		for {
			code, body := httpGet(url)
			if code == 503 {
				if !strings.Contains(body, "closed for good") {
					t.Errorf("/healthz: %q, want it to say the connection is closed for good", body)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz still %d %q 15s after the NATS connection was closed for good\n%s", code, body, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("run exits 1", func(t *testing.T) {
		opts := &server.Options{}
		srv, _ := startNATS(t, opts)
		sim := heaptest.NewServer(heaptest.Options{})
		defer sim.Close()
		env := baseEnv(t, srv.ClientURL(), sim.URL)
		env["HEAPDEL_SHUTDOWN_TIMEOUT"] = "5s"
		p := startGuarded(t, env)
		waitReady(t, env["HEAPDEL_HTTP_ADDR"], p)
		closeForGood(t, srv, opts)
		select {
		case err := <-p.done:
			close(p.done)
			if !errors.Is(err, exitCode(1)) {
				t.Errorf("heapdel run ended with %v, want exit status 1", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("heapdel run still running 30s after its NATS connection was closed for good\n%s", p.stderr.String())
		}
		if logs := p.stderr.String(); !strings.Contains(logs, "NATS connection closed for good") || !strings.Contains(logs, "restarted") {
			t.Errorf("the log does not say the connection is closed for good and what to do:\n%s", logs)
		}
	})
}
