package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Reconciliation finds jobs that are not terminal and that nothing moves on, and
// repairs them or says so. Two stores hold a deletion's progress: the job store (one
// record per request id) and the request bucket (the Heap requests being followed).
// An operator's purge, a bucket lost or recreated, or a command that vanished from
// its stream can leave them disagreeing:
//
//   - a job processing a Heap request that is no longer followed: nothing would
//     ever recheck it or time it out. It is followed again (refollowed).
//   - a job claimed (accepted) by a command that is no longer in the stream: nobody
//     will submit it. Only its command holds the identity, so it cannot be
//     repaired here: it is counted (heapdel_jobs_stuck{reason="orphaned"}) and
//     logged, and a re-send of its request id takes the claim over.
//   - a job held because Heap's answer could not be read waits for an operator
//     (heapdel_jobs_stuck{reason="held"}).
//
// It is started by the replica that handles a recheck tick, at that replica's
// first tick and then every ReconcileInterval (the time of the last pass is kept
// in the request bucket), in the background so it never holds the tick up. Two
// passes at once (a slow one here, another replica's) do no harm: following a
// request again is a create that only one wins, and the rest only reads.
const reconcileKey = "x.reconcile" // two tokens: the index's watch of "*" never sees it

// maybeReconcile starts a reconciliation in the background when this replica has
// not run one yet or the last one (by any replica) is older than ReconcileInterval,
// and none is running here. It never blocks the tick: a job-store read that hangs
// (a watch caught in a NATS restart) must not stop the rechecks, so a pass is also
// bounded by reconcileTimeout.
func (s *Service) maybeReconcile() {
	if !s.reconciling.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock() // Close stops the service under s.mu before it waits for s.wg
	if !s.started.Load() {
		s.mu.Unlock()
		s.reconciling.Store(false)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.reconciling.Store(false)
		ctx, cancel := context.WithTimeout(s.runCtx, reconcileTimeout)
		defer cancel()
		if s.reconciledOnce.Load() {
			e, err := s.requests.Get(ctx, reconcileKey)
			if err == nil {
				var at time.Time
				if at.UnmarshalText(e.Value()) == nil && s.now().Sub(at) < s.cfg.ReconcileInterval {
					return
				}
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				return
			}
		}
		rep, err := s.Reconcile(ctx)
		if err != nil {
			if s.runCtx.Err() == nil {
				s.log.Warn().Err(err).Msg("reconciliation of jobs and followed Heap requests did not finish; tried again at a later tick")
			}
			return
		}
		s.reconciledOnce.Store(true)
		at, _ := s.now().UTC().MarshalText()
		_, _ = s.requests.Put(ctx, reconcileKey, at)
		ev := s.log.Info()
		if rep.Refollowed+rep.Orphaned+rep.Held > 0 {
			ev = s.log.Warn()
		}
		ev.Int("jobs", rep.Jobs).Int("refollowed", rep.Refollowed).Int("orphaned", rep.Orphaned).Int("held", rep.Held).
			Msg("reconciled the job store with the followed Heap requests")
	}()
}

// reconcileTimeout bounds one reconciliation. Reading 100,000 jobs takes about a
// second and a half (docs/performance.md).
const reconcileTimeout = 5 * time.Minute

// ReconcileReport says what one reconciliation found.
type ReconcileReport struct {
	Jobs       int // job records read
	Refollowed int // processing jobs whose Heap request is followed again
	Orphaned   int // accepted jobs whose command is gone from the stream
	Held       int // held jobs
}

// Reconcile reads every job once and repairs what it can (see the package's
// reconciliation notes in reconcile.go). It returns an error when the job store
// cannot be read; repairs that fail are retried at the next reconciliation.
func (s *Service) Reconcile(ctx context.Context) (ReconcileReport, error) {
	var rep ReconcileReport
	w, err := s.jobs.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return rep, fmt.Errorf("read jobs: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			stopWatch(w)
		}
	}()
	// Only what may need repair is kept, and only its names: the job store may
	// hold hundreds of thousands of jobs.
	unfollowed := map[string][]string{} // Heap request id → request ids of its processing jobs
	type claimRef struct {
		requestID string
		seq       uint64
	}
	var accepted []claimRef
read:
	for {
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return rep, errors.New("job watch closed")
			}
			if e == nil {
				break read
			}
			var j Job
			if json.Unmarshal(e.Value(), &j) != nil {
				continue
			}
			rep.Jobs++
			switch j.Status {
			case stateProcessing:
				if j.HeapDeletionRequestID != "" && !s.index.has(requestKey(j.HeapDeletionRequestID)) {
					unfollowed[j.HeapDeletionRequestID] = append(unfollowed[j.HeapDeletionRequestID], j.RequestID)
				}
			case stateAccepted:
				accepted = append(accepted, claimRef{j.RequestID, j.Seq})
			case stateHeld:
				rep.Held++
			}
		}
	}
	stopWatch(w)
	stopped = true
	for heapID, jobs := range unfollowed {
		ok, err := s.refollow(ctx, heapID, jobs)
		if err != nil {
			s.log.Warn().Err(err).Str("heap_deletion_request_id", heapID).Msg("could not follow a Heap request again; tried at the next reconciliation")
			continue
		}
		if ok {
			rep.Refollowed += len(jobs)
		}
	}
	if len(accepted) > 0 {
		st, err := s.js.Stream(ctx, s.cfg.CommandStream)
		if err != nil {
			return rep, fmt.Errorf("command stream: %w", err)
		}
		for _, j := range accepted {
			if s.orphaned(ctx, st, j.requestID, j.seq) {
				rep.Orphaned++
			}
		}
	}
	s.m.jobsStuck.WithLabelValues(stateHeld).Set(float64(rep.Held))
	s.m.jobsStuck.WithLabelValues("orphaned").Set(float64(rep.Orphaned))
	return rep, nil
}

// refollow follows a Heap request again whose processing jobs the request bucket
// no longer knows. It returns false when the request turned out to be followed (a
// lagging index) or the jobs moved on meanwhile.
func (s *Service) refollow(ctx context.Context, heapID string, requestIDs []string) (bool, error) {
	if _, err := s.requests.Get(ctx, requestKey(heapID)); err == nil {
		return false, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		return false, err
	}
	// Re-read the jobs: one that finished since the scan needs no following.
	var members []Member
	var deadlines []int64
	submitted := time.Time{}
	for _, id := range requestIDs {
		cur, _, found, err := s.getJob(ctx, id)
		if err != nil {
			return false, err
		}
		if !found || cur.Status != stateProcessing || cur.HeapDeletionRequestID != heapID {
			continue
		}
		members = append(members, Member{RequestID: cur.RequestID, Attempt: cur.Attempt})
		if !cur.Deadline.IsZero() {
			deadlines = append(deadlines, cur.Deadline.Unix())
		}
		if submitted.IsZero() || cur.SubmittedAt.Before(submitted) {
			submitted = cur.SubmittedAt
		}
	}
	if len(members) == 0 {
		return false, nil
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.RequestID, b.RequestID) })
	mv, _ := json.Marshal(members)
	// Create, not Put: if the request is followed after all (a lagging read, a
	// second reconciliation), its members record stays as it is.
	if _, err := s.requests.Create(ctx, membersKey(heapID), mv); isConflict(err) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("store members: %w", err)
	}
	r := HeapRequest{ID: heapID, SubmittedAt: submitted, NextCheckAt: s.now(), Users: len(members), Deadlines: deadlines}
	rv, _ := json.Marshal(r)
	rev, err := s.requests.Create(ctx, requestKey(heapID), rv)
	if isConflict(err) {
		return false, nil // followed meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("store Heap request: %w", err)
	}
	s.index.put(requestKey(heapID), indexEntry{req: r, rev: rev})
	s.m.reconciled.WithLabelValues(repairRefollowed).Add(float64(len(members)))
	s.log.Warn().Str("heap_deletion_request_id", heapID).Int("jobs", len(members)).
		Msg("jobs were processing a Heap deletion request that was no longer followed (request bucket lost or purged?): following it again")
	return true, nil
}

// orphaned says whether an accepted job's command is gone from the stream, and
// logs it. A job claimed moments ago is re-read first, so a claim that moved on
// during the scan is not taken for an orphan.
func (s *Service) orphaned(ctx context.Context, st jetstream.Stream, requestID string, seq uint64) bool {
	exists, err := s.commandExists(ctx, st, seq, requestID)
	if err != nil || exists {
		return false
	}
	cur, _, found, err := s.getJob(ctx, requestID)
	if err != nil || !found || cur.Status != stateAccepted || cur.Seq != seq {
		return false
	}
	s.log.Error().Str("request_id", requestID).Uint64("command_seq", seq).
		Msg("a job was claimed by a command that is no longer in the stream (purged, or the stream recreated): it will not be submitted until upstream re-sends this request id (runbook: HeapdelJobsStuck)")
	return true
}
