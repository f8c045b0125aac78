package consumer

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
)

// Job states kept in the job store. "accepted" means claimed by a command and not yet
// accepted by Heap; the others are the status events' names.
const (
	stateAccepted   = "accepted"
	stateProcessing = string(events.StatusProcessing)
	stateComplete   = string(events.StatusComplete)
	stateFailed     = string(events.StatusFailed)
	// stateHeld: Heap answered 2xx without a deletion request id, so it may have
	// accepted the users; the job waits for an operator and is never resubmitted
	// on heapdel's own. It publishes no event.
	stateHeld = "held"
)

// reasonHeapUnreadable is the note of a held job. It is never a status event's
// reason: held jobs publish nothing.
const reasonHeapUnreadable events.Reason = "heap_answer_unreadable"

// Job is one request id's state in the job store. It never holds the identity or the
// user id: only a keyed hash of it.
type Job struct {
	RequestID             string       `json:"request_id"`
	Attempt               int          `json:"attempt"`
	Status                string       `json:"status"`
	Seq                   uint64       `json:"command_seq"`
	IdentityHash          string       `json:"identity_hash"`
	HeapDeletionRequestID string       `json:"heap_deletion_request_id,omitempty"`
	RequestedAt           time.Time    `json:"requested_at"`
	SubmittedAt           time.Time    `json:"submitted_at,omitzero"`
	CompletedAt           time.Time    `json:"completed_at,omitzero"`
	Deadline              time.Time    `json:"deadline,omitzero"`
	Reason                string       `json:"reason,omitempty"`
	Message               string       `json:"message,omitempty"`
	History               []Transition `json:"history"`
	// TraceParent and TraceState are the command's W3C trace context (CloudEvents
	// distributed tracing extension), copied onto every status event.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	// Sealed is the job's user, sealed (see [Sealer]) so that a failed job can be
	// redriven; "" once the job is complete, and for jobs from before heapdel kept it.
	Sealed string `json:"sealed,omitempty"`
	// Earlier is the history of the request id's earlier attempts (a retry or a
	// redrive after failed), oldest first, each transition with its attempt.
	Earlier []Transition `json:"earlier_attempts,omitempty"`
}

// Transition is one step of a job's history.
type Transition struct {
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	Note   string    `json:"note,omitempty"`
	// Attempt is set on the transitions of [Job.Earlier] only.
	Attempt int `json:"attempt,omitempty"`
}

func (j *Job) terminal() bool { return j.Status == stateComplete || j.Status == stateFailed }

func (j *Job) record(status string, at time.Time, note string) {
	if status == stateComplete {
		j.Sealed = "" // Heap has deleted the user: nothing of them is kept
	}
	j.Status = status
	j.History = append(j.History, Transition{Status: status, At: at, Note: note})
}

// event builds the status event for one of the job's transitions. Its id depends on
// the command that started the job (Seq), so every re-publication of the transition
// has the same id and a later job for the same request id has new ones.
func (j *Job) event(status events.Status, at time.Time) events.StatusEvent {
	ev := events.StatusEvent{
		RequestID:             j.RequestID,
		Status:                status,
		Attempt:               j.Attempt,
		CommandSeq:            j.Seq,
		HeapDeletionRequestID: j.HeapDeletionRequestID,
		RequestedAt:           j.RequestedAt,
		SubmittedAt:           j.SubmittedAt,
		Deadline:              j.Deadline,
		Time:                  at,
		TraceParent:           j.TraceParent,
		TraceState:            j.TraceState,
	}
	switch status {
	case events.StatusComplete:
		ev.CompletedAt = j.CompletedAt
	case events.StatusFailed:
		ev.CompletedAt = j.CompletedAt
		ev.Reason = events.Reason(j.Reason)
		ev.Message = j.Message
	}
	return ev
}

// JobKey is the key of a request id in the job store. Request ids may hold ':' and
// '.', which key-value keys restrict, so those are escaped as =XX ('=' is not in the
// request-id alphabet, so the mapping is one to one).
func JobKey(requestID string) string {
	var b strings.Builder
	for i := 0; i < len(requestID); i++ {
		c := requestID[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	return b.String()
}

// identityHash is the keyed hash kept instead of the identity: it lets an auditor
// holding the key confirm a given person was processed, and nobody else learn who.
func identityHash(key []byte, identity string, userID uint64) string {
	mac := hmac.New(sha256.New, key)
	if identity != "" {
		mac.Write([]byte("identity:"))
		mac.Write([]byte(identity))
	} else {
		mac.Write([]byte("user_id:"))
		mac.Write(strconv.AppendUint(nil, userID, 10))
	}
	return hex.EncodeToString(mac.Sum(nil)[:16])
}

// stopWatch stops a key-value watch that nobody reads any more. nats.go's watch
// delivers into a channel of 256 and blocks when it is full (by design), so a
// watch left with a full channel would keep its delivery goroutine for as long as
// the process lives; the channel is drained until the watch closes it.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}

// putAsync writes value under key in bucket, expecting the key's last revision to be
// rev (0: absent). ttl > 0 makes the entry expire. The write goes straight to the
// bucket's stream so that a batch's thousands of writes travel together.
func (s *Service) putAsync(bucket, key string, value []byte, rev uint64, ttl time.Duration) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Data = value
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(rev)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	f, err := s.js.PublishMsgAsync(m, opts...)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", bucket, err)
	}
	return f, nil
}

// awaitAck waits for one asynchronous publish. A wrong-last-sequence answer is
// errConflict: another writer got there first.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		if isConflict(err) {
			return nil, errConflict
		}
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

var errConflict = errors.New("changed by another writer")

// isConflict says whether err is a compare-and-set conflict: another writer got
// there first. Replicated (R3) streams answer 10164 where a single server answers
// 10071; both are conflicts.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errConflict) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// getJob reads a job and its revision; found is false when there is none (or it expired).
func (s *Service) getJob(ctx context.Context, requestID string) (job Job, rev uint64, found bool, err error) {
	e, err := s.jobs.Get(ctx, JobKey(requestID))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Job{}, 0, false, nil
	}
	if err != nil {
		return Job{}, 0, false, fmt.Errorf("read job: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &job); err != nil {
		return Job{}, 0, false, fmt.Errorf("decode job %s: %w", requestID, err)
	}
	return job, e.Revision(), true, nil
}

// HeapRequest is a Heap deletion request being followed until Heap says complete.
// Its members (the jobs it covers) are stored beside it under "m.<key>".
type HeapRequest struct {
	ID          string    `json:"heap_deletion_request_id"`
	SubmittedAt time.Time `json:"submitted_at"`
	NextCheckAt time.Time `json:"next_check_at"`
	Checks      int       `json:"checks"`
	// NotFoundAt is when Heap first answered 404 for this request; a second 404 at
	// least one recheck interval later makes it heap_not_found. Any other answer
	// clears it.
	NotFoundAt time.Time `json:"not_found_at,omitzero"`
	Users      int       `json:"users"`
	// Deadlines are the legal due dates (Unix seconds) of the members that have one,
	// for the deadline gauges.
	Deadlines []int64 `json:"deadlines,omitempty"`
	// Waited are the request ids of the members that may have a waiting entry (an
	// earlier submission of theirs failed): until it is purged, their deadline
	// counts here only.
	Waited []string `json:"waited,omitempty"`
}

// Member is one job covered by a Heap deletion request.
type Member struct {
	RequestID string `json:"r"`
	Attempt   int    `json:"a"`
}

func requestKey(heapID string) string { return JobKey(heapID) }
func membersKey(heapID string) string { return "m." + JobKey(heapID) }
