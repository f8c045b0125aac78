package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient"
)

// pendingIndex mirrors the request bucket in memory, kept current by a watch, so a
// tick finds what is due without reading every pending request from JetStream.
// Every replica holds one; only the replica that receives a tick acts on it.
// Waiting entries (commands waiting for Heap, see waiting.go) are kept apart: they
// count in the deadline gauges only, never as Heap requests.
type pendingIndex struct {
	mu      sync.Mutex
	entries map[string]indexEntry // Heap requests, by key
	waiting map[string]waitEntry  // commands waiting for Heap, by key
}

type indexEntry struct {
	req HeapRequest
	rev uint64
}

type waitEntry struct {
	deadline int64 // Unix seconds
	rev      uint64
}

func newPendingIndex() *pendingIndex {
	return &pendingIndex{entries: make(map[string]indexEntry), waiting: make(map[string]waitEntry)}
}

func (x *pendingIndex) put(key string, e indexEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.entries[key]; ok && old.rev > e.rev {
		return
	}
	x.entries[key] = e
}

func (x *pendingIndex) putWaiting(key string, w waitEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.waiting[key]; ok && old.rev > w.rev {
		return
	}
	x.waiting[key] = w
}

func (x *pendingIndex) replace(entries map[string]indexEntry, waiting map[string]waitEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.entries, x.waiting = entries, waiting
}

func (x *pendingIndex) remove(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.entries, key)
	delete(x.waiting, key)
}

// due returns the requests whose next check is at or before now, oldest first.
func (x *pendingIndex) due(now time.Time) []indexEntry {
	x.mu.Lock()
	var out []indexEntry
	for _, e := range x.entries {
		if !e.req.NextCheckAt.After(now) {
			out = append(out, e)
		}
	}
	x.mu.Unlock()
	slices.SortFunc(out, func(a, b indexEntry) int { return a.req.NextCheckAt.Compare(b.req.NextCheckAt) })
	return out
}

// pendingStats is the number of users pending and the oldest submission time.
func (x *pendingIndex) pendingStats() (users int, oldest time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.entries {
		users += e.req.Users
		if oldest.IsZero() || e.req.SubmittedAt.Before(oldest) {
			oldest = e.req.SubmittedAt
		}
	}
	return users, oldest
}

// deadlineStats counts the deletions not yet complete (pending in Heap, or waiting
// for Heap) past their deadline, and due within 24 h and within 7 days of now. A
// waiting entry that a Heap request already covers (its purge is on the way) counts
// once, in the Heap request.
func (x *pendingIndex) deadlineStats(now time.Time) (breached, due24h, due7d int) {
	n := now.Unix()
	day, week := n+86400, n+7*86400
	count := func(d int64) {
		switch {
		case d < n:
			breached++
		case d < day:
			due24h++
			due7d++
		case d < week:
			due7d++
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	var covered map[string]bool
	for _, e := range x.entries {
		for _, d := range e.req.Deadlines {
			count(d)
		}
		if len(e.req.Waited) > 0 && len(x.waiting) > 0 {
			if covered == nil {
				covered = map[string]bool{}
			}
			for _, id := range e.req.Waited {
				covered[waitingKey(id)] = true
			}
		}
	}
	for k, w := range x.waiting {
		if !covered[k] {
			count(w.deadline)
		}
	}
	return breached, due24h, due7d
}

func (x *pendingIndex) has(key string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.entries[key]
	return ok
}

func (x *pendingIndex) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.entries)
}

// DueCount returns how many followed Heap requests are due for a check at now, as
// this replica's index sees them (for `heapdel bench` and diagnostics).
func (s *Service) DueCount(now time.Time) int { return len(s.index.due(now)) }

// startIndex loads the pending Heap requests and keeps following changes. If the
// watch ends (NATS trouble), it is started again and the index rebuilt from it.
func (s *Service) startIndex(ctx, runCtx context.Context) error {
	loaded := make(chan struct{})
	var once sync.Once
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for runCtx.Err() == nil {
			err := s.watchIndex(runCtx, func() { once.Do(func() { close(loaded) }) })
			if runCtx.Err() != nil {
				return
			}
			s.indexBroken.Store(true)
			s.log.Error().Err(err).Msg("watch of pending Heap requests ended; restarting it")
			select {
			case <-runCtx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("loading pending Heap requests from %s: %w", s.cfg.RequestBucket, ctx.Err())
	}
}

// watchIndex runs one watch: it builds a fresh index from the bucket's current
// content, swaps it in, calls loaded, then applies changes until the watch ends.
func (s *Service) watchIndex(ctx context.Context, loaded func()) error {
	w, err := s.requests.Watch(ctx, "*")
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.cfg.RequestBucket, err)
	}
	defer stopWatch(w)
	fresh, freshWaiting := map[string]indexEntry{}, map[string]waitEntry{}
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			switch {
			case e == nil:
				if initial {
					initial = false
					s.index.replace(fresh, freshWaiting)
					s.m.pendingRequests.Set(float64(s.index.len()))
					s.indexBroken.Store(false)
					loaded()
				}
			case initial && isWaitingKey(e.Key()):
				if d, ok := s.decodeWaiting(e); ok {
					freshWaiting[e.Key()] = waitEntry{deadline: d, rev: e.Revision()}
				}
			case initial:
				if r, ok := s.decodeRequest(e); ok {
					fresh[e.Key()] = indexEntry{req: r, rev: e.Revision()}
				}
			default:
				s.applyIndex(e)
			}
		}
	}
}

func (s *Service) decodeRequest(e jetstream.KeyValueEntry) (HeapRequest, bool) {
	if e.Operation() != jetstream.KeyValuePut {
		return HeapRequest{}, false
	}
	var r HeapRequest
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		s.log.Warn().Err(err).Str("key", e.Key()).Msg("unreadable Heap request record skipped")
		return HeapRequest{}, false
	}
	return r, true
}

func (s *Service) decodeWaiting(e jetstream.KeyValueEntry) (deadline int64, ok bool) {
	if e.Operation() != jetstream.KeyValuePut {
		return 0, false
	}
	d, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		s.log.Warn().Err(err).Str("key", e.Key()).Msg("unreadable waiting record skipped")
		return 0, false
	}
	return d, true
}

func (s *Service) applyIndex(e jetstream.KeyValueEntry) {
	if isWaitingKey(e.Key()) {
		if d, ok := s.decodeWaiting(e); ok {
			s.index.putWaiting(e.Key(), waitEntry{deadline: d, rev: e.Revision()})
		} else {
			s.index.remove(e.Key())
		}
		return
	}
	if r, ok := s.decodeRequest(e); ok {
		s.index.put(e.Key(), indexEntry{req: r, rev: e.Revision()})
	} else {
		s.index.remove(e.Key())
	}
	s.m.pendingRequests.Set(float64(s.index.len()))
}

// trackRequest stores a new Heap request and its members, members first.
func (s *Service) trackRequest(ctx context.Context, claims []claim, heapID string, users int, now time.Time) error {
	members := make([]Member, len(claims))
	var deadlines []int64
	for i, c := range claims {
		members[i] = Member{RequestID: c.job.RequestID, Attempt: c.job.Attempt}
		if !c.job.Deadline.IsZero() {
			deadlines = append(deadlines, c.job.Deadline.Unix())
		}
	}
	waited := waitedIDs(claims)
	mv, err := json.Marshal(members)
	if err != nil {
		return err
	}
	if _, err := s.requests.Put(ctx, membersKey(heapID), mv); err != nil {
		return fmt.Errorf("store members: %w", err)
	}
	r := HeapRequest{ID: heapID, SubmittedAt: now, NextCheckAt: now.Add(s.firstCheck()), Users: users, Deadlines: deadlines, Waited: waited}
	rv, _ := json.Marshal(r)
	rev, err := s.requests.Put(ctx, requestKey(heapID), rv)
	if err != nil {
		return fmt.Errorf("store Heap request: %w", err)
	}
	s.index.put(requestKey(heapID), indexEntry{req: r, rev: rev})
	return nil
}

// firstCheck comes soon after submission: at the next tick.
func (s *Service) firstCheck() time.Duration { return s.cfg.RecheckInterval / 2 }

// nextGap doubles with every check, from the recheck interval up to PollMaxInterval.
func (s *Service) nextGap(checks int) time.Duration {
	gap := s.cfg.RecheckInterval
	for i := 1; i < checks && gap < s.cfg.PollMaxInterval; i++ {
		gap *= 2
	}
	return min(gap, s.cfg.PollMaxInterval)
}

// onTick handles one recheck tick: one status call per due Heap request, never per
// user. It stops at the tick's budget (one interval) so ticks never pile up; what is
// left is still due at the next tick. The tick is kept alive for as long as this
// replica works on it (finishing requests, reconciling), so it never goes to a
// second replica meanwhile.
func (s *Service) onTick(msg jetstream.Msg) {
	s.m.ticks.Inc()
	began := time.Now()
	defer func() { s.m.tickDuration.Observe(time.Since(began).Seconds()) }()
	alive := make(chan struct{})
	defer close(alive)
	go func() {
		t := time.NewTicker(tickKeepAlive)
		defer t.Stop()
		for {
			select {
			case <-alive:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	ctx, cancel := context.WithTimeout(s.runCtx, s.cfg.RecheckInterval)
	defer cancel()
	for _, e := range s.index.due(s.now()) {
		if ctx.Err() != nil || !s.started.Load() || !s.check(ctx, e) {
			break
		}
	}
	s.maybeReconcile()
	_ = msg.Ack()
}

// check asks Heap about one request and acts on Heap's answer, and only on an
// answer: a status is published only when Heap said complete, said pending after
// MaxPending (timeout), or twice said it does not know the request (not found). It
// returns false when Heap cannot be reached, refuses heapdel itself, or the tick
// (or the rate limiter) runs out of time, so the tick stops; any other trouble with
// one request postpones that request alone.
func (s *Service) check(ctx context.Context, e indexEntry) bool {
	r := e.req
	st, err := s.heap.Status(ctx, r.ID)
	now := s.now()
	log := s.log.With().Str("heap_deletion_request_id", r.ID).Logger()
	switch {
	case err == nil && st == heapclient.StatusComplete:
		s.setCredsRejected(false)
		s.m.rechecks.WithLabelValues("complete").Inc()
		if err := s.finish(e, events.StatusComplete, "", ""); err != nil {
			log.Warn().Err(err).Msg("recording completion; tried again later")
			s.postpone(ctx, e, now, s.nextGap(1))
		}
	case err == nil && now.Sub(r.SubmittedAt) > s.cfg.MaxPending:
		s.setCredsRejected(false)
		s.m.rechecks.WithLabelValues("timeout").Inc()
		msg := fmt.Sprintf("Heap still reported pending after %s (HEAPDEL_MAX_PENDING)", s.cfg.MaxPending)
		if err := s.finish(e, events.StatusFailed, events.ReasonTimeout, msg); err != nil {
			log.Warn().Err(err).Msg("recording timeout; tried again later")
			s.postpone(ctx, e, now, s.nextGap(1))
		}
	case err == nil:
		s.setCredsRejected(false)
		s.m.rechecks.WithLabelValues("pending").Inc()
		e.req.NotFoundAt = time.Time{}
		s.postpone(ctx, e, now, s.nextGap(r.Checks+1))
	case errors.Is(err, heapclient.ErrNotFound) && !r.NotFoundAt.IsZero() && now.Sub(r.NotFoundAt) >= s.cfg.RecheckInterval:
		s.m.rechecks.WithLabelValues("not_found").Inc()
		msg := "Heap answered 404, twice, for a deletion request it had accepted"
		if err := s.finish(e, events.StatusFailed, events.ReasonHeapNotFound, msg); err != nil {
			log.Warn().Err(err).Msg("recording not-found; tried again later")
			s.postpone(ctx, e, now, s.nextGap(1))
		}
	case errors.Is(err, heapclient.ErrNotFound):
		// One 404 is not a verdict (a replica of Heap's that lags, a routing
		// hiccup): ask again one interval later.
		s.m.rechecks.WithLabelValues("not_found").Inc()
		log.Warn().Msg("Heap answered 404 for a deletion request it had accepted; asking again after one recheck interval before calling it not found")
		if r.NotFoundAt.IsZero() {
			e.req.NotFoundAt = now
		}
		s.postpone(ctx, e, now, s.cfg.RecheckInterval)
	case errors.Is(err, heapclient.ErrUnauthorized), errors.Is(err, heapclient.ErrMisconfigured):
		s.m.rechecks.WithLabelValues("error").Inc()
		s.m.credsRejected.Inc()
		s.setCredsRejected(true)
		log.Error().Err(err).Msg("Heap refused heapdel itself: check HEAPDEL_HEAP_APP_ID, HEAPDEL_HEAP_API_KEY, HEAPDEL_HEAP_BASE_URL and any proxy; rechecks resume when fixed")
		return false
	case errors.Is(err, heapclient.ErrRetryable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), ctx.Err() != nil:
		// Heap busy or down, or this tick (or the rate limiter) out of time:
		// nothing was learnt about the request. The rest waits for the next tick.
		s.m.rechecks.WithLabelValues("error").Inc()
		log.Warn().Err(err).Msg("Heap status check not done; the due requests are checked at the next tick")
		return false
	default:
		// An answer about this request alone that makes no sense: not a verdict.
		s.m.rechecks.WithLabelValues("error").Inc()
		log.Warn().Err(err).Msg("unexpected answer from Heap about this deletion request; checked again later")
		s.postpone(ctx, e, now, s.nextGap(r.Checks+1))
	}
	return true
}

// postpone schedules the request's next check gap after now.
func (s *Service) postpone(ctx context.Context, e indexEntry, now time.Time, gap time.Duration) {
	r := e.req
	r.Checks++
	r.NextCheckAt = now.Add(gap)
	v, _ := json.Marshal(r)
	key := requestKey(r.ID)
	rev, err := s.requests.Update(ctx, key, v, e.rev)
	if err != nil {
		// Changed by another replica, or our index lags: refresh from the store so
		// the next tick does not ask Heap again before it is due.
		s.log.Debug().Err(err).Str("heap_deletion_request_id", r.ID).Msg("Heap request changed elsewhere; index refreshed")
		if cur, gerr := s.requests.Get(ctx, key); gerr == nil {
			s.applyIndex(cur)
		} else if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrKeyDeleted) {
			s.index.remove(key)
		}
		return
	}
	s.index.put(key, indexEntry{req: r, rev: rev})
}

// finish moves every job of a Heap request to its terminal status, publishes the
// events and then forgets the request. Jobs that moved on (a retry with another
// attempt or Heap request) are left alone. Run again after a crash, it re-publishes
// the same events (same ids) and finishes.
func (s *Service) finish(e indexEntry, status events.Status, reason events.Reason, message string) error {
	// Its own budget, not what is left of the tick's: a half-done finish costs a
	// second Heap call and a second round of events.
	ctx, cancel := context.WithTimeout(s.runCtx, 2*time.Minute)
	defer cancel()
	r := e.req
	me, err := s.requests.Get(ctx, membersKey(r.ID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		// Finished before, up to the purge of the request itself.
		return s.forget(ctx, r.ID, false)
	}
	if err != nil {
		return fmt.Errorf("read members: %w", err)
	}
	var members []Member
	if err := json.Unmarshal(me.Value(), &members); err != nil {
		return fmt.Errorf("decode members: %w", err)
	}
	now := s.now()
	var pubs publishes
	type write struct {
		job Job
		f   jetstream.PubAckFuture
	}
	var writes []write
	for _, m := range members {
		job, rev, found, err := s.getJob(ctx, m.RequestID)
		if err != nil {
			return err
		}
		if found && job.Attempt == m.Attempt && job.Status == stateAccepted {
			// Heap answered before this job's submission was recorded: come back.
			return fmt.Errorf("job %s not yet recorded as submitted", job.RequestID)
		}
		if !found {
			// The job store lost this job (bucket recreated, key deleted by hand):
			// nothing can be published for it. Say so instead of forgetting quietly.
			s.m.reconciled.WithLabelValues(repairMissingJob).Inc()
			s.log.Error().Str("request_id", m.RequestID).Str("heap_deletion_request_id", r.ID).Str("status", string(status)).
				Msg("a member of a finished Heap deletion request has no job record: no status event can be published for it; have upstream re-send it if it must be tracked (runbook: HeapdelReconcilerRepaired)")
			continue
		}
		if job.Attempt != m.Attempt || job.HeapDeletionRequestID != r.ID {
			continue
		}
		if job.Status != stateProcessing {
			if job.terminal() { // finished by an earlier try: its last event again
				last := job.History[len(job.History)-1]
				pubs.add(s, job.event(events.Status(last.Status), last.At))
			}
			continue
		}
		job.CompletedAt = now
		job.Reason, job.Message = string(reason), message
		job.record(string(status), now, string(reason))
		v, _ := json.Marshal(&job)
		f, err := s.putAsync(s.cfg.JobBucket, JobKey(job.RequestID), v, rev, s.cfg.JobRetention)
		if err != nil {
			return err
		}
		writes = append(writes, write{job, f})
	}
	var werr error
	for _, w := range writes {
		if _, err := awaitAck(ctx, w.f); err != nil {
			werr = errors.Join(werr, fmt.Errorf("update job %s: %w", w.job.RequestID, err))
			continue
		}
		pubs.add(s, w.job.event(status, now))
		if status == events.StatusComplete {
			s.m.duration.Observe(now.Sub(w.job.SubmittedAt).Seconds())
			if !w.job.Deadline.IsZero() && now.After(w.job.Deadline) {
				s.m.completedLate.Inc()
			}
		}
		s.log.Info().Str("request_id", w.job.RequestID).Str("heap_deletion_request_id", r.ID).
			Str("status", string(status)).Str("reason", string(reason)).Msg("deletion " + string(status))
	}
	if werr != nil {
		_ = pubs.await(ctx, s)
		return werr
	}
	if err := pubs.await(ctx, s); err != nil {
		return err
	}
	return s.forget(ctx, r.ID, true)
}

// forget removes a finished Heap request: the request first, so that a crash in
// between leaves at worst an orphaned members record, never a request that cannot
// finish.
func (s *Service) forget(ctx context.Context, heapID string, members bool) error {
	if err := s.requests.Purge(ctx, requestKey(heapID), jetstream.PurgeTTL(time.Hour)); err != nil {
		return fmt.Errorf("forget Heap request: %w", err)
	}
	s.index.remove(requestKey(heapID))
	s.m.pendingRequests.Set(float64(s.index.len()))
	if members {
		if err := s.requests.Purge(ctx, membersKey(heapID), jetstream.PurgeTTL(time.Hour)); err != nil {
			return fmt.Errorf("forget members: %w", err)
		}
	}
	return nil
}

// serverSchedules says whether ticks come from a JetStream message schedule.
func (s *Service) serverSchedules() bool {
	switch s.cfg.Schedule {
	case ScheduleServer:
		return true
	case ScheduleFallback:
		return false
	}
	return SupportsSchedules(s.nc.ConnectedServerVersion())
}

// SupportsSchedules says whether a nats-server version has JetStream message
// schedules (2.14 and later); older servers get the replica-published fallback tick.
func SupportsSchedules(version string) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return major > 2 || major == 2 && minor >= 14
}

// SchedulePattern is the Nats-Schedule header of the recheck schedule for an interval.
func SchedulePattern(interval time.Duration) string { return "@every " + interval.String() }

// startSchedule makes sure recheck ticks are produced: by a JetStream message
// schedule on servers that have them, else by this replica's own timer.
func (s *Service) startSchedule(ctx, runCtx context.Context) error {
	if s.serverSchedules() {
		s.scheduleMode = ScheduleServer
		if !s.cfg.Provision {
			s.verifySchedule(ctx)
			return nil
		}
		return s.ensureSchedule(ctx)
	}
	s.scheduleMode = ScheduleFallback
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.fallbackTicks(runCtx) }()
	return nil
}

// verifySchedule warns, with provisioning off, when the recheck schedule is missing or
// differs from HEAPDEL_RECHECK_INTERVAL: without it deletions are submitted but never
// followed to complete.
func (s *Service) verifySchedule(ctx context.Context) {
	want := SchedulePattern(s.cfg.RecheckInterval)
	stream, err := s.js.Stream(ctx, s.cfg.ScheduleStream)
	if err != nil {
		return
	}
	last, err := stream.GetLastMsgForSubject(ctx, s.cfg.scheduleSubject())
	switch {
	case err != nil:
		s.log.Error().Err(err).Str("subject", s.cfg.scheduleSubject()).
			Msg("recheck schedule not found and provisioning is off: pending deletions will not be rechecked; run heapdel once with HEAPDEL_PROVISION=true, or publish the schedule (docs/operations.md)")
	case last.Header.Get("Nats-Schedule") != want || last.Header.Get("Nats-Schedule-Target") != s.cfg.recheckSubject():
		s.log.Warn().Str("schedule", last.Header.Get("Nats-Schedule")).Str("want", want).
			Msg("recheck schedule differs from HEAPDEL_RECHECK_INTERVAL and provisioning is off: the existing schedule stays")
	}
}

// watchSchedule makes sure the recheck schedule is still there (an operator may
// purge the schedule stream): it publishes it again when provisioning is on, and
// reports the schedule stall otherwise, until it is back.
func (s *Service) watchSchedule(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := s.js.Stream(cctx, s.cfg.ScheduleStream)
	if err == nil {
		_, err = stream.GetLastMsgForSubject(cctx, s.cfg.scheduleSubject())
	}
	switch {
	case err == nil:
		s.stalled(causeSchedule, nil)
	case !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound):
		// NATS trouble: the connection and store signals say so.
	case s.cfg.Provision:
		s.log.Warn().Str("stream", s.cfg.ScheduleStream).Msg("recheck schedule was missing; publishing it again")
		if perr := s.reprovision(ctx); perr != nil {
			s.stalled(causeSchedule, perr)
		}
	default:
		s.stalled(causeSchedule, fmt.Errorf("no schedule on %s in stream %s and provisioning is off: pending deletions are not rechecked; run heapdel once with HEAPDEL_PROVISION=true or publish the schedule (docs/operations.md)", s.cfg.scheduleSubject(), s.cfg.ScheduleStream))
	}
}

// reprovision creates again whatever an operator deleted under a running service
// (a stream, its consumer, the recheck schedule): the same provisioning as at
// start, then the schedule.
func (s *Service) reprovision(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := s.provisionOnce(ctx); err != nil {
		return err
	}
	if s.scheduleMode == ScheduleServer {
		return s.ensureSchedule(ctx)
	}
	return nil
}

// ensureSchedule publishes the repeating schedule unless the same one is in place;
// a changed interval replaces the old schedule (roll-up on the schedule subject).
func (s *Service) ensureSchedule(ctx context.Context) error {
	pattern := SchedulePattern(s.cfg.RecheckInterval)
	stream, err := s.js.Stream(ctx, s.cfg.ScheduleStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.cfg.ScheduleStream, err)
	}
	if last, err := stream.GetLastMsgForSubject(ctx, s.cfg.scheduleSubject()); err == nil {
		if last.Header.Get("Nats-Schedule") == pattern && last.Header.Get("Nats-Schedule-Target") == s.cfg.recheckSubject() {
			return nil
		}
	}
	m := nats.NewMsg(s.cfg.scheduleSubject())
	m.Header.Set("Nats-Schedule", pattern)
	m.Header.Set("Nats-Schedule-Target", s.cfg.recheckSubject())
	m.Header.Set("Nats-Schedule-Rollup", "sub") // ticks never pile up behind a slow one
	m.Header.Set("Nats-Rollup", "sub")          // replaces an older schedule
	if _, err := s.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish recheck schedule on %s: %w", s.cfg.scheduleSubject(), err)
	}
	s.log.Info().Str("schedule", pattern).Str("target", s.cfg.recheckSubject()).Msg("recheck schedule set")
	return nil
}

// fallbackTicks publishes one tick per interval window. Every replica does, with the
// same Nats-Msg-Id for the same window, so the stream keeps one tick per window.
func (s *Service) fallbackTicks(ctx context.Context) {
	iv := s.cfg.RecheckInterval
	for {
		now := s.now()
		window := now.Truncate(iv)
		select {
		case <-ctx.Done():
			return
		case <-time.After(window.Add(iv).Sub(now)):
		}
		window = window.Add(iv)
		m := nats.NewMsg(s.cfg.recheckSubject())
		id := "heapdel-recheck-" + strconv.FormatInt(window.UnixNano(), 10)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := s.js.PublishMsg(pctx, m, jetstream.WithMsgID(id)); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Msg("publishing recheck tick")
		}
		cancel()
	}
}
