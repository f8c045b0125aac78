package events

import (
	"errors"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every [*InvalidError]: the command can never
// be processed as sent, so it must be terminated, not retried.
var ErrInvalid = errors.New("invalid deletion command")

// Reasons an [InvalidError] carries. They are short machine words, stable for logs
// and metrics.
const (
	reasonNotCloudEvent = "not_cloudevent" // not a CloudEvent 1.0 (envelope, headers, spec version, content type)
	reasonWrongType     = "wrong_type"     // a CloudEvent of a type not in DecoderConfig.Types
	reasonBadJSON       = "bad_json"       // body or data is not JSON, not an object, or not a JSON content type
	reasonTooLarge      = "too_large"      // over DecoderConfig.MaxBytes, or too many headers
	reasonMissingField  = "missing_field"  // request_id, or both identity and user_id, absent
	reasonBothUsers     = "both_users"     // identity and user_id both given
	reasonBadField      = "bad_field"      // a field of the wrong type or value, or given twice
)

// InvalidError says why a deletion command was rejected. Its Error text is safe to
// log: it names the field and the problem, never the value of identity or user_id.
// errors.Is(err, ErrInvalid) is true for every InvalidError.
//
// Reason is one of "not_cloudevent", "wrong_type", "bad_json", "too_large",
// "missing_field", "both_users", "bad_field" (a doubled field is "bad_field").
type InvalidError struct {
	RequestID string // set when a valid request_id could be read despite the problem
	Reason    string // short machine word, see above
	Detail    string // human text naming the field, never its value
}

// Error reports the reason, the detail and, when known, the request id.
func (e *InvalidError) Error() string {
	var b strings.Builder
	b.Grow(len("invalid deletion command (request_id \"\"): : ") + len(e.RequestID) + len(e.Reason) + len(e.Detail))
	b.WriteString("invalid deletion command")
	if e.RequestID != "" {
		// request_id passed validRequestID: no quoting or escaping concerns.
		b.WriteString(" (request_id ")
		b.WriteString(strconv.Quote(e.RequestID))
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(reason, detail string) *InvalidError {
	return &InvalidError{Reason: reason, Detail: detail}
}

// safeText quotes an attacker-controlled, non-identity value (a CloudEvent type, a
// content type, a header name) for an error detail, cut short so a hostile 60 KB
// header cannot flood a log line.
func safeText(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
