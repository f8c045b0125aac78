// Package consumer is heapdel's JetStream pipeline: it provisions the streams, the
// durable consumers and the key-value job store, takes deletion commands in batches,
// submits them to Heap, records every job's state, publishes status events and
// re-checks pending Heap deletions on a scheduled tick until Heap reports them complete.
//
// Delivery: a command is acknowledged only after its Heap submission, its job record
// and its status events are durably stored in JetStream. A crash at any point loses
// nothing; at worst one batch is submitted to Heap twice.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
)

// Behavior says when a deletion counts as done.
type Behavior string

// The deletion behaviours of SPEC.md.
const (
	// BehaviorUntilComplete follows each Heap deletion request until Heap reports it complete.
	BehaviorUntilComplete Behavior = "until-complete"
	// BehaviorOnSubmit marks a deletion complete as soon as Heap accepts it.
	BehaviorOnSubmit Behavior = "on-submit"
)

// ScheduleMode says how the recheck tick is produced.
type ScheduleMode string

// The ways of producing recheck ticks.
const (
	// ScheduleAuto uses a JetStream message schedule when the server supports it
	// (nats-server 2.14 and later), else ScheduleFallback.
	ScheduleAuto ScheduleMode = "auto"
	// ScheduleServer always uses a JetStream message schedule.
	ScheduleServer ScheduleMode = "server"
	// ScheduleFallback has every replica publish the tick itself, deduplicated by a
	// Nats-Msg-Id derived from the time window.
	ScheduleFallback ScheduleMode = "fallback"
)

// Config is the consumer's configuration. Zero values take the defaults that
// [Config.withDefaults] fills in; Validate names the offending field.
type Config struct {
	Prefix          string        // subject prefix, default "heap.deletion"
	CommandStream   string        // default derived from Prefix: HEAP_DELETION
	ScheduleStream  string        // default HEAP_DELETION_SCHEDULE (the recheck schedule and ticks)
	StatusStream    string        // default HEAP_DELETION_STATUS
	JobBucket       string        // default HEAP_DELETION_JOBS
	RequestBucket   string        // default HEAP_DELETION_REQUESTS (Heap deletion requests being followed)
	ConsumerName    string        // durable command consumer, default "heapdel"
	Behavior        Behavior      // default until-complete
	BatchSize       int           // users per Heap request, default 1000
	BatchWait       time.Duration // default 1s
	RecheckInterval time.Duration // default 1m
	PollMaxInterval time.Duration // default 1h
	MaxPending      time.Duration // default 720h
	StatusMaxAge    time.Duration // status stream age limit, default 720h
	JobRetention    time.Duration // terminal jobs expire after this, default 2160h
	Provision       bool          // create or update streams, consumers and buckets at start
	Source          string        // CloudEvents source of status events, default "heapdel"
	Structured      bool          // publish status events in structured mode
	Types           []string      // accepted command types, default heap.deletion.requested
	MaxBytes        int           // largest command accepted, default 65536
	HashKey         []byte        // key of the identity hash kept in job records; required
	AckWait         time.Duration // command consumer AckWait, default 30s
	Schedule        ScheduleMode  // default auto
	Replicas        int           // stream and bucket replicas, default 1
	// RetryDelay is the first redelivery delay after Heap failed transiently; it
	// doubles per delivery up to 2m (10× and 5m when Heap rejects the credentials).
	// Default 2s.
	RetryDelay time.Duration
	// ReconcileInterval is how often the job store is reconciled with the followed
	// Heap requests (reconcile.go). Default 10 × RecheckInterval.
	ReconcileInterval time.Duration
	// Version is the binary's version, announced by the request-reply service.
	Version string
}

var streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// StreamBase turns a subject prefix into the base of the stream names: upper case,
// with '.' and '-' as '_' ("heap.deletion" → "HEAP_DELETION").
func StreamBase(prefix string) string {
	return strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(prefix))
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "heap.deletion"
	}
	base := StreamBase(c.Prefix)
	if c.CommandStream == "" {
		c.CommandStream = base
	}
	if c.ScheduleStream == "" {
		c.ScheduleStream = base + "_SCHEDULE"
	}
	if c.StatusStream == "" {
		c.StatusStream = base + "_STATUS"
	}
	if c.JobBucket == "" {
		c.JobBucket = base + "_JOBS"
	}
	if c.RequestBucket == "" {
		c.RequestBucket = base + "_REQUESTS"
	}
	if c.ConsumerName == "" {
		c.ConsumerName = "heapdel"
	}
	if c.Behavior == "" {
		c.Behavior = BehaviorUntilComplete
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	if c.BatchWait == 0 {
		c.BatchWait = time.Second
	}
	if c.RecheckInterval == 0 {
		c.RecheckInterval = time.Minute
	}
	if c.PollMaxInterval == 0 {
		c.PollMaxInterval = time.Hour
	}
	if c.MaxPending == 0 {
		c.MaxPending = 720 * time.Hour
	}
	if c.StatusMaxAge == 0 {
		c.StatusMaxAge = 720 * time.Hour
	}
	if c.JobRetention == 0 {
		c.JobRetention = 2160 * time.Hour
	}
	if c.Source == "" {
		c.Source = "heapdel"
	}
	if len(c.Types) == 0 {
		c.Types = []string{"heap.deletion.requested"}
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 64 << 10
	}
	if c.AckWait == 0 {
		// Held commands are kept alive with InProgress every AckWait/4; a crashed
		// replica's commands come back after AckWait, so shorter is a faster recovery.
		c.AckWait = 30 * time.Second
	}
	if c.Schedule == "" {
		c.Schedule = ScheduleAuto
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 10 * c.RecheckInterval
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = 2 * time.Second
	}
	return c
}

// Validate reports the first setting that cannot work, by field name.
func (c Config) Validate() error {
	switch {
	case c.Behavior != BehaviorUntilComplete && c.Behavior != BehaviorOnSubmit:
		return fmt.Errorf("consumer: Behavior %q is neither %q nor %q", c.Behavior, BehaviorUntilComplete, BehaviorOnSubmit)
	case c.BatchSize < 1 || c.BatchSize > heapclient.MaxUsers:
		return fmt.Errorf("consumer: BatchSize %d is outside 1–%d", c.BatchSize, heapclient.MaxUsers)
	case c.BatchWait <= 0:
		return errors.New("consumer: BatchWait must be positive")
	case c.RecheckInterval < time.Second:
		return errors.New("consumer: RecheckInterval must be at least 1s")
	case c.PollMaxInterval < c.RecheckInterval:
		return errors.New("consumer: PollMaxInterval must be at least RecheckInterval")
	case c.MaxPending <= 0:
		return errors.New("consumer: MaxPending must be positive")
	case len(c.HashKey) == 0:
		return errors.New("consumer: HashKey is required")
	case c.Schedule != ScheduleAuto && c.Schedule != ScheduleServer && c.Schedule != ScheduleFallback:
		return fmt.Errorf("consumer: Schedule %q is not auto, server or fallback", c.Schedule)
	}
	for _, n := range []string{c.CommandStream, c.ScheduleStream, c.StatusStream, c.JobBucket, c.RequestBucket, c.ConsumerName} {
		if !streamNameRE.MatchString(n) {
			return fmt.Errorf("consumer: name %q may hold only letters, digits, '_' and '-'", n)
		}
	}
	return nil
}

// Subjects of the pipeline, derived from the prefix.
func (c Config) requestedSubject() string { return c.Prefix + ".requested" }
func (c Config) recheckSubject() string   { return c.Prefix + ".recheck" }
func (c Config) scheduleSubject() string  { return c.Prefix + ".schedule.recheck" }
func (c Config) statusSubjects() string   { return c.Prefix + ".status.>" }
func (c Config) recheckConsumer() string  { return c.ConsumerName + "-recheck" }

// Resource is a JetStream object the pipeline needs: a stream, a consumer (of
// Stream) or a key-value bucket.
type Resource struct{ Kind, Name, Stream string }

// Resources lists what Start provisions or, with provisioning off, expects to find.
func (c Config) Resources() []Resource {
	c = c.withDefaults()
	return []Resource{
		{Kind: "stream", Name: c.CommandStream},
		{Kind: "stream", Name: c.ScheduleStream},
		{Kind: "stream", Name: c.StatusStream},
		{Kind: "consumer", Name: c.ConsumerName, Stream: c.CommandStream},
		{Kind: "consumer", Name: c.recheckConsumer(), Stream: c.ScheduleStream},
		{Kind: "key-value bucket", Name: c.JobBucket},
		{Kind: "key-value bucket", Name: c.RequestBucket},
	}
}

// Deleter is what the pipeline needs from Heap; [heapclient.Client] satisfies it.
// Errors are classified with the heapclient sentinels (ErrRejected, ErrRetryable,
// ErrUnauthorized, ErrMisconfigured, ErrNotFound, ErrAcceptedUnreadable); what each
// does to a command is the model in docs/design.md.
type Deleter interface {
	Submit(ctx context.Context, users []heapclient.User) (string, error)
	Status(ctx context.Context, deletionRequestID string) (heapclient.Status, error)
}

// Service runs the pipeline on one NATS connection. Several replicas may run on the
// same NATS account: they share the durable consumers and the job store.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	heap    Deleter
	log     zerolog.Logger
	m       *metrics
	decoder *events.Decoder
	encoder *events.Encoder
	sealer  *Sealer
	now     func() time.Time

	jobs     jetstream.KeyValue
	requests jetstream.KeyValue
	index    *pendingIndex

	mu            sync.Mutex
	consumeCtx    jetstream.ConsumeContext
	recheckCtx    jetstream.ConsumeContext
	credsRejected atomic.Bool
	indexBroken   atomic.Bool
	stalls        [2]stall // by cause: causeStore, causeSchedule
	// reconciledOnce is set after this replica's first reconciliation.
	reconciledOnce atomic.Bool
	reconciling    atomic.Bool // a reconciliation runs in the background
	closing        atomic.Bool // Close has begun: consumers are never started again
	started        atomic.Bool
	runCtx         context.Context
	closeOnce      sync.Once
	cancel         context.CancelFunc
	wg             sync.WaitGroup
	batcher        *batcher
	scheduleMode   ScheduleMode
	api            micro.Service // the request-reply service, nil when it did not start
}

// Option changes a Service built by [New].
type Option func(*Service)

// WithClock makes the service read time from now (tests).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// New builds a service on the connection nc. It returns an error naming the field
// when cfg cannot work; it does not touch NATS until [Service.Start].
func New(cfg Config, nc *nats.Conn, heap Deleter, log zerolog.Logger, reg prometheus.Registerer, opts ...Option) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil || heap == nil {
		return nil, errors.New("consumer: a NATS connection and a Heap deleter are required")
	}
	// Publish acks are awaited before commands are acknowledged; the timeout makes a
	// publish NATS never answers (a missing permission, an outage) fail instead of
	// holding its batch for ever, so the commands are released for redelivery.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("consumer: jetstream: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	sealer, err := NewSealer(cfg.HashKey)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	s := &Service{
		sealer:  sealer,
		cfg:     cfg,
		nc:      nc,
		js:      js,
		heap:    heap,
		log:     log,
		m:       m,
		decoder: events.NewDecoder(events.DecoderConfig{Types: cfg.Types, MaxBytes: cfg.MaxBytes}),
		encoder: events.NewEncoder(events.EncoderConfig{Prefix: cfg.Prefix, Source: cfg.Source, Structured: cfg.Structured}),
		now:     time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	s.index = newPendingIndex()
	return s, nil
}

// Start provisions (when configured), binds the buckets and consumers and begins
// taking commands and ticks. It returns an error that names what is missing when the
// streams, consumers or buckets cannot be created or found. Stop it with Close.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Provision {
		if err := s.provision(ctx); err != nil {
			return err
		}
	} else if err := s.verify(ctx); err != nil {
		return err
	}
	if err := s.bindRetrying(ctx); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.runCtx, s.cancel = runCtx, cancel

	if err := s.startIndex(ctx, runCtx); err != nil {
		cancel()
		return err
	}
	if err := s.startSchedule(ctx, runCtx); err != nil {
		cancel()
		return err
	}
	s.batcher = newBatcher(s)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.batcher.run(runCtx) }()

	if err := s.startConsumers(ctx); err != nil {
		cancel()
		s.wg.Wait()
		return err
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.gauges(runCtx) }()
	s.started.Store(true)
	if api, err := s.startAPI(s.cfg.Version); err != nil {
		s.log.Warn().Err(err).Msg("request-reply API (NATS micro service heapdel) not started; deletions go on")
	} else {
		s.api = api
	}
	s.log.Info().Str("stream", s.cfg.CommandStream).Str("consumer", s.cfg.ConsumerName).
		Str("behavior", string(s.cfg.Behavior)).Int("batch_size", s.cfg.BatchSize).
		Str("batch_wait", s.cfg.BatchWait.String()).Str("recheck_mode", string(s.scheduleMode)).
		Msg("taking deletion commands")
	return nil
}

// verify checks, with provisioning off, that the objects an administrator made are
// what heapdel relies on (Verify), and refuses to start otherwise: a bucket without
// per-message TTL or a command stream that allows roll-ups would stall work or lose
// commands later, far from the cause. A missing recheck schedule is left to the
// schedule check, which reports it (not ready) until it is published.
func (s *Service) verify(ctx context.Context) error {
	var findings []Finding
	for _, f := range Verify(ctx, s.js, s.cfg) {
		if strings.HasPrefix(f.Object, "recheck schedule") {
			continue
		}
		if f.Warning {
			s.log.Warn().Str("object", f.Object).Str("fix", f.Fix).Msg(f.Problem)
		}
		findings = append(findings, f)
	}
	return FindingsError(findings)
}

// Ready returns nil when the service can do its work: NATS connected, consumers bound
// and Heap credentials not known to be rejected; otherwise an error saying which.
func (s *Service) Ready() error {
	switch {
	case !s.started.Load():
		return errors.New("not started")
	case !s.nc.IsConnected():
		return errors.New("NATS not connected")
	case s.credsRejected.Load():
		return errors.New("Heap refused heapdel's requests: check HEAPDEL_HEAP_APP_ID, HEAPDEL_HEAP_API_KEY and HEAPDEL_HEAP_BASE_URL")
	case s.indexBroken.Load():
		return errors.New("the watch of pending Heap requests is being restarted")
	}
	for i := range s.stalls {
		if err := s.stalls[i].err.Load(); err != nil {
			return *err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.consumeCtx == nil:
		return errors.New("command consumer not bound")
	case ended(s.consumeCtx), ended(s.recheckCtx):
		return errors.New("a JetStream consumer ended (its stream or consumer was deleted?); taking it up again")
	}
	return nil
}

// ended says whether a consume context has stopped for good.
func ended(c jetstream.ConsumeContext) bool {
	if c == nil {
		return false
	}
	select {
	case <-c.Closed():
		return true
	default:
		return false
	}
}

// watchConsumers takes the consumers up again when JetStream ended them: a deleted
// stream or consumer ends a Consume for good, and ticks or commands would then
// wait for ever behind a pod that looks alive. With provisioning on, the objects
// are created again first.
func (s *Service) watchConsumers(ctx context.Context) {
	s.mu.Lock()
	cc, rc := s.consumeCtx, s.recheckCtx
	s.mu.Unlock()
	if !s.started.Load() || (!ended(cc) && !ended(rc)) {
		return
	}
	s.log.Error().Bool("commands", ended(cc)).Bool("ticks", ended(rc)).
		Msg("a JetStream consumer ended (its stream or consumer was deleted?): taking it up again")
	if s.cfg.Provision {
		if err := s.reprovision(ctx); err != nil {
			s.log.Warn().Err(err).Msg("provisioning again after a consumer ended; tried again shortly")
			return
		}
	}
	if cc != nil {
		cc.Stop()
	}
	if rc != nil {
		rc.Stop()
	}
	if err := s.startConsumers(ctx); err != nil {
		s.log.Warn().Err(err).Msg("taking the consumers up again failed; tried again shortly")
	}
}

// Close stops taking commands, finishes or releases the batch in flight within ctx,
// waits for publish acknowledgements and stops every goroutine. It does not close
// the NATS connection. Calling it twice is safe.
func (s *Service) Close(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		// The API first: micro restores the connection's handlers when it stops.
		if s.api != nil {
			_ = s.api.Stop()
		}
		s.mu.Lock()
		s.started.Store(false)
		s.closing.Store(true)
		s.mu.Unlock()
		s.mu.Lock()
		cc, rc := s.consumeCtx, s.recheckCtx
		s.consumeCtx, s.recheckCtx = nil, nil
		s.mu.Unlock()
		stopConsumer := func(c jetstream.ConsumeContext, drain bool) {
			if c == nil {
				return
			}
			if drain {
				c.Drain()
			} else {
				c.Stop()
			}
			select {
			case <-c.Closed():
			case <-ctx.Done():
				c.Stop()
			}
		}
		// Commands first: stop taking them, then flush or release what was taken.
		stopConsumer(cc, true)
		if s.batcher != nil {
			err = s.batcher.shutdown(ctx)
		}
		// Then ticks: cancelling the run context ends a tick in progress at once.
		if s.cancel != nil {
			s.cancel()
		}
		stopConsumer(rc, false)
		s.wg.Wait()
		select {
		case <-s.js.PublishAsyncComplete():
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("close: waiting for publish acks: %w", ctx.Err())
			}
		}
	})
	return err
}

// The causes of stalled work that are not Heap's, each a heapdel_stalled{cause}
// gauge and a readiness reason.
const (
	causeStore    = "store"
	causeSchedule = "schedule"
)

// stall is one cause's state: the error that stalls work, or nil.
type stall struct{ err atomic.Pointer[error] }

// stalled records that work is stalled by cause (err non-nil) or moves again (nil).
func (s *Service) stalled(cause string, err error) {
	i := 0
	if cause == causeSchedule {
		i = 1
	}
	if err == nil {
		if s.stalls[i].err.Swap(nil) != nil {
			s.m.stalled.WithLabelValues(cause).Set(0)
			s.log.Info().Str("cause", cause).Msg("no longer stalled")
		}
		return
	}
	var wrapped error
	switch cause {
	case causeStore:
		wrapped = fmt.Errorf("the job store refuses writes (is a bucket full, or a NATS leader being elected? runbook: HeapdelStalled): %w", err)
	default:
		wrapped = fmt.Errorf("recheck schedule: %w", err)
	}
	s.stalls[i].err.Store(&wrapped)
	s.m.stalled.WithLabelValues(cause).Set(1)
}

func (s *Service) setCredsRejected(rejected bool) {
	if s.credsRejected.Swap(rejected) != rejected {
		if rejected {
			s.m.ready.Set(0)
		}
	}
}

// gauges refreshes the pending gauges, readiness and the command backlog.
func (s *Service) gauges(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for n := 0; ; n++ {
		s.refreshGauges(ctx)
		if n%15 == 0 && s.scheduleMode == ScheduleServer {
			s.watchSchedule(ctx)
		}
		s.watchConsumers(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) refreshGauges(ctx context.Context) {
	users, oldest := s.index.pendingStats()
	s.m.jobsPending.Set(float64(users))
	if oldest.IsZero() {
		s.m.oldestPending.Set(0)
	} else {
		s.m.oldestPending.Set(s.now().Sub(oldest).Seconds())
	}
	breached, due24h, due7d := s.index.deadlineStats(s.now())
	s.m.deadlineBreach.Set(float64(breached))
	s.m.deadlineDue.WithLabelValues("24h").Set(float64(due24h))
	s.m.deadlineDue.WithLabelValues("7d").Set(float64(due7d))
	if s.Ready() == nil {
		s.m.ready.Set(1)
	} else {
		s.m.ready.Set(0)
	}
	c, err := s.js.Consumer(ctx, s.cfg.CommandStream, s.cfg.ConsumerName)
	if err == nil {
		if info, err := c.Info(ctx); err == nil {
			s.m.backlog.Set(float64(info.NumPending + uint64(info.NumAckPending)))
		}
	}
}

// bindRetrying binds with each lookup bounded by apiTimeout: a consumer whose group
// is still electing may not answer its info request; that is retried with backoff
// until ctx ends, when provisioning is on (otherwise a missing object fails at once).
func (s *Service) bindRetrying(ctx context.Context) error {
	return retryBackoff(ctx, 250*time.Millisecond, 5*time.Second, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*apiTimeout)
		defer cancel()
		err := s.bind(cctx)
		return !s.cfg.Provision && !errors.Is(err, context.DeadlineExceeded), err
	}, func(_ int, err error, wait time.Duration) {
		s.log.Warn().Err(err).Dur("retry_in", wait).Msg("binding JetStream objects failed; retrying")
	})
}
