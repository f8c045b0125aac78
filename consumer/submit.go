package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
)

// claim is a command that this batch owns: its job is in state accepted at rev.
type claim struct {
	it  item
	job Job
	rev uint64
}

// flush takes one batch from intake to acknowledgement. Every item leaves it acked,
// terminated or nak'd: none is dropped.
func (s *Service) flush(ctx context.Context, items []item) {
	var pubs publishes
	var terms []item
	valid := make([]item, 0, len(items))
	for _, it := range items {
		if it.err != nil {
			terms = append(terms, it)
			s.invalid(ctx, &pubs, it)
			continue
		}
		valid = append(valid, it)
	}
	claims, settled := s.claim(ctx, valid, &pubs)
	if err := pubs.await(ctx, s); err != nil {
		s.log.Warn().Err(err).Msg("status events not stored; commands will be redelivered")
		s.release(items)
		return
	}
	for _, it := range terms {
		_ = it.msg.TermWithReason("invalid command")
	}
	for _, it := range settled {
		_ = it.msg.Ack()
	}
	if len(claims) > 0 {
		s.submit(ctx, claims)
	}
}

// invalid publishes failed/invalid_command for a command whose request id is
// readable; the message is terminated by the caller once the event is stored.
func (s *Service) invalid(ctx context.Context, pubs *publishes, it item) {
	s.m.commands.WithLabelValues("invalid").Inc()
	var inv *events.InvalidError
	reason, reqID := "invalid", ""
	if errors.As(it.err, &inv) {
		reason, reqID = inv.Reason, inv.RequestID
	}
	s.log.Warn().Str("request_id", reqID).Str("reason", reason).Uint64("stream_seq", it.seq).
		Str("error", it.err.Error()).Msg("invalid deletion command terminated")
	if reqID == "" {
		return
	}
	// A malformed re-send of a request id that is in progress or done must not
	// announce a failure of the deletion that is going well.
	lookup, cancel := context.WithTimeout(ctx, 5*time.Second)
	job, _, found, err := s.getJob(lookup, reqID)
	cancel()
	if err == nil && found && job.Status != stateFailed {
		s.log.Info().Str("request_id", reqID).Str("job_status", job.Status).Msg("invalid command for a known request id: terminated without a status event")
		return
	}
	now := s.now()
	// The id depends on this message's stream sequence: a redelivery of it keeps the
	// id, another invalid command for the request id gets its own.
	pubs.add(s, events.StatusEvent{
		RequestID: reqID, Status: events.StatusFailed, Attempt: 0, CommandSeq: it.seq,
		RequestedAt: now, CompletedAt: now, Reason: events.ReasonInvalidCommand,
		Message: it.err.Error(), Time: now,
	})
}

// claim creates or takes over the job of each command with compare-and-set. It
// returns the commands this batch must submit, and those already settled (duplicates
// and redeliveries of finished work) whose events it queued on pubs.
func (s *Service) claim(ctx context.Context, valid []item, pubs *publishes) (claims []claim, settled []item) {
	now := s.now()
	type pending struct {
		c claim
		f jetstream.PubAckFuture
	}
	claims = make([]claim, 0, len(valid))
	var rel releases
	writes := newWindow(len(valid), func(p pending) {
		ack, err := awaitAck(ctx, p.f)
		switch {
		case err == nil:
			p.c.rev = ack.Sequence
			s.m.commands.WithLabelValues("accepted").Inc()
			claims = append(claims, p.c)
		case errors.Is(err, errConflict):
			c, done, err := s.reclaim(ctx, p.c.it, pubs)
			switch {
			case err != nil:
				rel.add(s, p.c.it, err)
			case done:
				settled = append(settled, p.c.it)
			default:
				claims = append(claims, c)
			}
		default:
			rel.add(s, p.c.it, err)
		}
	})
	for _, it := range valid {
		j := s.newJob(it, 1, now)
		val, _ := json.Marshal(&j)
		f, err := s.putAsync(s.cfg.JobBucket, JobKey(j.RequestID), val, 0, 0)
		if err != nil {
			rel.add(s, it, err)
			continue
		}
		writes.add(pending{claim{it: it, job: j}, f})
	}
	writes.drain()
	rel.log(s)
	return claims, settled
}

// releases gives commands back after a job-store failure and says so in one log line
// per batch, not one per command (a NATS outage fails them all alike).
type releases struct {
	n     int
	first error
	reqID string
}

func (r *releases) add(s *Service, it item, err error) {
	s.release([]item{it})
	if r.n == 0 {
		r.first, r.reqID = err, it.cmd.RequestID
	}
	r.n++
}

func (r *releases) log(s *Service) {
	if r.n > 0 {
		s.log.Warn().Err(r.first).Int("commands", r.n).Str("first_request_id", r.reqID).Msg("job store unavailable; commands will be redelivered")
	}
}

// reclaim handles a command whose request id already has a job. It returns a claim
// when this command must be submitted (a retry after failed, or the redelivery of a
// command whose submission never finished), or done when it is settled: a duplicate,
// or a redelivery of work already finished (its events are re-queued: their ids are
// deterministic, so subscribers see them once).
func (s *Service) reclaim(ctx context.Context, it item, pubs *publishes) (c claim, done bool, err error) {
	key := JobKey(it.cmd.RequestID)
	for range 3 {
		job, rev, found, err := s.getJob(ctx, it.cmd.RequestID)
		if err != nil {
			return claim{}, false, err
		}
		if !found { // expired: a fresh job, past the delete marker
			j := s.newJob(it, 1, s.now())
			val, _ := json.Marshal(&j)
			rev, err := s.jobs.Create(ctx, key, val)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			if err != nil {
				return claim{}, false, err
			}
			s.m.commands.WithLabelValues("accepted").Inc()
			return claim{it: it, job: j, rev: rev}, false, nil
		}
		same := job.Seq == it.seq
		switch {
		case same && job.Status == stateAccepted:
			// Our own command again after a crash or nak: submit it (again).
			return claim{it: it, job: job, rev: rev}, false, nil
		case same:
			// A redelivery of work already done. If the earlier delivery stopped
			// short of purging its waiting entry, this one does.
			if it.mayWait() {
				s.purgeWaiting(ctx, []string{it.cmd.RequestID})
			}
			s.requeueEvents(pubs, &job)
			return claim{}, true, nil
		case job.Status == stateFailed:
			// A new command for a failed request id is a retry, processed afresh.
			j := s.newJob(it, job.Attempt+1, s.now())
			val, _ := json.Marshal(&j)
			rev, err := s.jobs.Update(ctx, key, val, rev)
			if err != nil {
				continue // changed meanwhile: look again
			}
			s.m.commands.WithLabelValues("accepted").Inc()
			return claim{it: it, job: j, rev: rev}, false, nil
		default:
			s.m.commands.WithLabelValues("duplicate").Inc()
			s.log.Info().Str("request_id", it.cmd.RequestID).Str("job_status", job.Status).Msg("duplicate deletion command acknowledged")
			return claim{}, true, nil
		}
	}
	return claim{}, false, errors.New("job changed repeatedly by other writers")
}

func (s *Service) newJob(it item, attempt int, now time.Time) Job {
	requested := it.cmd.Time
	if requested.IsZero() {
		requested = now
	}
	j := Job{
		RequestID:    it.cmd.RequestID,
		Attempt:      attempt,
		Seq:          it.seq,
		IdentityHash: identityHash(s.cfg.HashKey, it.cmd.Identity, it.cmd.UserID),
		RequestedAt:  requested.UTC(),
		Deadline:     it.cmd.Deadline,
	}
	j.record(stateAccepted, now, "")
	return j
}

// requeueEvents re-publishes the events of every transition the job has reached.
func (s *Service) requeueEvents(pubs *publishes, j *Job) {
	for _, t := range j.History {
		switch t.Status {
		case string(events.StatusSubmitted), stateProcessing, stateComplete, stateFailed:
			pubs.add(s, j.event(events.Status(t.Status), t.At))
		}
	}
}

// submit sends the claimed commands to Heap in one request. A permanent rejection of
// several users is narrowed down by halves so that only the culprits fail.
func (s *Service) submit(ctx context.Context, claims []claim) {
	users := make([]heapclient.User, 0, len(claims))
	seen := make(map[heapclient.User]struct{}, len(claims))
	for _, c := range claims {
		u := heapclient.User{Identity: c.it.cmd.Identity, UserID: c.it.cmd.UserID}
		if _, dup := seen[u]; dup {
			continue // two request ids for one person: one Heap entry covers both
		}
		seen[u] = struct{}{}
		users = append(users, u)
	}
	id, err := s.heap.Submit(ctx, users)
	switch {
	case err == nil:
		s.setCredsRejected(false)
		s.submitted(ctx, claims, id, len(users))
	case ctx.Err() != nil:
		s.release(itemsOf(claims))
	case errors.Is(err, heapclient.ErrRejected) && len(claims) > 1:
		s.m.heapFailures.WithLabelValues("rejected").Inc()
		half := len(claims) / 2
		s.log.Info().Int("commands", len(claims)).Msg("Heap rejected a batch; splitting it to find the user it refuses")
		s.submit(ctx, claims[:half])
		s.submit(ctx, claims[half:])
	case errors.Is(err, heapclient.ErrRejected):
		s.m.heapFailures.WithLabelValues("rejected").Inc()
		s.log.Warn().Err(err).Str("request_id", claims[0].job.RequestID).Msg("Heap refused this user permanently")
		// Heap's own words stay in the log (sanitised): the event and the job
		// record, kept for months, get a fixed text that cannot echo an identity.
		s.fail(ctx, claims[0], events.ReasonHeapRejected, "Heap refused this user permanently (its answer is in heapdel's log)")
	case errors.Is(err, heapclient.ErrUnauthorized), errors.Is(err, heapclient.ErrMisconfigured):
		s.m.heapFailures.WithLabelValues("unauthorized").Inc()
		s.m.credsRejected.Inc()
		s.setCredsRejected(true)
		s.log.Error().Err(err).Int("commands", len(claims)).
			Msg("Heap refused heapdel itself: set HEAPDEL_HEAP_APP_ID to the Main Production environment id, HEAPDEL_HEAP_API_KEY (or _FILE) to a valid key, and check HEAPDEL_HEAP_BASE_URL; commands are kept and retried")
		s.nak(ctx, claims, 10*s.cfg.RetryDelay, 5*time.Minute, 0)
	default:
		kind := "other"
		var wait time.Duration
		var re *heapclient.RetryableError
		if errors.As(err, &re) {
			kind, wait = "retryable", re.RetryAfter
		}
		s.m.heapFailures.WithLabelValues(kind).Inc()
		s.log.Warn().Err(err).Int("commands", len(claims)).Msg("Heap submission failed; commands will be retried")
		s.nak(ctx, claims, s.cfg.RetryDelay, 2*time.Minute, wait)
	}
}

// submitted records a Heap deletion request: the request record first (so no job
// can be processing without being followed), then the jobs, then the events, then
// the purge of the waiting entries of redelivered commands; only when all are stored
// are the commands acknowledged.
func (s *Service) submitted(ctx context.Context, claims []claim, heapID string, users int) {
	now := s.now()
	untilComplete := s.cfg.Behavior == BehaviorUntilComplete
	if untilComplete {
		// Heap has accepted these users: retry the bookkeeping a few times before
		// giving the commands back, which would submit them again.
		err := retry(ctx, 4, 250*time.Millisecond, func() error { return s.trackRequest(ctx, claims, heapID, users, now) })
		if err != nil {
			s.log.Warn().Err(err).Str("heap_deletion_request_id", heapID).Msg("recording Heap deletion request; commands will be redelivered")
			s.release(itemsOf(claims))
			return
		}
	}
	var pubs publishes
	var rel releases
	defer rel.log(s)
	var ack []item
	var waited []string // request ids whose waiting entry this batch purges
	// settle awaits the job write of claims[i] and queues its events.
	settle := func(i int, f jetstream.PubAckFuture) {
		c := &claims[i]
		if _, err := awaitAck(ctx, f); err != nil {
			if errors.Is(err, errConflict) {
				// Another replica took this job over (a redelivery raced us). Its
				// events are re-queued from the stored job, so none is lost if it
				// crashes before publishing; ids are the same, so none is doubled.
				if s.requeueStored(ctx, &pubs, c.job.RequestID) {
					ack = append(ack, c.it)
				} else {
					s.release([]item{c.it})
				}
				return
			}
			rel.add(s, c.it, err)
			return
		}
		if c.it.mayWait() {
			waited = append(waited, c.job.RequestID)
		}
		pubs.add(s, c.job.event(events.StatusSubmitted, now))
		if untilComplete {
			pubs.add(s, c.job.event(events.StatusProcessing, now))
		} else {
			pubs.add(s, c.job.event(events.StatusComplete, now))
			if !c.job.Deadline.IsZero() && now.After(c.job.Deadline) {
				s.m.completedLate.Inc()
			}
		}
		ack = append(ack, c.it)
	}
	type write struct {
		i int
		f jetstream.PubAckFuture
	}
	writes := newWindow(len(claims), func(w write) { settle(w.i, w.f) })
	for i := range claims {
		j := &claims[i].job
		j.HeapDeletionRequestID = heapID
		j.SubmittedAt = now
		j.record(string(events.StatusSubmitted), now, "")
		ttl := time.Duration(0)
		if untilComplete {
			j.record(stateProcessing, now, "")
		} else {
			j.CompletedAt = now
			j.record(stateComplete, now, "")
			ttl = s.cfg.JobRetention
		}
		val, _ := json.Marshal(j)
		f, err := s.putAsync(s.cfg.JobBucket, JobKey(j.RequestID), val, claims[i].rev, ttl)
		if err != nil {
			rel.add(s, claims[i].it, err)
			continue
		}
		writes.add(write{i, f})
	}
	writes.drain()
	if err := pubs.await(ctx, s); err != nil {
		s.log.Warn().Err(err).Str("heap_deletion_request_id", heapID).Msg("status events not stored; commands will be redelivered")
		s.release(ack)
		return
	}
	if len(waited) > 0 {
		s.purgeWaiting(ctx, waited)
	}
	for _, it := range ack {
		_ = it.msg.Ack()
	}
	s.log.Info().Str("heap_deletion_request_id", heapID).Int("users", users).Int("commands", len(ack)).Msg("submitted to Heap")
}

// fail records a permanent failure of one command and acknowledges it.
func (s *Service) fail(ctx context.Context, c claim, reason events.Reason, message string) {
	now := s.now()
	j := &c.job
	j.CompletedAt = now
	j.Reason, j.Message = string(reason), message
	j.record(stateFailed, now, string(reason))
	val, _ := json.Marshal(j)
	f, err := s.putAsync(s.cfg.JobBucket, JobKey(j.RequestID), val, c.rev, s.cfg.JobRetention)
	if err == nil {
		_, err = awaitAck(ctx, f)
	}
	var pubs publishes
	stored := err == nil // our failure is the job's state: its waiting entry goes
	switch {
	case errors.Is(err, errConflict):
		// Someone else moved the job on: publish what it stored, not our failure.
		if !s.requeueStored(ctx, &pubs, j.RequestID) {
			s.release([]item{c.it})
			return
		}
	case err != nil:
		s.log.Warn().Err(err).Str("request_id", j.RequestID).Msg("job store; command will be redelivered")
		s.release([]item{c.it})
		return
	default:
		pubs.add(s, j.event(events.StatusFailed, now))
	}
	if err := pubs.await(ctx, s); err != nil {
		s.release([]item{c.it})
		return
	}
	if stored && c.it.mayWait() {
		s.purgeWaiting(ctx, []string{j.RequestID})
	}
	s.log.Warn().Str("request_id", j.RequestID).Str("reason", string(reason)).Str("detail", message).Msg("deletion failed")
	_ = c.it.msg.Ack()
}

// requeueStored re-reads a job that another writer changed and queues the events of
// the transitions it has reached. It returns false when the job cannot be read.
func (s *Service) requeueStored(ctx context.Context, pubs *publishes, requestID string) bool {
	job, _, found, err := s.getJob(ctx, requestID)
	if err != nil {
		return false
	}
	if found {
		s.requeueEvents(pubs, &job)
	}
	return true
}

// retry runs op up to attempts times, waiting wait, then twice that, between tries.
func retry(ctx context.Context, attempts int, wait time.Duration, op func() error) error {
	var err error
	for i := range attempts {
		if err = op(); err == nil {
			return nil
		}
		if i == attempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait << i):
		}
	}
	return err
}

// release gives commands back to JetStream at once, for this or another replica.
func (s *Service) release(items []item) {
	for _, it := range items {
		_ = it.msg.Nak()
	}
}

// nak gives commands back after a delay that grows with each delivery, with jitter,
// and is never shorter than atLeast (Heap's Retry-After). Those with a deadline are
// first recorded as waiting for Heap, for the deadline gauges.
func (s *Service) nak(ctx context.Context, claims []claim, base, ceiling, atLeast time.Duration) {
	delays := make([]time.Duration, len(claims))
	for i, c := range claims {
		delays[i] = max(backoff(c.it.delivered, base, ceiling), atLeast)
	}
	s.markWaiting(ctx, claims, delays)
	for i, c := range claims {
		_ = c.it.msg.NakWithDelay(delays[i])
	}
}

// backoff is base·2^(n-1) capped at ceiling, ±20% jitter.
func backoff(delivered uint64, base, ceiling time.Duration) time.Duration {
	d := base
	for i := uint64(1); i < delivered && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

func itemsOf(claims []claim) []item {
	out := make([]item, len(claims))
	for i, c := range claims {
		out[i] = c.it
	}
	return out
}
