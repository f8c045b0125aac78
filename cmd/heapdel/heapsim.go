package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/heapdel/heapdel/heapclient/heaptest"
)

func cmdHeapsim(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	fs := flagSet("heapsim [flags]", "Serves a simulator of Heap's User Deletion API (auth_token, user_deletion,\ndeletion_status) on a loopback address, for trying heapdel without a Heap account:\nHEAPDEL_HEAP_BASE_URL=http://<addr> HEAPDEL_HEAP_APP_ID=<app-id> HEAPDEL_HEAP_API_KEY=<api-key>", stdout)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (plain http: keep it on loopback)")
	o := heaptest.Options{}
	fs.StringVar(&o.AppID, "app-id", "sim-app", "the app id Heap accepts")
	fs.StringVar(&o.APIKey, "api-key", "sim-key", "the API key Heap accepts")
	fs.DurationVar(&o.TokenTTL, "token-ttl", 5*time.Minute, "how long an access token lives")
	fs.DurationVar(&o.CompleteAfter, "complete-after", 10*time.Second, "how long a deletion stays pending")
	fs.BoolVar(&o.NeverComplete, "never-complete", false, "deletions stay pending forever")
	var f heaptest.Fault
	fs.StringVar(&f.Endpoint, "fault-endpoint", "", "endpoint the fault hits: auth_token, user_deletion, deletion_status (empty: all)")
	fs.IntVar(&f.Status, "fault-status", 0, "answer this HTTP status instead (e.g. 429, 503)")
	fs.StringVar(&f.RetryAfter, "fault-retry-after", "", "Retry-After header sent with the fault status")
	fs.DurationVar(&f.Latency, "fault-latency", 0, "added latency before answering")
	fs.BoolVar(&f.Drop, "fault-drop", false, "drop the connection without answering")
	fs.Float64Var(&f.Rate, "fault-rate", 0, "fraction of requests hit by the fault (0: all)")
	fs.DurationVar(&f.For, "fault-for", 0, "the fault lasts this long (0: until stopped)")
	fs.IntVar(&f.Count, "fault-count", 0, "the fault hits this many requests (0: no limit)")
	if err := parse(fs, args); err != nil {
		return err
	}
	sim := heaptest.New(o)
	if f.Status != 0 || f.Latency != 0 || f.Drop {
		sim.Script(f)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("heapsim: listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "Heap simulator on http://%s (app id %q). Use:\n  HEAPDEL_HEAP_BASE_URL=http://%s HEAPDEL_HEAP_APP_ID=%s HEAPDEL_HEAP_API_KEY=<the key>\n",
		ln.Addr(), o.AppID, ln.Addr(), o.AppID)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		return err
	}
}
