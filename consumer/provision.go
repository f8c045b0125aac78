package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// provision creates or updates everything heapdel needs. It is idempotent and safe
// to run from every replica at every start, at the same moment, against a NATS
// cluster that is still electing its leaders, and against a deployment made by an
// earlier version (whose command stream also carried the schedule and its ticks:
// migrateCommandStream moves it to the current layout without losing a command).
// Every failure is retried with backoff until ctx ends; the last one is returned.
func (s *Service) provision(ctx context.Context) error {
	return retryBackoff(ctx, 250*time.Millisecond, 5*time.Second,
		func() (bool, error) { return false, s.provisionOnce(ctx) },
		func(try int, err error, wait time.Duration) {
			s.log.Warn().Err(err).Int("attempt", try).Dur("retry_in", wait).
				Msg("provisioning JetStream objects failed; retrying (a NATS cluster may still be electing, or another replica is provisioning)")
		})
}

// apiTimeout bounds one JetStream API call of provisioning, so that a call the
// cluster never answers (no meta leader yet) is retried instead of using up Start.
const apiTimeout = 5 * time.Second

func (s *Service) provisionOnce(ctx context.Context) error {
	c := s.cfg
	call := func(f func(ctx context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		return f(cctx)
	}
	if err := s.migrateCommandStream(ctx); err != nil {
		return fmt.Errorf("migrate stream %s: %w", c.CommandStream, err)
	}
	for _, sc := range s.streamConfigs() {
		if err := call(func(ctx context.Context) error {
			// Create first: racing creates of one config are all answered, while a
			// no-op update of an R3 stream whose group is still electing may get no
			// answer at all.
			_, err := s.js.CreateStream(ctx, sc)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				_, err = s.js.UpdateStream(ctx, sc)
			}
			return err
		}); err != nil {
			return fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	if err := s.finishMigration(ctx); err != nil {
		return fmt.Errorf("migrate stream %s: %w", c.CommandStream, err)
	}
	for _, kc := range s.bucketConfigs() {
		if err := call(func(ctx context.Context) error {
			_, err := s.js.CreateKeyValue(ctx, kc)
			if errors.Is(err, jetstream.ErrBucketExists) {
				_, err = s.js.UpdateKeyValue(ctx, kc)
			}
			return err
		}); err != nil {
			return fmt.Errorf("provision key-value bucket %s: %w", kc.Bucket, err)
		}
	}
	for _, cc := range []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{{c.CommandStream, s.commandConsumerConfig()}, {c.ScheduleStream, s.recheckConsumerConfig()}} {
		if err := call(func(ctx context.Context) error {
			_, err := s.js.CreateOrUpdateConsumer(ctx, cc.stream, cc.cfg)
			return err
		}); err != nil {
			return fmt.Errorf("provision consumer %s: %w", cc.cfg.Durable, err)
		}
	}
	return nil
}

// streamConfigs are the three streams of SPEC.md. The command stream refuses
// roll-ups (JetStream refuses a publisher's Nats-Rollup header at publish time, so
// it can never delete queued commands) and message schedules; the schedule and its
// ticks live in their own stream, which needs both and which nothing outside
// heapdel publishes to.
func (s *Service) streamConfigs() []jetstream.StreamConfig {
	c := s.cfg
	schedules := s.serverSchedules()
	dup := 2 * time.Minute
	if !schedules && c.RecheckInterval > dup {
		// Fallback ticks are deduplicated by Nats-Msg-Id per time window.
		dup = c.RecheckInterval
	}
	return []jetstream.StreamConfig{{
		Name:        c.CommandStream,
		Description: "heapdel deletion commands",
		Subjects:    []string{c.requestedSubject()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  2 * time.Minute,
		DenyDelete:  false,
		AllowRollup: false,
	}, {
		Name:        c.ScheduleStream,
		Description: "heapdel recheck schedule and ticks (internal)",
		Subjects:    []string{c.recheckSubject(), c.scheduleSubject()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  dup,
		// Message schedules require roll-ups (the server turns them on anyway).
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
		Duplicates:  statusDuplicates,
	}}
}

// statusDuplicates is the status stream's duplicate window: a status event
// published again within it (the same Nats-Msg-Id) is stored once.
const statusDuplicates = 2 * time.Minute

func (s *Service) bucketConfigs() []jetstream.KeyValueConfig {
	c := s.cfg
	return []jetstream.KeyValueConfig{{
		Bucket:         c.JobBucket,
		Description:    "heapdel job state by request id",
		Storage:        jetstream.FileStorage,
		Replicas:       c.Replicas,
		LimitMarkerTTL: markerTTL, // enables per-entry TTLs: terminal jobs expire after JobRetention
	}, {
		Bucket:         c.RequestBucket,
		Description:    "heapdel: Heap deletion requests followed until complete",
		Storage:        jetstream.FileStorage,
		Replicas:       c.Replicas,
		LimitMarkerTTL: markerTTL, // purge markers of finished requests expire
	}}
}

// migrationStream is where queued commands wait while the command stream is
// recreated. It exists only during a migration (or after a crash in one, which the
// next start finishes).
func (c Config) migrationStream() string  { return c.CommandStream + "_MIGRATION" }
func (c Config) migrationSubject() string { return c.Prefix + ".migration" }

// migratedSeqHeader carries a command's sequence in the stream it came from, so that
// every copy of it during a migration has the same Nats-Msg-Id and is stored once.
const migratedSeqHeader = "Heapdel-Migrated-Seq"

// migrateCommandStream recreates a command stream made by an earlier version (it
// carried the recheck subjects and, on nats-server 2.14+, allowed schedules and
// roll-ups, which JetStream cannot turn off on an existing stream). It seals the
// old stream (publishers get an error and retry; nothing can be added behind the
// copy's back), copies every queued command to the migration stream, and deletes the
// old stream; provisionOnce then creates the new one and finishMigration copies the
// commands back. Each step is idempotent, so a crash or a second replica doing the
// same at the same moment loses and doubles nothing (copies carry a Nats-Msg-Id per
// original sequence; a command stored twice all the same is a duplicate request id,
// which the job store absorbs).
func (s *Service) migrateCommandStream(ctx context.Context) error {
	c := s.cfg
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	old, err := s.js.Stream(lctx, c.CommandStream)
	cancel()
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	first := old.CachedInfo()
	oc := first.Config
	if !needsMigration(oc, c) {
		return nil
	}
	// still reports whether the stream named CommandStream is the one first seen:
	// another replica may have finished the migration meanwhile, and the stream
	// of the new layout must never be copied from or deleted.
	still := func() (bool, error) {
		st, err := s.js.Stream(ctx, c.CommandStream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return st.CachedInfo().Created.Equal(first.Created), nil
	}
	s.log.Warn().Str("stream", c.CommandStream).Strs("subjects", oc.Subjects).Bool("allow_rollup", oc.AllowRollup).
		Msg("command stream has the layout of an earlier heapdel (internal subjects or roll-ups allowed): recreating it, keeping every queued command; publishers get errors for a few seconds")
	// The old recheck consumer goes first: its ticks are never needed again.
	if err := s.js.DeleteConsumer(ctx, c.CommandStream, c.recheckConsumer()); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete old recheck consumer: %w", err)
	}
	if !oc.Sealed {
		oc.Sealed = true
		if _, err := s.js.UpdateStream(ctx, oc); err != nil {
			return fmt.Errorf("seal old stream: %w", err)
		}
	}
	if _, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.migrationStream(),
		Description: "heapdel: commands being moved to a recreated command stream",
		Subjects:    []string{c.migrationSubject()},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  time.Hour,
	}); err != nil {
		return fmt.Errorf("create %s: %w", c.migrationStream(), err)
	}
	if ok, err := still(); err != nil || !ok {
		return err // migrated by another replica meanwhile
	}
	n, err := s.copyCommands(ctx, c.CommandStream, c.migrationSubject(), c.requestedSubject())
	if err != nil {
		return fmt.Errorf("copy queued commands to %s: %w", c.migrationStream(), err)
	}
	if ok, err := still(); err != nil || !ok {
		return err
	}
	if err := s.js.DeleteStream(ctx, c.CommandStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete old stream: %w", err)
	}
	s.log.Info().Int("commands", n).Str("stream", c.migrationStream()).Msg("queued commands kept aside while the command stream is recreated")
	return nil
}

func needsMigration(have jetstream.StreamConfig, c Config) bool {
	return have.AllowRollup || have.AllowMsgSchedules || have.Sealed || !slices.Equal(have.Subjects, []string{c.requestedSubject()})
}

// finishMigration copies the commands kept aside back into the (new) command stream
// and deletes the migration stream. It does nothing when there is none.
func (s *Service) finishMigration(ctx context.Context) error {
	c := s.cfg
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	_, err := s.js.Stream(lctx, c.migrationStream())
	cancel()
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	n, err := s.copyCommands(ctx, c.migrationStream(), c.requestedSubject(), c.migrationSubject())
	if err != nil {
		return fmt.Errorf("copy commands back from %s: %w", c.migrationStream(), err)
	}
	if err := s.js.DeleteStream(ctx, c.migrationStream()); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete %s: %w", c.migrationStream(), err)
	}
	s.log.Warn().Int("commands", n).Str("stream", c.CommandStream).Msg("command stream migrated to the current layout: roll-ups refused, recheck schedule in its own stream")
	return nil
}

// copyCommands publishes every message of stream on subject from to subject to,
// with its headers and data (JetStream's own Nats-* headers dropped) and a
// Nats-Msg-Id per original sequence, and waits until all are stored. It reads only
// the messages on from (JetStream's next-by-subject get), so years of recheck ticks
// between the old schedule message and the queued commands cost nothing.
func (s *Service) copyCommands(ctx context.Context, stream, to, from string) (int, error) {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	n := 0
	var werr error
	writes := newWindow(writeWindow, func(f jetstream.PubAckFuture) {
		if _, err := awaitAck(ctx, f); err != nil {
			werr = errors.Join(werr, err)
		}
	})
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(from))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read the command after sequence %d: %w", seq, err)
		}
		seq = m.Sequence + 1
		orig := m.Header.Get(migratedSeqHeader)
		if orig == "" {
			orig = strconv.FormatUint(m.Sequence, 10)
		}
		out := nats.NewMsg(to)
		for k, v := range m.Header {
			if !strings.HasPrefix(k, "Nats-") {
				out.Header[k] = v
			}
		}
		out.Header.Set(migratedSeqHeader, orig)
		out.Data = m.Data
		f, err := s.js.PublishMsgAsync(out, jetstream.WithMsgID("heapdel-migrate-"+orig))
		if err != nil {
			return n, err
		}
		writes.add(f)
		n++
	}
	writes.drain()
	return n, werr
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
		AckWait:       tickAckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1, // one tick at a time across all replicas: checks never double
	}
}

// tickAckWait is how long a tick stays with one replica without a sign of life; the
// replica working on it says "in progress" every tickKeepAlive for as long as it
// works, so only a crashed replica's tick goes to another.
const (
	tickAckWait   = time.Minute
	tickKeepAlive = 15 * time.Second
)

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
	for _, r := range s.cfg.Resources() {
		if r.Kind != "consumer" {
			continue
		}
		if _, err := s.js.Consumer(ctx, r.Stream, r.Name); err != nil {
			return fmt.Errorf("consumer %s on stream %s: %w%s", r.Name, r.Stream, err, hint)
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

// lookupConsumer looks a consumer up, each try bounded by apiTimeout and retried
// with backoff until ctx ends: the group of a consumer just created on a NATS
// cluster may not answer while it elects its leader.
func (s *Service) lookupConsumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	err := retryBackoff(ctx, 100*time.Millisecond, 2*time.Second, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, apiTimeout)
		defer cancel()
		var err error
		c, err = s.js.Consumer(cctx, stream, name)
		return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound), err
	}, nil)
	return c, err
}

func (s *Service) startConsumers(ctx context.Context) error {
	cons, err := s.lookupConsumer(ctx, s.cfg.CommandStream, s.cfg.ConsumerName)
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
	rcons, err := s.lookupConsumer(ctx, s.cfg.ScheduleStream, s.cfg.recheckConsumer())
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
	defer s.mu.Unlock()
	if s.closing.Load() { // closed meanwhile
		cc.Stop()
		rc.Stop()
		return nil
	}
	s.consumeCtx, s.recheckCtx = cc, rc
	return nil
}

func (s *Service) onConsumeError(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn().Err(err).Msg("consumer interrupted; it resumes when NATS is back")
		return
	}
	s.log.Debug().Err(err).Msg("consume")
}
