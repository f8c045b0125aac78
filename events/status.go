package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"

	"github.com/heapdel/heapdel/internal/jsonx"
)

// Status is a deletion's state as status events report it.
type Status string

// The statuses of SPEC.md; each is also the last token of its subject.
const (
	StatusSubmitted  Status = "submitted"
	StatusProcessing Status = "processing"
	StatusComplete   Status = "complete"
	StatusFailed     Status = "failed"
)

func (s Status) valid() bool {
	switch s {
	case StatusSubmitted, StatusProcessing, StatusComplete, StatusFailed:
		return true
	}
	return false
}

// Reason says why a deletion failed.
type Reason string

// The failure reasons of SPEC.md.
const (
	ReasonInvalidCommand Reason = "invalid_command"
	ReasonHeapRejected   Reason = "heap_rejected"
	ReasonHeapNotFound   Reason = "heap_not_found"
	ReasonTimeout        Reason = "timeout"
)

// StatusEvent is one status transition of one request id. It never holds the
// identity or user id.
type StatusEvent struct {
	RequestID             string
	Status                Status
	Attempt               int    // 1 for the first processing of a request id, +1 per retry after failed
	CommandSeq            uint64 // stream sequence of the command that started the job (for invalid_command, of that command); see [EventID]
	HeapDeletionRequestID string
	RequestedAt           time.Time // zero → JSON null
	SubmittedAt           time.Time // zero → JSON null
	CompletedAt           time.Time // zero → JSON null
	Deadline              time.Time // zero → omitted
	Reason                Reason
	Message               string
	Time                  time.Time // event time; zero → the time of encoding
	// TraceParent and TraceState are the W3C Trace Context of the command that
	// started the request ([Command.TraceParent]), written as the CloudEvents
	// distributed tracing extension: traceparent and tracestate attributes
	// (ce-traceparent and ce-tracestate headers in binary mode). One that is
	// empty or not valid is left out (a tracestate also without a valid
	// traceparent); it never makes Encode fail.
	TraceParent string
	TraceState  string
}

// Defaults for [EncoderConfig].
const (
	DefaultPrefix = "heap.deletion"
	DefaultSource = "heapdel"
)

// EncoderConfig configures an [Encoder]. The zero value is usable.
type EncoderConfig struct {
	Prefix     string // subject prefix; default "heap.deletion"
	Source     string // CloudEvent source; default "heapdel"
	Structured bool   // structured mode instead of binary mode
}

// Encoder turns status events into JetStream messages. It is safe for concurrent use.
type Encoder struct {
	prefix, source string
	structured     bool
}

// NewEncoder returns an Encoder for cfg, with defaults filled in for empty fields.
func NewEncoder(cfg EncoderConfig) *Encoder {
	return &Encoder{prefix: cmp(cfg.Prefix, DefaultPrefix), source: cmp(cfg.Source, DefaultSource), structured: cfg.Structured}
}

// ErrBadStatusEvent is wrapped by [Encoder.Encode] errors for a status event that
// cannot be published as given (a programming error, not a transient one).
var ErrBadStatusEvent = errors.New("bad status event")

// Encode builds the message for ev: subject <prefix>.status.<status>, CloudEvent type
// heap.deletion.<status>, subject = the request id, id = [EventID] (also sent as
// Nats-Msg-Id, so JetStream drops a re-publish after a redelivery). It returns an
// error wrapping [ErrBadStatusEvent] for an unknown status, an attempt below 1 (0 is
// allowed for an invalid_command failure), a command sequence of 0 (JetStream's
// start at 1) or a request id that is not valid, and an error from the SDK if
// encoding fails.
func (e *Encoder) Encode(ev StatusEvent) (*nats.Msg, error) {
	switch {
	case !ev.Status.valid():
		return nil, fmt.Errorf("encode status event: status %s: %w", safeText(string(ev.Status)), ErrBadStatusEvent)
	case ev.Attempt < 0, ev.Attempt == 0 && ev.Reason != ReasonInvalidCommand:
		// Attempt 0 is an invalid command's failure: it never became an attempt.
		return nil, fmt.Errorf("encode status event: attempt %d, want 1 or more (0 only for invalid_command): %w", ev.Attempt, ErrBadStatusEvent)
	case ev.CommandSeq == 0:
		// Without it, ids would repeat across the lifetimes of one request id.
		return nil, fmt.Errorf("encode status event: command sequence 0: %w", ErrBadStatusEvent)
	case !validRequestID(ev.RequestID):
		return nil, fmt.Errorf("encode status event: request id is not valid: %w", ErrBadStatusEvent)
	}
	id := EventID(ev.RequestID, ev.CommandSeq, ev.Attempt, ev.Status)
	ce := event.New()
	ce.SetID(id)
	ce.SetSource(e.source)
	ce.SetType("heap.deletion." + string(ev.Status))
	ce.SetSubject(ev.RequestID)
	t := ev.Time
	if t.IsZero() {
		t = time.Now()
	}
	ce.SetTime(t)
	ce.SetDataContentType(ctJSON)
	setTraceContext(&ce, ev.TraceParent, ev.TraceState)
	ce.DataEncoded = appendStatusData(make([]byte, 0, 256), &ev)
	msg, err := writeMsg(e.prefix+".status."+string(ev.Status), &ce, e.structured)
	if err != nil {
		return nil, fmt.Errorf("encode status event: %w", err)
	}
	msg.Header.Set(nats.MsgIdHdr, id)
	return msg, nil
}

// EventID returns the CloudEvent id of a status transition: the hex of the first 16
// bytes of SHA-256 over the request id, the command sequence, the attempt and the
// status, separated by zero bytes. The same transition always gets the same id, so
// a re-publish after a redelivery (the same stream message) is a duplicate; a new
// command with the same request id (a retry, a reuse after the job expired, another
// invalid command) gets new ids.
func EventID(requestID string, commandSeq uint64, attempt int, status Status) string {
	var buf [192]byte
	b := append(buf[:0], requestID...)
	b = append(b, 0)
	b = strconv.AppendUint(b, commandSeq, 10)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(attempt), 10)
	b = append(b, 0)
	b = append(b, status...)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// appendStatusData writes the data object of SPEC.md by hand: it runs for every
// status event, and reflection-based encoding costs several times more.
func appendStatusData(b []byte, ev *StatusEvent) []byte {
	b = append(b, `{"request_id":`...)
	b = jsonx.AppendString(b, ev.RequestID)
	b = append(b, `,"status":`...)
	b = jsonx.AppendString(b, string(ev.Status))
	b = append(b, `,"heap_deletion_request_id":`...)
	b = jsonx.AppendString(b, ev.HeapDeletionRequestID)
	b = append(b, `,"requested_at":`...)
	b = appendJSONTime(b, ev.RequestedAt)
	b = append(b, `,"submitted_at":`...)
	b = appendJSONTime(b, ev.SubmittedAt)
	b = append(b, `,"completed_at":`...)
	b = appendJSONTime(b, ev.CompletedAt)
	if !ev.Deadline.IsZero() {
		b = append(b, `,"deadline":`...)
		b = appendJSONTime(b, ev.Deadline)
	}
	b = append(b, `,"reason":`...)
	b = jsonx.AppendString(b, string(ev.Reason))
	b = append(b, `,"message":`...)
	b = jsonx.AppendString(b, ev.Message)
	if ev.Attempt > 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(ev.Attempt), 10)
	}
	return append(b, '}')
}

// appendJSONTime appends t as an RFC 3339 UTC string with nanoseconds, or null.
func appendJSONTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

type statusData struct {
	RequestID             *string `json:"request_id"`
	Status                Status  `json:"status"`
	HeapDeletionRequestID string  `json:"heap_deletion_request_id"`
	RequestedAt           *string `json:"requested_at"`
	SubmittedAt           *string `json:"submitted_at"`
	CompletedAt           *string `json:"completed_at"`
	Deadline              *string `json:"deadline"`
	Reason                Reason  `json:"reason"`
	Message               string  `json:"message"`
	Attempt               int     `json:"attempt"`
}

// DecodeStatus reads a status event of either mode from a message's headers and
// data, and returns it with its CloudEvent id. CommandSeq is not carried by the
// event and is left 0 (Attempt is 0 when the event has none: invalid_command); TraceParent and TraceState are set when the
// event carries valid ones. An error means the message is not a valid
// status event: not a CloudEvent, not of a heap.deletion.<status> type, or with data
// that does not decode; h is not modified.
func DecodeStatus(h nats.Header, data []byte) (ev StatusEvent, eventID string, err error) {
	ch, ie := canonicalHeader(h)
	if ie != nil {
		return StatusEvent{}, "", fmt.Errorf("decode status event: %w", ie)
	}
	ce, err := binding.ToEvent(context.Background(), cejs.NewMessage(&nats.Msg{Header: ch, Data: data}))
	if err != nil {
		return StatusEvent{}, "", fmt.Errorf("decode status event: %w", err)
	}
	if err := ce.Validate(); err != nil {
		return StatusEvent{}, "", fmt.Errorf("decode status event: %w", err)
	}
	var d statusData
	if err := json.Unmarshal(ce.Data(), &d); err != nil {
		return StatusEvent{}, "", fmt.Errorf("decode status event data: %w", err)
	}
	if d.RequestID == nil || !d.Status.valid() {
		return StatusEvent{}, "", errors.New("decode status event data: request_id or status missing or unknown")
	}
	if want := "heap.deletion." + string(d.Status); ce.Type() != want {
		return StatusEvent{}, "", fmt.Errorf("decode status event: type %s does not match status %s", safeText(ce.Type()), safeText(string(d.Status)))
	}
	ev = StatusEvent{
		RequestID:             *d.RequestID,
		Status:                d.Status,
		HeapDeletionRequestID: d.HeapDeletionRequestID,
		Reason:                d.Reason,
		Message:               d.Message,
		Attempt:               d.Attempt,
		Time:                  ce.Time(),
	}
	ev.TraceParent, ev.TraceState = traceContext(ce)
	for _, f := range []struct {
		name string
		in   *string
		out  *time.Time
	}{
		{"requested_at", d.RequestedAt, &ev.RequestedAt},
		{"submitted_at", d.SubmittedAt, &ev.SubmittedAt},
		{"completed_at", d.CompletedAt, &ev.CompletedAt},
		{"deadline", d.Deadline, &ev.Deadline},
	} {
		if f.in == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, *f.in)
		if err != nil {
			return StatusEvent{}, "", fmt.Errorf("decode status event data: %s: %w", f.name, err)
		}
		*f.out = t
	}
	return ev, ce.ID(), nil
}
