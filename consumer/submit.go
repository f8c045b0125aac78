package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// flush takes one batch from intake to acknowledgement, following the model of a
// command's life in docs/design.md. Every item leaves it acked, terminated or given
// back with a delay: none is dropped.
func (s *Service) flush(ctx context.Context, items []item) {
	valid := make([]item, 0, len(items))
	var invalid []item
	for _, it := range items {
		if it.err != nil {
			invalid = append(invalid, it)
		} else {
			valid = append(valid, it)
		}
	}
	var pubs publishes
	claims, settled, back := s.claim(ctx, valid, &pubs)
	// Invalid commands after the claims: a malformed re-send of a request id that a
	// valid command of this very batch claims must not announce a failure.
	var inBatch map[string]bool // only when there is an invalid command to check
	if len(invalid) > 0 {
		inBatch = make(map[string]bool, len(valid))
		for _, it := range valid {
			inBatch[it.cmd.RequestID] = true
		}
	}
	var terms []item
	for _, it := range invalid {
		if s.invalid(ctx, &pubs, it, inBatch) {
			terms = append(terms, it)
		} else {
			back = append(back, it)
		}
	}
	if err := pubs.await(ctx, s); err != nil {
		// Nothing was sent to Heap yet: redelivery is safe, after a delay.
		s.log.Warn().Err(err).Msg("status events not stored; commands will be redelivered")
		s.giveBack(append(append(back, terms...), append(settled, itemsOf(claims)...)...), s.storeDelay)
		return
	}
	s.giveBack(back, s.storeDelay)
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

// invalid handles a command that cannot be used. For a readable request id that no
// job and no valid command of this batch has, it records
// a failed/invalid_command job and queues its event, and returns true: the message
// is to be terminated once the event is stored. It returns false when the job store
// cannot be read or written: the command is then given back, since publishing a
// failure for a request id that may be going well would be a lie.
func (s *Service) invalid(ctx context.Context, pubs *publishes, it item, inBatch map[string]bool) bool {
	var inv *events.InvalidError
	reason, reqID := "invalid", ""
	if errors.As(it.err, &inv) {
		reason, reqID = inv.Reason, inv.RequestID
	}
	if reqID != "" && inBatch[reqID] {
		s.m.commands.WithLabelValues("invalid").Inc()
		s.log.Info().Str("request_id", reqID).Str("reason", reason).Msg("invalid re-send of a request id claimed in the same batch: terminated without a status event")
		return true
	}
	if reqID == "" {
		s.m.commands.WithLabelValues("invalid").Inc()
		s.log.Warn().Str("reason", reason).Uint64("stream_seq", it.seq).
			Str("error", it.err.Error()).Msg("invalid deletion command terminated")
		return true
	}
	now := s.now()
	lookup, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The failure is recorded as the request id's job before it is announced, with
	// compare-and-set: a valid command claiming the request id at the same moment
	// (another batch, another replica) either finds this failed job and retries it,
	// or has claimed first and this command announces nothing. Announcing first
	// could publish failed for a deletion under way.
	for range 3 {
		job, _, found, err := s.getJob(lookup, reqID)
		if err != nil {
			s.stalled(causeStore, err)
			return false
		}
		if found && job.Seq != it.seq {
			// Known or in flight: SPEC says an invalid command for it publishes nothing.
			s.m.commands.WithLabelValues("invalid").Inc()
			s.log.Info().Str("request_id", reqID).Str("job_status", job.Status).Str("reason", reason).Msg("invalid command for a known request id: terminated without a status event")
			return true
		}
		if !found {
			j := Job{RequestID: reqID, Seq: it.seq, RequestedAt: now.UTC(), CompletedAt: now.UTC(),
				Reason: string(events.ReasonInvalidCommand), Message: it.err.Error(),
				TraceParent: it.cmd.TraceParent, TraceState: it.cmd.TraceState}
			j.record(stateFailed, now, string(events.ReasonInvalidCommand))
			val, _ := json.Marshal(&j)
			f, err := s.putAsync(s.cfg.JobBucket, JobKey(reqID), val, 0, s.cfg.JobRetention)
			if err == nil {
				_, err = awaitAck(lookup, f)
			}
			if isConflict(err) {
				continue // claimed meanwhile: look again
			}
			if err != nil {
				s.stalled(causeStore, err)
				return false
			}
		}
		// Recorded by this command now, or by an earlier delivery of it whose event
		// was not stored.
		s.m.commands.WithLabelValues("invalid").Inc()
		s.log.Warn().Str("request_id", reqID).Str("reason", reason).Uint64("stream_seq", it.seq).
			Str("error", it.err.Error()).Msg("invalid deletion command terminated")
		// The id depends on this message's stream sequence: a redelivery of it keeps
		// the id, another invalid command for the request id gets its own.
		pubs.add(s, events.StatusEvent{
			RequestID: reqID, Status: events.StatusFailed, Attempt: 0, CommandSeq: it.seq,
			RequestedAt: now, CompletedAt: now, Reason: events.ReasonInvalidCommand,
			Message: it.err.Error(), Time: now,
			TraceParent: it.cmd.TraceParent, TraceState: it.cmd.TraceState,
		})
		return true
	}
	s.stalled(causeStore, errors.New("the job changed repeatedly while an invalid command was recorded"))
	return false
}

// claim creates or takes over the job of each command with compare-and-set. It
// returns the commands this batch must submit, those already settled (duplicates
// and redeliveries of finished work, whose events it queued on pubs), and those to
// give back because the job store failed.
func (s *Service) claim(ctx context.Context, valid []item, pubs *publishes) (claims []claim, settled, back []item) {
	now := s.now()
	type pending struct {
		c claim
		f jetstream.PubAckFuture
	}
	claims = make([]claim, 0, len(valid))
	var failed storeFailures
	writes := newWindow(len(valid), func(p pending) {
		ack, err := awaitAck(ctx, p.f)
		if isConflict(err) {
			it := p.c.it
			var done bool
			p.c, done, err = s.reclaim(ctx, it, pubs)
			p.c.it = it
			if err == nil && done {
				settled = append(settled, it)
				return
			}
		} else if err == nil {
			p.c.rev = ack.Sequence
			s.m.commands.WithLabelValues("accepted").Inc()
		}
		if errors.Is(err, errRecentClaim) {
			back = append(back, p.c.it) // not the store's fault
			return
		}
		if err != nil {
			failed.add(p.c.it.cmd.RequestID, err)
			back = append(back, p.c.it)
			return
		}
		claims = append(claims, p.c)
	})
	for _, it := range valid {
		j := s.newJob(it, 1, now)
		val, _ := json.Marshal(&j)
		f, err := s.putAsync(s.cfg.JobBucket, JobKey(j.RequestID), val, 0, 0)
		if err != nil {
			failed.add(it.cmd.RequestID, err)
			back = append(back, it)
			continue
		}
		writes.add(pending{claim{it: it, job: j}, f})
	}
	writes.drain()
	failed.report(s, "claiming commands; they are given back and retried")
	return claims, settled, back
}

// storeFailures gathers a batch's job-store failures into one log line (a NATS
// outage fails them all alike) and the store stall signal.
type storeFailures struct {
	n     int
	first error
	reqID string
}

func (f *storeFailures) add(reqID string, err error) {
	if f.n == 0 {
		f.first, f.reqID = err, reqID
	}
	f.n++
}

func (f *storeFailures) report(s *Service, what string) {
	if f.n == 0 {
		s.stalled(causeStore, nil)
		return
	}
	s.stalled(causeStore, f.first)
	s.log.Warn().Err(f.first).Int("commands", f.n).Str("first_request_id", f.reqID).Msg("job store refused a write: " + what)
}

// reclaim handles a command whose request id already has a job. It returns a claim
// when this command must be submitted (a retry after failed, the redelivery of a
// command whose submission never finished, or a re-send that takes over a claim whose
// command no longer exists), or done when it is settled: a duplicate, or a
// redelivery of work already finished (its events are re-queued: their ids are
// deterministic, so subscribers see them once).
func (s *Service) reclaim(ctx context.Context, it item, pubs *publishes) (c claim, done bool, err error) {
	key := JobKey(it.cmd.RequestID)
	for range 3 {
		job, rev, found, err := s.getJob(ctx, it.cmd.RequestID)
		if err != nil {
			return claim{it: it}, false, err
		}
		replace := func(attempt int) (claim, bool, error, bool) {
			j := s.newJob(it, attempt, s.now())
			if found && attempt > job.Attempt {
				j.Earlier = earlierAttempts(&job)
				j.History[0].Note = "retry"
				if it.cmd.Source == RedriveSource {
					j.History[0].Note = "redrive"
				}
			}
			val, _ := json.Marshal(&j)
			var nrev uint64
			var err error
			if found {
				nrev, err = s.jobs.Update(ctx, key, val, rev)
			} else {
				nrev, err = s.jobs.Create(ctx, key, val)
			}
			if isConflict(err) {
				return claim{}, false, nil, false // changed meanwhile: look again
			}
			if err != nil {
				return claim{it: it}, false, err, true
			}
			s.m.commands.WithLabelValues("accepted").Inc()
			return claim{it: it, job: j, rev: nrev}, false, nil, true
		}
		same := found && job.Seq == it.seq
		switch {
		case !found: // expired: a fresh job, past the delete marker
			if c, done, err, ok := replace(1); ok {
				return c, done, err
			}
		case same && job.Status == stateAccepted:
			// Our own command again after a crash or a give-back: submit it (again).
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
			// An invalid command's failure recorded moments ago may not be
			// announced yet (its replica publishes it right after recording it):
			// it is announced here first, with its own id, so that this retry's
			// events never come before it. Within the status stream's duplicate
			// window the second copy is dropped.
			if job.Reason == string(events.ReasonInvalidCommand) && s.now().Sub(job.CompletedAt) < statusDuplicates {
				pubs.addInOrder(job.event(events.StatusFailed, job.CompletedAt))
			}
			if c, done, err, ok := replace(job.Attempt + 1); ok {
				return c, done, err
			}
		case job.Status == stateAccepted:
			// Claimed by another command. If that command is gone from the stream
			// (purged, rolled up, the stream recreated), nobody will ever submit
			// it: this re-send takes the claim over.
			owned, err := s.commandExists(ctx, nil, job.Seq, job.RequestID)
			if err != nil {
				return claim{it: it}, false, err
			}
			if owned {
				return s.duplicate(it, job)
			}
			if last := job.History[len(job.History)-1].At; s.now().Sub(last) < 2*s.cfg.AckWait {
				// Claimed moments ago: its command may just have been moved (a
				// migration copies commands to new sequences) and be at Heap
				// now. Come back once the claim is surely stale.
				return claim{it: it}, false, errRecentClaim
			}
			s.m.reconciled.WithLabelValues(repairOrphanedClaim).Inc()
			s.log.Warn().Str("request_id", it.cmd.RequestID).Uint64("orphaned_seq", job.Seq).
				Msg("the command that claimed this request id is gone from the stream; this re-send takes the claim over")
			if c, done, err, ok := replace(job.Attempt); ok {
				return c, done, err
			}
		default:
			return s.duplicate(it, job)
		}
	}
	return claim{it: it}, false, errors.New("job changed repeatedly by other writers")
}

// errRecentClaim: the request id is claimed by a command that left the stream, but
// too recently to take the claim over yet; the re-send is given back with a delay.
var errRecentClaim = errors.New("claimed too recently to take over")

func (s *Service) duplicate(it item, job Job) (claim, bool, error) {
	s.m.commands.WithLabelValues("duplicate").Inc()
	s.log.Info().Str("request_id", it.cmd.RequestID).Str("job_status", job.Status).Msg("duplicate deletion command acknowledged")
	return claim{}, true, nil
}

// commandExists says whether the command stream still holds the command that
// claimed requestID at seq (a work queue removes a command once it is settled, and
// after a migration the same sequence may hold another command).
// st is the command stream, or nil to look it up.
func (s *Service) commandExists(ctx context.Context, st jetstream.Stream, seq uint64, requestID string) (bool, error) {
	if seq == 0 {
		return false, nil
	}
	if st == nil {
		var err error
		if st, err = s.js.Stream(ctx, s.cfg.CommandStream); err != nil {
			return false, err
		}
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	cmd, derr := s.decoder.Decode(m.Subject, m.Header, m.Data)
	if derr != nil {
		var inv *events.InvalidError
		return errors.As(derr, &inv) && inv.RequestID == requestID, nil
	}
	return cmd.RequestID == requestID, nil
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
		Sealed:       s.sealer.Seal(it.cmd.RequestID, it.cmd.Identity, it.cmd.UserID),
		RequestedAt:  requested.UTC(),
		Deadline:     it.cmd.Deadline,
		TraceParent:  it.cmd.TraceParent,
		TraceState:   it.cmd.TraceState,
	}
	j.record(stateAccepted, now, "")
	return j
}

// earlierAttempts returns the history of j's attempts, j's own included, each
// transition marked with its attempt: what a retry of j carries on.
func earlierAttempts(j *Job) []Transition {
	out := make([]Transition, 0, len(j.Earlier)+len(j.History))
	out = append(out, j.Earlier...)
	for _, t := range j.History {
		t.Attempt = j.Attempt
		out = append(out, t)
	}
	return out
}

// requeueEvents re-publishes the events of every transition the job has reached.
func (s *Service) requeueEvents(pubs *publishes, j *Job) {
	for _, t := range j.History {
		switch t.Status {
		case string(events.StatusSubmitted), stateProcessing, stateComplete, stateFailed:
			pubs.addInOrder(j.event(events.Status(t.Status), t.At))
		}
	}
}

// submit sends the claimed commands to Heap in one request and decides, from Heap's
// answer alone, what becomes of them (docs/design.md). A permanent rejection of
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
	case errors.Is(err, heapclient.ErrAcceptedUnreadable):
		// Heap answered 2xx: it may have accepted the users. Sending them again
		// could create deletion requests without end, so they are held.
		s.m.heapFailures.WithLabelValues("unreadable").Inc()
		s.hold(ctx, claims, err)
	case ctx.Err() != nil:
		s.giveBack(itemsOf(claims), nil) // shutting down: the next replica takes them at once
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
		s.finishClaims(ctx, claims[:1], stateFailed, events.ReasonHeapRejected, "Heap refused this user permanently (its answer is in heapdel's log)")
	case errors.Is(err, heapclient.ErrUnauthorized), errors.Is(err, heapclient.ErrMisconfigured):
		s.m.heapFailures.WithLabelValues("unauthorized").Inc()
		s.m.credsRejected.Inc()
		s.setCredsRejected(true)
		s.log.Error().Err(err).Int("commands", len(claims)).
			Msg("Heap refused heapdel itself: set HEAPDEL_HEAP_APP_ID to the Main Production environment id, HEAPDEL_HEAP_API_KEY (or _FILE) to a valid key, and check HEAPDEL_HEAP_BASE_URL and any proxy; commands are kept and retried")
		s.waitForHeap(ctx, claims, 10*s.cfg.RetryDelay, 5*time.Minute, 0)
	default:
		kind := "other"
		var wait time.Duration
		var re *heapclient.RetryableError
		if errors.As(err, &re) {
			kind, wait = "retryable", re.RetryAfter
		}
		s.m.heapFailures.WithLabelValues(kind).Inc()
		s.log.Warn().Err(err).Int("commands", len(claims)).Msg("Heap submission failed; commands will be retried")
		s.waitForHeap(ctx, claims, s.cfg.RetryDelay, 2*time.Minute, wait)
	}
}

// submitted records a Heap deletion request. Heap has accepted these users, so from
// here on nothing gives the commands back (a redelivery would submit them again):
// every write is retried with backoff, the commands kept in progress, until it is
// stored. The request record comes first (so no job can be processing without being
// followed), then the jobs, then the events, then the purge of the waiting entries
// of redelivered commands; the commands are acknowledged last.
func (s *Service) submitted(ctx context.Context, claims []claim, heapID string, users int) {
	now := s.now()
	untilComplete := s.cfg.Behavior == BehaviorUntilComplete
	log := s.log.With().Str("heap_deletion_request_id", heapID).Logger()
	if untilComplete {
		if !s.untilStored(ctx, "record the Heap deletion request", func() error {
			return s.trackRequest(ctx, claims, heapID, users, now)
		}) {
			s.giveBack(itemsOf(claims), nil)
			return
		}
	}
	status, ttl := stateProcessing, time.Duration(0)
	if !untilComplete {
		status, ttl = stateComplete, s.cfg.JobRetention
	}
	for i := range claims {
		j := &claims[i].job
		j.HeapDeletionRequestID = heapID
		j.SubmittedAt = now
		j.record(string(events.StatusSubmitted), now, "")
		if !untilComplete {
			j.CompletedAt = now
		}
		j.record(status, now, "")
	}
	if !s.storeClaims(ctx, claims, ttl, now, events.StatusSubmitted, events.Status(status)) {
		return
	}
	for _, c := range claims {
		if status == stateComplete && !c.job.Deadline.IsZero() && now.After(c.job.Deadline) {
			s.m.completedLate.Inc()
		}
	}
	log.Info().Int("users", users).Int("commands", len(claims)).Msg("submitted to Heap")
}

// finishClaims moves claims to a terminal or held state before Heap has a request
// for them, stores their events and acknowledges them, retrying every write until
// stored.
func (s *Service) finishClaims(ctx context.Context, claims []claim, state string, reason events.Reason, message string) {
	now := s.now()
	ttl := s.cfg.JobRetention
	if state == stateHeld {
		ttl = 0 // held jobs wait for an operator, however long that takes
	}
	for i := range claims {
		j := &claims[i].job
		if state != stateHeld {
			j.CompletedAt = now
		}
		j.Reason, j.Message = string(reason), message
		j.record(state, now, string(reason))
	}
	var statuses []events.Status
	if state == stateFailed {
		statuses = append(statuses, events.StatusFailed)
	}
	if !s.storeClaims(ctx, claims, ttl, now, statuses...) {
		return
	}
	for _, c := range claims {
		s.log.Warn().Str("request_id", c.job.RequestID).Str("status", state).Str("reason", string(reason)).Str("detail", message).Msg("deletion " + state)
	}
}

// hold keeps commands that Heap may have accepted (it answered 2xx without a
// deletion request id) out of every automatic retry: their jobs go to state held,
// with what Heap sent (redacted) in the log, and the commands are acknowledged. An
// operator decides (docs/runbook.md#heapdeljobsstuck).
func (s *Service) hold(ctx context.Context, claims []claim, err error) {
	s.log.Error().Err(err).Int("commands", len(claims)).
		Msg("Heap answered 2xx to a deletion request without a deletion request id: Heap may have accepted these users, so heapdel holds them and never resubmits them on its own; ask Heap support whether a deletion request was created at this time, then see the runbook (HeapdelJobsStuck)")
	s.finishClaims(ctx, claims, stateHeld, reasonHeapUnreadable, "Heap answered 2xx without a deletion request id; held for an operator (details in heapdel's log)")
}

// storeClaims publishes each claim's events of the given statuses (at at), then
// writes the claims' jobs (compare-and-set on the claimed revision), then
// acknowledges the commands, retrying every failure with backoff until it is stored.
// The events go in waves, one status at a time, each stored before the next is
// sent, so a retried publish (a leader change in a cluster) can never put a later
// status ahead of an earlier one; and they go before the jobs, so that no later
// event of a job (complete, found by a recheck as soon as the job reads processing)
// can reach subscribers before them. A job that another writer
// moved on meanwhile (a redelivery raced us) has the events of its stored state
// published again: ids are deterministic, so subscribers see each once. It returns
// false when ctx ended first: the commands are then given back.
func (s *Service) storeClaims(ctx context.Context, claims []claim, ttl time.Duration, at time.Time, statuses ...events.Status) bool {
	ok := true
	for _, st := range statuses {
		ok = ok && s.untilStored(ctx, "publish the status events", func() error {
			var pubs publishes
			for i := range claims {
				pubs.add(s, claims[i].job.event(st, at))
			}
			return pubs.await(ctx, s)
		})
	}
	todo := make([]*claim, len(claims))
	for i := range claims {
		todo[i] = &claims[i]
	}
	var moved []string // request ids another writer moved on
	ok = ok && s.untilStored(ctx, "record the jobs", func() error {
		var failed storeFailures
		var left []*claim
		type write struct {
			c *claim
			f jetstream.PubAckFuture
		}
		writes := newWindow(len(todo), func(w write) {
			_, err := awaitAck(ctx, w.f)
			switch {
			case err == nil:
			case isConflict(err):
				moved = append(moved, w.c.job.RequestID)
			default:
				failed.add(w.c.job.RequestID, err)
				left = append(left, w.c)
			}
		})
		for _, c := range todo {
			val, _ := json.Marshal(&c.job)
			f, err := s.putAsync(s.cfg.JobBucket, JobKey(c.job.RequestID), val, c.rev, ttl)
			if err != nil {
				failed.add(c.job.RequestID, err)
				left = append(left, c)
				continue
			}
			writes.add(write{c, f})
		}
		writes.drain()
		todo = left
		if failed.n > 0 {
			return fmt.Errorf("%d job writes failed, first %s: %w", failed.n, failed.reqID, failed.first)
		}
		return nil
	})
	ok = ok && (len(moved) == 0 || s.untilStored(ctx, "publish the events of jobs moved on elsewhere", func() error {
		var pubs publishes
		for _, id := range moved {
			if err := s.requeueStored(ctx, &pubs, id); err != nil {
				pubs.err = errors.Join(pubs.err, err)
			}
		}
		return pubs.await(ctx, s)
	}))
	if !ok {
		s.giveBack(itemsOf(claims), nil)
		return false
	}
	var waited []string
	for _, c := range claims {
		if c.it.mayWait() {
			waited = append(waited, c.job.RequestID)
		}
	}
	if len(waited) > 0 {
		s.purgeWaiting(ctx, waited)
	}
	for _, c := range claims {
		_ = c.it.msg.Ack()
	}
	return true
}

// untilStored runs op until it succeeds, waiting longer after each failure (up to
// 30 s), and reports the job store as stalled meanwhile. The batch's commands stay
// in progress (the batcher keeps them alive). It returns false only when ctx ends.
// A failed status-event await keeps what it could not store: await is called again.
func (s *Service) untilStored(ctx context.Context, what string, op func() error) bool {
	err := retryBackoff(ctx, 100*time.Millisecond, 30*time.Second,
		func() (bool, error) { return false, op() },
		func(try int, err error, _ time.Duration) {
			s.stalled(causeStore, err)
			s.m.storeRetries.Inc()
			if try == 1 || try%10 == 0 {
				s.log.Warn().Err(err).Int("try", try).
					Msg("could not " + what + " after Heap accepted the users; retrying, never resubmitting (is a bucket or stream full, or a NATS leader being elected? see the runbook: HeapdelStalled)")
			}
		})
	if err != nil {
		return false
	}
	s.stalled(causeStore, nil)
	return true
}

// requeueStored re-reads a job that another writer changed and queues the events of
// the transitions it has reached.
func (s *Service) requeueStored(ctx context.Context, pubs *publishes, requestID string) error {
	job, _, found, err := s.getJob(ctx, requestID)
	if err != nil {
		return err
	}
	if found {
		s.requeueEvents(pubs, &job)
	}
	return nil
}

// giveBack returns commands to JetStream for this or another replica: at once when
// delay is nil (shutting down), otherwise after delay(it). It is the only way a
// command goes back.
func (s *Service) giveBack(items []item, delay func(item) time.Duration) {
	if s.batcher != nil {
		s.batcher.settled(items) // its redelivery is welcome from now on
	}
	for _, it := range items {
		if delay == nil {
			_ = it.msg.Nak()
		} else {
			_ = it.msg.NakWithDelay(delay(it))
		}
	}
}

// storeDelay is how long a command waits after the job store failed before Heap was
// involved: it grows with each delivery, so a store that refuses writes is not
// hammered.
func (s *Service) storeDelay(it item) time.Duration {
	return backoff(it.delivered, s.cfg.RetryDelay, 30*time.Second)
}

// waitForHeap gives commands back after a delay that grows with each delivery and is
// never shorter than atLeast (Heap's Retry-After, which the client caps). Those with
// a deadline are first recorded as waiting for Heap, for the deadline gauges.
func (s *Service) waitForHeap(ctx context.Context, claims []claim, base, ceiling, atLeast time.Duration) {
	delays := make([]time.Duration, len(claims))
	for i, c := range claims {
		delays[i] = max(backoff(c.it.delivered, base, ceiling), atLeast)
	}
	s.markWaiting(ctx, claims, delays)
	if s.batcher != nil {
		s.batcher.settled(itemsOf(claims))
	}
	for i, c := range claims {
		_ = c.it.msg.NakWithDelay(delays[i])
	}
}

// backoff is base·2^(n-1) capped at ceiling, ±10% jitter.
func backoff(delivered uint64, base, ceiling time.Duration) time.Duration {
	d := base
	for i := uint64(1); i < delivered && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return jitter(d)
}

func itemsOf(claims []claim) []item {
	out := make([]item, len(claims))
	for i, c := range claims {
		out[i] = c.it
	}
	return out
}

// jitter spreads d by ±10%, so that commands given back together do not all come
// back at the same moment.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
}
