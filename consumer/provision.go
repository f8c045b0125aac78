package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// provision creates or updates everything heapdel needs. It is idempotent and safe
// to run from every replica at every start, and against a deployment made by an
// earlier version.
func (s *Service) provision(ctx context.Context) error {
	c := s.cfg
	schedules := s.serverSchedules()
	dup := 2 * time.Minute
	if !schedules && c.RecheckInterval > dup {
		// Fallback ticks are deduplicated by Nats-Msg-Id per time window.
		dup = c.RecheckInterval
	}
	streams := []jetstream.StreamConfig{{
		Name:        c.CommandStream,
		Description: "heapdel deletion commands and recheck ticks",
		Subjects:    []string{c.requestedSubject(), c.recheckSubject(), c.scheduleSubject()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  dup,
		// Message schedules require roll-ups (the server turns them on anyway);
		// publishers of commands must never set Nats-Rollup.
		AllowRollup: schedules,
		// Schedules need nats-server 2.14; older servers get the fallback tick.
		AllowMsgSchedules: schedules,
	}, {
		Name:        c.StatusStream,
		Description: "heapdel status events",
		Subjects:    []string{c.statusSubjects()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      c.StatusMaxAge,
		Duplicates:  2 * time.Minute,
	}}
	for _, sc := range streams {
		if _, err := s.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	for _, kc := range []jetstream.KeyValueConfig{{
		Bucket:         c.JobBucket,
		Description:    "heapdel job state by request id",
		Storage:        jetstream.FileStorage,
		Replicas:       c.Replicas,
		LimitMarkerTTL: time.Hour, // enables per-entry TTLs: terminal jobs expire after JobRetention
	}, {
		Bucket:         c.RequestBucket,
		Description:    "heapdel: Heap deletion requests followed until complete",
		Storage:        jetstream.FileStorage,
		Replicas:       c.Replicas,
		LimitMarkerTTL: time.Hour, // purge markers of finished requests expire
	}} {
		if _, err := s.js.CreateOrUpdateKeyValue(ctx, kc); err != nil {
			return fmt.Errorf("provision key-value bucket %s: %w", kc.Bucket, err)
		}
	}
	if _, err := s.js.CreateOrUpdateConsumer(ctx, c.CommandStream, s.commandConsumerConfig()); err != nil {
		return fmt.Errorf("provision consumer %s: %w", c.ConsumerName, err)
	}
	if _, err := s.js.CreateOrUpdateConsumer(ctx, c.CommandStream, s.recheckConsumerConfig()); err != nil {
		return fmt.Errorf("provision consumer %s: %w", c.recheckConsumer(), err)
	}
	return nil
}

func (s *Service) commandConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       s.cfg.ConsumerName,
		Description:   "heapdel deletion commands (shared by all replicas)",
		FilterSubject: s.cfg.requestedSubject(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    -1, // a command is never dropped: transient failures only delay it
		MaxAckPending: s.maxAckPending(),
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// maxAckPending bounds the commands in flight across all replicas: room for two
// full batches: one gathering while the previous one is with Heap and JetStream.
func (s *Service) maxAckPending() int {
	return max(2*s.cfg.BatchSize, 1000)
}

func (s *Service) recheckConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       s.cfg.recheckConsumer(),
		Description:   "heapdel recheck ticks: one replica at a time",
		FilterSubject: s.cfg.recheckSubject(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.RecheckInterval + 30*time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1, // one tick at a time across all replicas: checks never double
	}
}

// bind looks up the buckets and consumers, with an error that says how to fix a
// locked-down account where provisioning is off.
func (s *Service) bind(ctx context.Context) error {
	hint := ""
	if !s.cfg.Provision {
		hint = " (provisioning is off: create it, or set HEAPDEL_PROVISION=true)"
	}
	var err error
	if s.jobs, err = s.js.KeyValue(ctx, s.cfg.JobBucket); err != nil {
		return fmt.Errorf("key-value bucket %s: %w%s", s.cfg.JobBucket, err, hint)
	}
	if s.requests, err = s.js.KeyValue(ctx, s.cfg.RequestBucket); err != nil {
		return fmt.Errorf("key-value bucket %s: %w%s", s.cfg.RequestBucket, err, hint)
	}
	for _, name := range []string{s.cfg.ConsumerName, s.cfg.recheckConsumer()} {
		if _, err := s.js.Consumer(ctx, s.cfg.CommandStream, name); err != nil {
			return fmt.Errorf("consumer %s on stream %s: %w%s", name, s.cfg.CommandStream, err, hint)
		}
	}
	if _, err := s.js.Stream(ctx, s.cfg.StatusStream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("status stream %s: %w%s", s.cfg.StatusStream, err, hint)
		}
		return fmt.Errorf("status stream %s: %w", s.cfg.StatusStream, err)
	}
	return nil
}

func (s *Service) startConsumers(ctx context.Context) error {
	cons, err := s.js.Consumer(ctx, s.cfg.CommandStream, s.cfg.ConsumerName)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", s.cfg.ConsumerName, err)
	}
	pull := min(max(s.cfg.BatchSize, 100), 5000)
	cc, err := cons.Consume(s.onCommand,
		jetstream.PullMaxMessages(pull),
		jetstream.ConsumeErrHandler(s.onConsumeError))
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.cfg.ConsumerName, err)
	}
	rcons, err := s.js.Consumer(ctx, s.cfg.CommandStream, s.cfg.recheckConsumer())
	if err != nil {
		cc.Stop()
		return fmt.Errorf("consumer %s: %w", s.cfg.recheckConsumer(), err)
	}
	rc, err := rcons.Consume(s.onTick,
		jetstream.PullMaxMessages(1),
		jetstream.ConsumeErrHandler(s.onConsumeError))
	if err != nil {
		cc.Stop()
		return fmt.Errorf("consume %s: %w", s.cfg.recheckConsumer(), err)
	}
	s.mu.Lock()
	s.consumeCtx, s.recheckCtx = cc, rc
	s.mu.Unlock()
	return nil
}

func (s *Service) onConsumeError(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn().Err(err).Msg("consumer interrupted; it resumes when NATS is back")
		return
	}
	s.log.Debug().Err(err).Msg("consume")
}
