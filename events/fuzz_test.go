package events

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// fuzzHeader turns fuzz bytes into a header: one "key:value" per line, repeated
// keys adding values, and a line without a colon giving a key with no values (a
// shape nats.go never produces but a caller could).
func fuzzHeader(b []byte) nats.Header {
	if len(b) == 0 {
		return nil
	}
	h := nats.Header{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			if _, exists := h[k]; !exists {
				h[k] = []string{}
			}
			continue
		}
		h.Add(k, v)
	}
	return h
}

// encodeFuzzHeader is the inverse of fuzzHeader for the seed corpus.
func encodeFuzzHeader(h nats.Header) []byte {
	var b bytes.Buffer
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	}) {
		for _, v := range h[k] {
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(k + ":" + v)
		}
	}
	return b.Bytes()
}

func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases() {
		for _, m := range []mode{binaryMode, structuredMode} {
			if tc.only != nil && *tc.only != m {
				continue
			}
			var h nats.Header
			var data []byte
			if tc.msg != nil {
				h, data = tc.msg(f, m)
			} else {
				h, data = buildMsg(f, m, tc.data, tc.attrs)
			}
			hb := encodeFuzzHeader(h)
			if len(hb)+len(data) > 8<<10 {
				continue // keep the corpus small; size limits are tested in TestDecode
			}
			f.Add(hb, data)
		}
	}
	f.Add([]byte(""), []byte(""))
	f.Add([]byte("ce-specversion:1.0"), []byte("{}"))
	f.Add([]byte("Ce-Specversion:1.0\nce-specversion:1.0"), []byte(`{"request_id":"r"}`))
	f.Add([]byte("ce-specversion:0.3\nce-id:1\nce-source:s\nce-type:heap.deletion.requested"), []byte(`{"request_id":"r","user_id":"1"}`))
	f.Add([]byte("content-type:application/cloudevents+json"), []byte(`{"specversion":"1.0","id":"1","source":"s","type":"heap.deletion.requested","data_base64":"eyJyZXF1ZXN0X2lkIjoiciIsInVzZXJfaWQiOjF9"}`))
	f.Add([]byte("ce-specversion:1.0\nce-id:1\nce-source:s\nce-type:heap.deletion.requested\nce-time"), []byte(`{"request_id":"r","user_id":1}`))

	d := NewDecoder(DecoderConfig{})
	f.Fuzz(func(t *testing.T, hb, data []byte) {
		h := fuzzHeader(hb)
		before := cloneHeader(h)
		c, err := d.Decode(testSubject, h, data)
		if !equalHeader(h, before) {
			t.Fatalf("Decode changed the caller's header")
		}
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %T %v is not an InvalidError", err, err)
			}
			if ie.RequestID != "" && !validRequestID(ie.RequestID) {
				t.Fatalf("error carries invalid request id %q", ie.RequestID)
			}
			if ie.Reason == "" || len(err.Error()) > 400 || !utf8.ValidString(err.Error()) {
				t.Fatalf("bad error %q", err)
			}
			return
		}
		if !validRequestID(c.RequestID) {
			t.Fatalf("accepted invalid request id %q", c.RequestID)
		}
		if (c.Identity == "") == (c.UserID == 0) {
			t.Fatalf("want exactly one user: %+v", c)
		}
		if len(c.Identity) > maxIdentity || !utf8.ValidString(c.Identity) || strings.TrimSpace(c.Identity) != c.Identity {
			t.Fatalf("accepted bad identity")
		}
		if c.TraceParent != "" && !validTraceParent(c.TraceParent) || c.TraceParent == "" && c.TraceState != "" {
			t.Fatalf("accepted bad traceparent %q (tracestate %q)", c.TraceParent, c.TraceState)
		}
		if ts, ok := normalTraceState(c.TraceState); !ok || ts != c.TraceState {
			t.Fatalf("accepted bad tracestate %q", c.TraceState)
		}
		// What was accepted re-encodes to a command that decodes the same, in both modes.
		for _, structured := range []bool{false, true} {
			msg, err := NewCommandMsg(testSubject, c, structured)
			if err != nil {
				t.Fatalf("NewCommandMsg: %v", err)
			}
			again, err := d.Decode(msg.Subject, msg.Header, msg.Data)
			if err != nil {
				// A re-encoded command can outgrow MaxBytes only by escaping.
				if ie := (*InvalidError)(nil); errors.As(err, &ie) && ie.Reason == reasonTooLarge {
					continue
				}
				t.Fatalf("re-decode (structured=%v): %v", structured, err)
			}
			if again.RequestID != c.RequestID || again.Identity != c.Identity || again.UserID != c.UserID ||
				!again.Deadline.Equal(c.Deadline) || again.Type != c.Type ||
				again.TraceParent != c.TraceParent || again.TraceState != c.TraceState ||
				// The SDK trims the id it writes; NATS trims header values on the wire anyway.
				again.EventID != strings.TrimSpace(c.EventID) {
				t.Fatalf("re-decode (structured=%v) = %+v, want %+v", structured, again, c)
			}
		}
	})
}
