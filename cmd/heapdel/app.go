package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/config"
	"github.com/heapdel/heapdel/consumer"
	"github.com/heapdel/heapdel/heapclient"
	"github.com/heapdel/heapdel/internal/embedded"
)

// app is a running heapdel: NATS (embedded or not), the Heap client, the pipeline
// and the HTTP endpoints.
type app struct {
	cfg      config.Config
	log      zerolog.Logger
	srv      *server.Server // nil with an external NATS
	nc       *nats.Conn
	svc      *consumer.Service
	started  atomic.Pointer[consumer.Service] // set once Start returned: /readyz reads it
	http     *http.Server
	httpAddr string
	reg      *prometheus.Registry
	done     chan struct{}
	// lost is closed when nats.go closes the connection for good (it will never
	// reconnect): /healthz fails and `heapdel run` exits, so that the orchestrator
	// restarts the process instead of keeping an idle one.
	lost     chan struct{}
	lostOnce sync.Once
}

type appOptions struct {
	embeddedPort int                   // 0: 4222; -1: any free port
	schedule     consumer.ScheduleMode // "" = auto
}

func newLogger(cfg config.Config, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// connectNATS starts the embedded server when no URL is set, then connects. extra
// options come last, so they override the defaults.
func connectNATS(cfg config.Config, log zerolog.Logger, port int, name string, extra ...nats.Option) (*server.Server, *nats.Conn, error) {
	url := cfg.NATSURL
	var srv *server.Server
	if url == "" {
		if port == 0 {
			port = 4222
		}
		var err error
		// The service's own store: what it acknowledges must survive a power loss.
		srv, err = embedded.Start(embedded.Options{Port: port, StoreDir: cfg.DataDir, SyncAlways: true})
		if err != nil {
			return nil, nil, fmt.Errorf("%w (HEAPDEL_DATA_DIR=%s)", err, cfg.DataDir)
		}
		url = srv.ClientURL()
		log.Info().Str("url", url).Str("data_dir", cfg.DataDir).
			Msg("no HEAPDEL_NATS_URL: started an embedded JetStream server (local publishers can reach it at this URL)")
	}
	opts, err := cfg.NATSOptions()
	if err != nil {
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	opts = append(opts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
		// By default nats.go closes the connection for good when a server refuses
		// the credentials twice in a row, as it does while a password is rotated on
		// the server before the secret: keep trying until they are accepted again.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose
				log.Warn().Err(err).Msg("NATS disconnected; reconnecting")
			}
		}),
		nats.ErrorHandler(asyncErrorHandler(cfg, log)),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("NATS reconnected")
		}),
	)
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		if srv != nil {
			srv.Shutdown()
		}
		hint := "check HEAPDEL_NATS_URL and the NATS credentials settings"
		var ua x509.UnknownAuthorityError
		switch {
		case errors.Is(err, nats.ErrAuthorization):
			hint = "the server refused the credentials in " + authSetting(cfg)
		case errors.As(err, &ua):
			hint = "the server's certificate is not signed by a CA in HEAPDEL_NATS_TLS_CA"
		case strings.Contains(err.Error(), "tls"):
			hint = "the server did not accept the client certificate: check HEAPDEL_NATS_TLS_CERT and HEAPDEL_NATS_TLS_KEY"
		}
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w (%s)", config.RedactURLs(url), err, hint)
	}
	return srv, nc, nil
}

// asyncErrorHandler logs what nats.go reports asynchronously, with the fix for
// each kind of error. A refusal of the credentials comes at every reconnect
// attempt (each second): it is logged once a minute.
func asyncErrorHandler(cfg config.Config, log zerolog.Logger) nats.ErrHandler {
	var lastAuthLog atomic.Int64 // unix nanoseconds
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		switch {
		case errors.Is(err, nats.ErrPermissionViolation):
			log.Error().Err(err).Msg("NATS refused an operation: grant the permission (docs/nats-permissions.md)")
		case errors.Is(err, nats.ErrSlowConsumer):
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("heapdel did not keep up with a subscription and NATS dropped messages (slow consumer): give heapdel more CPU; unacknowledged commands and ticks are redelivered, dropped API requests time out")
		case isAuthError(err):
			now := time.Now().UnixNano()
			if last := lastAuthLog.Load(); now-last < int64(time.Minute) || !lastAuthLog.CompareAndSwap(last, now) {
				return
			}
			log.Error().Err(err).Msg("NATS refused heapdel's credentials; heapdel keeps reconnecting every second until they are accepted: update " + authSetting(cfg) + " or the server's configuration so that they match")
		default:
			log.Error().Err(err).Msg("NATS reported an error")
		}
	}
}

// isAuthError reports whether err is a server's refusal of the credentials.
func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

func newHeapClient(cfg config.Config, log zerolog.Logger, reg prometheus.Registerer) (*heapclient.Client, error) {
	return heapclient.New(heapclient.Config{
		BaseURL:        cfg.HeapBaseURL,
		AppID:          cfg.HeapAppID,
		APIKey:         cfg.HeapAPIKey,
		APIKeyFile:     cfg.HeapAPIKeyFile, // read again when Heap refuses the key: a rotated Secret needs no restart
		RequestTimeout: cfg.HeapTimeout,
		Rate:           cfg.HeapRate,
		Burst:          cfg.HeapBurst,
		Logger:         log,
		Registerer:     reg,
	})
}

func consumerConfig(cfg config.Config, opts appOptions) consumer.Config {
	return consumer.Config{
		Prefix:          cfg.SubjectPrefix,
		CommandStream:   cfg.StreamName(),
		StatusStream:    cfg.StatusStreamName(),
		JobBucket:       cfg.JobBucket(),
		ConsumerName:    cfg.ConsumerName,
		Behavior:        consumer.Behavior(cfg.DeletionBehavior),
		BatchSize:       cfg.BatchSize,
		BatchWait:       cfg.BatchWait,
		RecheckInterval: cfg.RecheckInterval,
		PollMaxInterval: cfg.PollMaxInterval,
		MaxPending:      cfg.MaxPending,
		StatusMaxAge:    cfg.StatusMaxAge,
		JobRetention:    cfg.JobRetention,
		Provision:       cfg.Provision,
		Source:          cfg.EventSource,
		Structured:      cfg.StatusEncoding == config.EncodingStructured,
		Types:           cfg.EventTypes,
		MaxBytes:        cfg.MaxMessageBytes,
		HashKey:         cfg.HashKey(),
		Version:         buildVersion(),
		Schedule:        opts.schedule,
		Replicas:        cfg.StreamReplicas,
	}
}

// start brings heapdel up. On error everything it started is stopped again.
func start(ctx context.Context, cfg config.Config, log zerolog.Logger, opts appOptions) (_ *app, err error) {
	log.Info().Str("version", buildVersion()).Object("config", cfg).Msg("heapdel starting")
	a := &app{cfg: cfg, log: log, reg: prometheus.NewRegistry(), done: make(chan struct{}), lost: make(chan struct{})}
	defer func() {
		if err != nil {
			a.stopRest()
		}
	}()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on HEAPDEL_HTTP_ADDR=%s: %w", cfg.HTTPAddr, err)
	}
	a.httpAddr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	a.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("HTTP server stopped")
		}
	}()

	a.srv, a.nc, err = connectNATS(cfg, log, opts.embeddedPort, "heapdel", nats.ClosedHandler(a.natsClosed))
	if err != nil {
		return nil, err
	}
	heap, err := newHeapClient(cfg, log, a.reg)
	if err != nil {
		return nil, fmt.Errorf("heap client: %w", err)
	}
	a.svc, err = consumer.New(consumerConfig(cfg, opts), a.nc, heap, log, a.reg)
	if err != nil {
		return nil, err
	}
	// Two minutes: provisioning waits out a NATS cluster that is still electing
	// its leaders, and a migration copies every queued command twice.
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := a.svc.Start(startCtx); err != nil {
		return nil, err
	}
	a.started.Store(a.svc)
	log.Info().Str("http", a.httpAddr).Msg("heapdel ready: /metrics, /healthz and /readyz are served here")
	return a, nil
}

// natsClosed is the connection's closed handler until shutdown replaces it (stop):
// a close it sees is nats.go giving up on the connection, which it never
// reconnects.
func (a *app) natsClosed(nc *nats.Conn) {
	a.lostOnce.Do(func() {
		ev := a.log.Error()
		if err := nc.LastError(); err != nil {
			ev = ev.Err(err)
		}
		ev.Msg("NATS connection closed for good: the client will not reconnect, so heapdel stops taking work, /healthz fails and `heapdel run` exits with status 1 to be restarted; if it happens again, fix what the error says (the NATS server's log and limits, HEAPDEL_NATS_URL, " + authSetting(a.cfg) + ")")
		close(a.lost)
	})
}

func (a *app) healthz(w http.ResponseWriter, _ *http.Request) {
	select {
	case <-a.lost:
		http.Error(w, "unhealthy: the NATS connection is closed for good and will not reconnect: restart heapdel", http.StatusServiceUnavailable)
		return
	default:
	}
	_, _ = io.WriteString(w, "ok\n")
}

func (a *app) readyz(w http.ResponseWriter, _ *http.Request) {
	svc := a.started.Load()
	if svc == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	if err := svc.Ready(); err != nil {
		msg := "not ready: " + err.Error()
		if !a.nc.IsConnected() && isAuthError(a.nc.LastError()) {
			msg += ": the server refuses the credentials in " + authSetting(a.cfg) + " (reconnecting until it accepts them)"
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// close shuts down in order: stop taking work, flush the batch in flight, wait for
// publish acks, drain NATS, stop HTTP, all within one bound
// (HEAPDEL_SHUTDOWN_TIMEOUT), so an orchestrator's grace period can be set above it.
// It returns an error only when the bound was exceeded.
func (a *app) close() error {
	timeout := a.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	if a.svc != nil {
		if cerr := a.svc.Close(ctx); cerr != nil {
			err = fmt.Errorf("shutdown: %w", cerr)
			a.log.Warn().Err(cerr).Msg("shutdown bound reached; unfinished commands are redelivered")
		}
	}
	a.stop(ctx)
	a.log.Info().Msg("heapdel stopped")
	return err
}

// stopRest stops what start started when start fails.
func (a *app) stopRest() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.stop(ctx)
}

// stop drains NATS, stops the embedded server and the HTTP server within ctx.
func (a *app) stop(ctx context.Context) {
	if a.nc != nil {
		drained := make(chan struct{})
		a.nc.SetClosedHandler(func(*nats.Conn) { close(drained) })
		if err := a.nc.Drain(); err == nil {
			select {
			case <-drained:
			case <-ctx.Done():
			}
		}
		a.nc.Close()
	}
	if a.srv != nil {
		a.srv.Shutdown()
		a.srv.WaitForShutdown()
	}
	if a.http != nil {
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if d, ok := ctx.Deadline(); ok && time.Until(d) > time.Second {
			hctx, cancel = context.WithDeadline(context.Background(), d)
		}
		_ = a.http.Shutdown(hctx)
		cancel()
	}
}

// stderrIsTerminal tells whether a live view makes sense on w.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func authSetting(cfg config.Config) string {
	switch {
	case cfg.NATSCreds != "":
		return "HEAPDEL_NATS_CREDS"
	case cfg.NATSNKey != "":
		return "HEAPDEL_NATS_NKEY"
	case cfg.NATSUser != "":
		return "HEAPDEL_NATS_USER / HEAPDEL_NATS_PASSWORD"
	case cfg.NATSToken != "":
		return "HEAPDEL_NATS_TOKEN"
	}
	return "the NATS credentials settings (none is set)"
}
