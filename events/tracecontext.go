package events

import (
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
)

// The CloudEvents distributed tracing extension: W3C Trace Context carried as the
// attributes traceparent and tracestate (binary mode: ce-traceparent and
// ce-tracestate headers).
const (
	extTraceParent = "traceparent"
	extTraceState  = "tracestate"
)

const (
	traceParentLen  = len("00-") + 32 + len("-") + 16 + len("-") + 2
	maxTraceState   = 512 // W3C asks to propagate at least 512 characters; more is dropped
	maxTraceMembers = 32  // W3C: more list members make the whole tracestate invalid
)

// traceContext returns e's traceparent and tracestate when they are valid W3C
// Trace Context, "" for each one that is absent or malformed. A tracestate is
// kept only with a valid traceparent, as W3C requires, and is returned with the
// optional whitespace around its list members and its empty members removed.
func traceContext(e *event.Event) (traceParent, traceState string) {
	ext := e.Extensions()
	tp, _ := ext[extTraceParent].(string)
	if !validTraceParent(tp) {
		return "", ""
	}
	ts, _ := ext[extTraceState].(string)
	ts, _ = normalTraceState(ts)
	return tp, ts
}

// setTraceContext sets the tracing extension attributes of e from a traceparent
// and tracestate, leaving out whichever is not valid (a tracestate also without a
// valid traceparent).
func setTraceContext(e *event.Event, traceParent, traceState string) {
	if !validTraceParent(traceParent) {
		return
	}
	e.SetExtension(extTraceParent, traceParent)
	if ts, ok := normalTraceState(traceState); ok && ts != "" {
		e.SetExtension(extTraceState, ts)
	}
}

// validTraceParent reports whether s is a W3C traceparent of version 00:
// "00-" 32 lowercase hex digits (the trace id, not all zero) "-" 16 (the parent
// id, not all zero) "-" 2 (the flags). Other versions are not accepted.
func validTraceParent(s string) bool {
	if len(s) != traceParentLen || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return false
	}
	return lowerHex(s[3:35], true) && lowerHex(s[36:52], true) && lowerHex(s[53:], false)
}

// lowerHex reports whether s is lowercase hex digits, and, when nonZero is set,
// not all zeros.
func lowerHex(s string, nonZero bool) bool {
	zero := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return false
		}
		if c != '0' {
			zero = false
		}
	}
	return !nonZero || !zero
}

// normalTraceState checks a W3C tracestate and returns it with the optional
// whitespace around its list members and its empty members removed (which does
// not change its meaning). ok is false, and the tracestate must be dropped, when
// it has a malformed or doubled key, a malformed value, more than 32 members or
// more than 512 characters; or a value with a space, '"' or '%', which the
// CloudEvents NATS binding would have to percent-encode in a header (the SDKs do
// not), so it could not reach subscribers unchanged. "" is valid and empty.
func normalTraceState(s string) (_ string, ok bool) {
	if s == "" {
		return "", true
	}
	if len(s) > 8*maxTraceState {
		return "", false // cheap bound before any parsing; whitespace only could shrink it
	}
	var b strings.Builder
	var keys []string
	for member := range strings.SplitSeq(s, ",") {
		member = strings.Trim(member, " \t")
		if member == "" {
			continue
		}
		key, value, found := strings.Cut(member, "=")
		if !found || !validTraceStateKey(key) || !validTraceStateValue(value) {
			return "", false
		}
		for _, k := range keys {
			if k == key {
				return "", false
			}
		}
		if keys = append(keys, key); len(keys) > maxTraceMembers {
			return "", false
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(member)
		if b.Len() > maxTraceState {
			return "", false
		}
	}
	return b.String(), true
}

// validTraceStateKey: a simple key, lcalpha 0*255(lcalpha / DIGIT / "_" / "-" /
// "*" / "/"), or a multi-tenant key, tenant "@" system, the tenant starting with
// lcalpha or DIGIT, at most 241 characters, the system starting with lcalpha, at
// most 14.
func validTraceStateKey(k string) bool {
	tenant, system, multi := strings.Cut(k, "@")
	if !multi {
		return len(k) <= 256 && keyChars(k) && isLower(k[0])
	}
	return len(tenant) <= 241 && keyChars(tenant) && (isLower(tenant[0]) || '0' <= tenant[0] && tenant[0] <= '9') &&
		len(system) <= 14 && keyChars(system) && isLower(system[0])
}

// keyChars reports whether s is non-empty and made of lcalpha, DIGIT, "_", "-",
// "*" and "/" only.
func keyChars(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLower(c) && !('0' <= c && c <= '9') && c != '_' && c != '-' && c != '*' && c != '/' {
			return false
		}
	}
	return true
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }

// validTraceStateValue: 1 to 256 printable ASCII characters other than "," and
// "=", the last not a space; here also without a space, '"' or '%' anywhere (see
// normalTraceState).
func validTraceStateValue(v string) bool {
	if v == "" || len(v) > 256 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c > '~' || c == ',' || c == '=' || c == '"' || c == '%' {
			return false
		}
	}
	return true
}
