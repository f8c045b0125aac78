package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A command that carries a deadline and waits for Heap (Heap down, rate limiting,
// rejecting heapdel's credentials) has a job in state accepted and is nak'd again and
// again; Heap has no request for it, so the pending index alone would not see it.
// Each failed submission therefore writes a waiting entry for it into the request
// bucket, "w/<request key>" → its deadline, and the deadline gauges of every replica
// count it from their index. The entry is purged when the command is submitted or
// fails for good. Commands without a deadline, and the first delivery that Heap
// accepts, never touch it.
//
// '/' is never in a JobKey, so a waiting key can never be a Heap request's key, and
// it is one token, so the index's watch of "*" sees it (and not the members records).
// The value is the deadline in Unix seconds as a bare decimal number, never the
// identity or user id; not being a JSON object, it is also skipped, not taken for a
// Heap request, by a replica of an earlier version during a rolling upgrade.
const waitingPrefix = "w/"

// waitingTTL is the shortest life of a waiting entry. Every failed submission writes
// the entry again, so it lives on while its command keeps failing; the TTL only
// removes an entry that nobody purged (a crash between submission and purge).
const waitingTTL = time.Hour

// markerTTL is how long purge markers stay in the request bucket (the bucket's
// LimitMarkerTTL).
const markerTTL = time.Hour

func waitingKey(requestID string) string { return waitingPrefix + JobKey(requestID) }

func isWaitingKey(key string) bool { return strings.HasPrefix(key, waitingPrefix) }

// mayWait says whether a command can have a waiting entry: it has a deadline and
// was delivered before. Entries are written only when a submission fails, and the
// command then comes back as a redelivery, so a first delivery never has one.
func (it item) mayWait() bool { return it.delivered > 1 && !it.cmd.Deadline.IsZero() }

// markWaiting writes the waiting entry of every claim with a deadline, before its
// command is nak'd with delays[i]: the entry outlives a few such delays, and at least
// waitingTTL. It waits for the writes, so that a later purge (by whichever replica
// gets the redelivery) comes after them. A write that fails is logged; the command is
// nak'd all the same and its next failure writes the entry again.
func (s *Service) markWaiting(ctx context.Context, claims []claim, delays []time.Duration) {
	var errs error
	n := 0
	writes := newWindow(len(claims), func(f jetstream.PubAckFuture) {
		if _, err := awaitAck(ctx, f); err != nil {
			errs = errors.Join(errs, err)
		}
	})
	for i, c := range claims {
		if c.job.Deadline.IsZero() {
			continue
		}
		n++
		v := strconv.AppendInt(nil, c.job.Deadline.Unix(), 10)
		f, err := s.writeRequestBucket(waitingKey(c.job.RequestID), v, false, max(waitingTTL, 3*delays[i]))
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		writes.add(f)
	}
	writes.drain()
	if errs != nil {
		s.log.Warn().Err(errs).Int("commands", n).Msg("recording commands waiting for Heap; the deadline gauges may miss them until their next try")
	}
}

// purgeWaiting purges the waiting entries of requestIDs once their commands are
// settled. A purge that fails is only logged: the entry feeds the deadline gauges
// alone, and its TTL removes it; holding the command back instead would have it
// redelivered and purged again in a loop for as long as the bucket refuses writes.
func (s *Service) purgeWaiting(ctx context.Context, requestIDs []string) {
	var first error
	failed := 0
	fail := func(id string, err error) {
		if first == nil {
			first = fmt.Errorf("purge waiting entry of %s: %w", id, err)
		}
		failed++
	}
	type purge struct {
		id string
		f  jetstream.PubAckFuture
	}
	writes := newWindow(len(requestIDs), func(p purge) {
		if _, err := awaitAck(ctx, p.f); err != nil {
			fail(p.id, err)
		}
	})
	for _, id := range requestIDs {
		f, err := s.writeRequestBucket(waitingKey(id), nil, true, markerTTL)
		if err != nil {
			fail(id, err)
			continue
		}
		writes.add(purge{id, f})
	}
	writes.drain()
	if first != nil {
		s.log.Warn().Err(first).Int("commands", failed).
			Msg("waiting entries not purged: the deadline gauges count them until they expire")
	}
}

// writeRequestBucket puts value under key in the request bucket, or purges key, with
// no revision check; the message expires after ttl.
func (s *Service) writeRequestBucket(key string, value []byte, purge bool, ttl time.Duration) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg("$KV." + s.cfg.RequestBucket + "." + key)
	m.Data = value
	if purge {
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	f, err := s.js.PublishMsgAsync(m, jetstream.WithMsgTTL(ttl))
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", s.cfg.RequestBucket, err)
	}
	return f, nil
}

// waitedIDs returns the request ids of the claims that may have a waiting entry.
func waitedIDs(claims []claim) []string {
	var ids []string
	for _, c := range claims {
		if c.it.mayWait() {
			ids = append(ids, c.job.RequestID)
		}
	}
	return ids
}
