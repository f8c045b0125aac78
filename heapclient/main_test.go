package heapclient

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/heapdel/heapdel/heapclient/heaptest"
	"github.com/heapdel/heapdel/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testApp = "sim-app"
	testKey = "sim-key-SECRET-7f3a9c"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testkit.Buffer

// seen is one request as it reached the test server.
type seen struct {
	endpoint string
	at       time.Time
	token    string
}

// env is a client talking to a simulator through a recording (and optionally
// overriding) handler.
type env struct {
	sim  *heaptest.Sim
	url  string
	c    *Client
	logs *syncBuffer
	reg  *prometheus.Registry

	mu   sync.Mutex
	reqs []seen
}

type envOpts struct {
	sim      heaptest.Options
	cfg      func(*Config)
	override func(w http.ResponseWriter, r *http.Request) bool // true: answered here instead of by the sim
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.sim.AppID == "" {
		o.sim.AppID, o.sim.APIKey = testApp, testKey
	}
	e := &env{sim: heaptest.New(o.sim), logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ep := lastSegment(r.URL.Path)
		if strings.Contains(r.URL.Path, "/deletion_status/") {
			ep = epStatus
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		e.mu.Lock()
		e.reqs = append(e.reqs, seen{endpoint: ep, at: time.Now(), token: tok})
		e.mu.Unlock()
		if o.override != nil && o.override(w, r) {
			return
		}
		e.sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	cfg := Config{
		BaseURL:        srv.URL,
		AppID:          testApp,
		APIKey:         testKey,
		RequestTimeout: 5 * time.Second,
		Rate:           math.Inf(1),
		MinBackoff:     time.Millisecond,
		MaxBackoff:     5 * time.Millisecond,
		Logger:         zerolog.New(e.logs).Level(zerolog.DebugLevel),
		Registerer:     e.reg,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.hc.CloseIdleConnections)
	e.c = c
	return e
}

func lastSegment(p string) string { return p[strings.LastIndex(p, "/")+1:] }

// requests returns the requests the server saw, for endpoint or all ("").
func (e *env) requests(endpoint string) []seen {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []seen
	for _, s := range e.reqs {
		if endpoint == "" || s.endpoint == endpoint {
			out = append(out, s)
		}
	}
	return out
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
