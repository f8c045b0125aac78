package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestEncodeDecodeStatusRoundTrip(t *testing.T) {
	at := time.Date(2026, 4, 5, 6, 7, 8, 9, time.FixedZone("x", 3600))
	tests := []struct {
		name string
		ev   StatusEvent
	}{
		{name: "submitted", ev: StatusEvent{RequestID: "dsr-1", Status: StatusSubmitted, Attempt: 1, CommandSeq: 1,
			HeapDeletionRequestID: "c93fae81-f67a-46d6-acf1-0c3ba1c3e5a6", RequestedAt: at, SubmittedAt: at.Add(time.Second), Time: at}},
		{name: "complete with deadline", ev: StatusEvent{RequestID: "dsr-1", Status: StatusComplete, Attempt: 2, CommandSeq: 97,
			HeapDeletionRequestID: "h1", RequestedAt: at, SubmittedAt: at, CompletedAt: at.Add(time.Hour), Deadline: at.Add(720 * time.Hour), Time: at}},
		{name: "failed invalid", ev: StatusEvent{RequestID: "a:b.c_d-e", Status: StatusFailed, Attempt: 0, CommandSeq: 18446744073709551615,
			Reason: ReasonInvalidCommand, Message: "bad_field: user_id \"quoted\" <tag> é\n", Time: at}},
		{name: "processing", ev: StatusEvent{RequestID: "r", Status: StatusProcessing, Attempt: 7, CommandSeq: 3, Time: at}},
		{name: "with trace context", ev: StatusEvent{RequestID: "r", Status: StatusProcessing, Attempt: 1, CommandSeq: 3, Time: at,
			TraceParent: testTraceParent, TraceState: "congo=t61rcWkgMzE,rojo@vendor=00f067aa0ba902b7"}},
	}
	for _, tc := range tests {
		for _, structured := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/structured=%v", tc.name, structured), func(t *testing.T) {
				enc := NewEncoder(EncoderConfig{Prefix: "p.q", Source: "src", Structured: structured})
				msg, err := enc.Encode(tc.ev)
				if err != nil {
					t.Fatal(err)
				}
				wantID := EventID(tc.ev.RequestID, tc.ev.CommandSeq, tc.ev.Attempt, tc.ev.Status)
				if want := "p.q.status." + string(tc.ev.Status); msg.Subject != want {
					t.Errorf("subject = %q, want %q", msg.Subject, want)
				}
				if got := msg.Header.Get(nats.MsgIdHdr); got != wantID {
					t.Errorf("Nats-Msg-Id = %q, want %q", got, wantID)
				}
				if structured {
					if ct := msg.Header.Get("content-type"); ct != "application/cloudevents+json" {
						t.Errorf("content-type = %q", ct)
					}
				} else {
					for k, want := range map[string]string{
						"ce-specversion": "1.0", "ce-id": wantID, "ce-source": "src", "ce-subject": tc.ev.RequestID,
						"ce-type": "heap.deletion." + string(tc.ev.Status), "ce-datacontenttype": "application/json",
						"ce-traceparent": tc.ev.TraceParent, "ce-tracestate": tc.ev.TraceState,
					} {
						if got := msg.Header.Get(k); got != want {
							t.Errorf("header %s = %q, want %q", k, got, want)
						}
					}
					// The NATS binding maps datacontenttype to ce-datacontenttype only;
					// a content-type header is how it marks structured mode.
					if ct, ok := msg.Header["content-type"]; ok {
						t.Errorf("binary mode has a content-type header %q", ct)
					}
				}
				checkStatusData(t, msg, tc.ev)

				got, id, err := DecodeStatus(msg.Header, msg.Data)
				if err != nil {
					t.Fatalf("DecodeStatus: %v", err)
				}
				if id != wantID {
					t.Errorf("event id = %q, want %q", id, wantID)
				}
				want := tc.ev
				want.CommandSeq = 0 // not carried by the event
				if !statusEqual(got, want) {
					t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
				}
			})
		}
	}
}

// checkStatusData checks the data object's keys and values as SPEC.md gives them.
func checkStatusData(t *testing.T, msg *nats.Msg, ev StatusEvent) {
	t.Helper()
	data := msg.Data
	if msg.Header.Get("ce-specversion") == "" {
		var env struct {
			SpecVersion, ID, Source, Type, Subject, DataContentType, Time string
			Data                                                          json.RawMessage
		}
		if err := json.Unmarshal(msg.Data, &env); err != nil {
			t.Fatalf("structured body: %v", err)
		}
		if env.SpecVersion != "1.0" || env.Subject != ev.RequestID || env.DataContentType != "application/json" ||
			env.Type != "heap.deletion."+string(ev.Status) || env.ID != EventID(ev.RequestID, ev.CommandSeq, ev.Attempt, ev.Status) {
			t.Errorf("envelope = %+v", env)
		}
		if tm, err := time.Parse(time.RFC3339Nano, env.Time); err != nil || !tm.Equal(ev.Time) {
			t.Errorf("time = %q (%v), want %v", env.Time, err, ev.Time)
		}
		data = env.Data
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("data %s: %v", data, err)
	}
	keys := []string{"request_id", "status", "heap_deletion_request_id", "requested_at", "submitted_at", "completed_at", "reason", "message"}
	if !ev.Deadline.IsZero() {
		keys = append(keys, "deadline")
	}
	if ev.Attempt > 0 {
		keys = append(keys, "attempt")
		if n, _ := m["attempt"].(float64); int(n) != ev.Attempt {
			t.Errorf("attempt = %v, want %d", m["attempt"], ev.Attempt)
		}
	}
	got := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("data keys = %v, want %v", got, keys)
	}
	for k, tm := range map[string]time.Time{"requested_at": ev.RequestedAt, "submitted_at": ev.SubmittedAt, "completed_at": ev.CompletedAt} {
		if tm.IsZero() {
			if m[k] != nil {
				t.Errorf("%s = %v, want null", k, m[k])
			}
			continue
		}
		if s, _ := m[k].(string); s != tm.UTC().Format(time.RFC3339Nano) {
			t.Errorf("%s = %v, want %s", k, m[k], tm.UTC().Format(time.RFC3339Nano))
		}
	}
}

func statusEqual(a, b StatusEvent) bool {
	return a.RequestID == b.RequestID && a.Status == b.Status && a.Attempt == b.Attempt &&
		a.HeapDeletionRequestID == b.HeapDeletionRequestID && a.RequestedAt.Equal(b.RequestedAt) &&
		a.SubmittedAt.Equal(b.SubmittedAt) && a.CompletedAt.Equal(b.CompletedAt) && a.Deadline.Equal(b.Deadline) &&
		a.Reason == b.Reason && a.Message == b.Message && a.Time.Equal(b.Time) &&
		a.TraceParent == b.TraceParent && a.TraceState == b.TraceState
}

func TestEncodeDefaults(t *testing.T) {
	before := time.Now()
	msg, err := NewEncoder(EncoderConfig{}).Encode(StatusEvent{RequestID: "r1", Status: StatusComplete, Attempt: 1, CommandSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "heap.deletion.status.complete" || msg.Header.Get("ce-source") != "heapdel" {
		t.Errorf("subject %q, header %v", msg.Subject, msg.Header)
	}
	ev, _, err := DecodeStatus(msg.Header, msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Time.Before(before.Add(-time.Second)) || ev.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("event time %v, want about now", ev.Time)
	}
}

func TestEncodeRejects(t *testing.T) {
	tests := []struct {
		name string
		ev   StatusEvent
	}{
		{name: "unknown status", ev: StatusEvent{RequestID: "r1", Status: "done", Attempt: 1, CommandSeq: 1}},
		{name: "empty status", ev: StatusEvent{RequestID: "r1", Attempt: 1, CommandSeq: 1}},
		{name: "status with wildcard", ev: StatusEvent{RequestID: "r1", Status: "*", Attempt: 1, CommandSeq: 1}},
		{name: "attempt zero", ev: StatusEvent{RequestID: "r1", Status: StatusFailed, CommandSeq: 1}},
		{name: "attempt negative", ev: StatusEvent{RequestID: "r1", Status: StatusFailed, Attempt: -1, CommandSeq: 1, Reason: ReasonInvalidCommand}},
		{name: "command seq zero", ev: StatusEvent{RequestID: "r1", Status: StatusFailed, Attempt: 1}},
		{name: "command seq zero invalid command", ev: StatusEvent{RequestID: "r1", Status: StatusFailed, Reason: ReasonInvalidCommand}},
		{name: "empty request id", ev: StatusEvent{Status: StatusFailed, Attempt: 1, CommandSeq: 1}},
		{name: "request id with space", ev: StatusEvent{RequestID: "a b", Status: StatusFailed, Attempt: 1, CommandSeq: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewEncoder(EncoderConfig{}).Encode(tc.ev); !errors.Is(err, ErrBadStatusEvent) {
				t.Errorf("Encode error = %v, want ErrBadStatusEvent", err)
			}
		})
	}
}

func TestEventID(t *testing.T) {
	// The examples of README.md and docs/events.md ("The event id": printf
	// 'dsr-2026-000123\0001042\0001\000submitted' | sha256sum | cut -c1-32).
	for _, ex := range []struct {
		requestID string
		seq       uint64
		attempt   int
		status    Status
		want      string
	}{
		{"dsr-2026-000123", 1042, 1, StatusSubmitted, "76a1279eec6d68363a90ec6e9505efa0"},
		{"dsr-2026-000123", 1042, 1, StatusProcessing, "5ffa11d8e1de92a47aa203f3f2487e15"},
		{"dsr-2026-000123", 1042, 1, StatusComplete, "1fa1b1c25cf8f82b243663981da7ed9e"},
		{"dsr-bad-1", 1043, 0, StatusFailed, "48400208ab91d8151d73f27d57ae05b3"},
	} {
		if got := EventID(ex.requestID, ex.seq, ex.attempt, ex.status); got != ex.want {
			t.Errorf("EventID(%s, %d, %d, %s) = %q, want the documented %q", ex.requestID, ex.seq, ex.attempt, ex.status, got, ex.want)
		}
	}
	id := EventID("dsr-1", 5, 1, StatusSubmitted)
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("EventID = %q, want 32 lowercase hex digits", id)
	}
	if again := EventID("dsr-1", 5, 1, StatusSubmitted); again != id {
		t.Errorf("EventID not deterministic: %q then %q", id, again)
	}
	others := []string{
		EventID("dsr-1", 5, 2, StatusSubmitted),
		EventID("dsr-1", 5, 1, StatusProcessing),
		EventID("dsr-2", 5, 1, StatusSubmitted),
		EventID("dsr-11", 5, 1, StatusSubmitted),
		EventID("dsr-1", 5, 11, StatusSubmitted),
		// Another command for the request id: after its job expired (attempt 1
		// again), or another invalid command (attempt 0).
		EventID("dsr-1", 6, 1, StatusSubmitted),
		EventID("dsr-1", 51, 1, StatusSubmitted),
		EventID("dsr-15", 1, 1, StatusSubmitted),
	}
	for _, o := range others {
		if o == id {
			t.Errorf("EventID collision: %q", o)
		}
	}
	if EventID("r1", 7, 0, StatusFailed) == EventID("r1", 8, 0, StatusFailed) {
		t.Errorf("two invalid commands for one request id share an id")
	}
	// Two encodings of the same transition (a re-publish after a redelivery) carry
	// the same id and Nats-Msg-Id, whatever their times.
	enc := NewEncoder(EncoderConfig{})
	ev := StatusEvent{RequestID: "dsr-1", Status: StatusSubmitted, Attempt: 1, CommandSeq: 5, Time: time.Unix(1, 0)}
	a, err := enc.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	ev.Time = time.Unix(2, 0)
	b, err := enc.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if a.Header.Get("ce-id") != id || b.Header.Get("ce-id") != id || b.Header.Get(nats.MsgIdHdr) != id {
		t.Errorf("ids %q, %q, %q; want %q", a.Header.Get("ce-id"), b.Header.Get("ce-id"), b.Header.Get(nats.MsgIdHdr), id)
	}
	// The same transition of a later command for the request id has another id.
	ev.CommandSeq = 9
	c, err := enc.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if c.Header.Get("ce-id") == id || c.Header.Get(nats.MsgIdHdr) == id {
		t.Errorf("a later command's event reuses id %q", id)
	}
}

func TestDecodeStatusRejects(t *testing.T) {
	good, err := NewEncoder(EncoderConfig{}).Encode(StatusEvent{RequestID: "r1", Status: StatusFailed, Attempt: 1, CommandSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		h    nats.Header
		data string
	}{
		{name: "not a cloudevent", data: `{"request_id":"r1"}`},
		{name: "data not json", h: good.Header, data: `nope`},
		{name: "unknown status", h: good.Header, data: `{"request_id":"r1","status":"done"}`},
		{name: "type does not match status", h: good.Header, data: `{"request_id":"r1","status":"complete"}`},
		{name: "bad time", h: good.Header, data: `{"request_id":"r1","status":"failed","requested_at":"soon"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := DecodeStatus(tc.h, []byte(tc.data)); err == nil {
				t.Error("DecodeStatus succeeded")
			}
		})
	}
}

func TestStatusEventsNeverCarryIdentity(t *testing.T) {
	// StatusEvent has no identity field at all; this guards the encoding of a
	// failure message built from a decode error of a command with an identity.
	h, data := buildMsg(t, binaryMode, `{"request_id":"r1","identity":"`+secretIdentity+`","user_id":`+secretUserID+`}`, nil)
	_, derr := NewDecoder(DecoderConfig{}).Decode(testSubject, h, data)
	if derr == nil {
		t.Fatal("want an invalid command")
	}
	for _, structured := range []bool{false, true} {
		msg, err := NewEncoder(EncoderConfig{Structured: structured}).Encode(StatusEvent{
			RequestID: "r1", Status: StatusFailed, CommandSeq: 1, Reason: ReasonInvalidCommand, Message: derr.Error()})
		if err != nil {
			t.Fatal(err)
		}
		all := string(msg.Data) + fmt.Sprint(msg.Header)
		for _, s := range []string{"secret", secretUserID} {
			if strings.Contains(all, s) {
				t.Errorf("status event contains %q: %s", s, all)
			}
		}
	}
}

// TestEncodeTraceContext: a status event carries the command's trace context as
// the CloudEvents distributed tracing extension in both modes, and never a
// malformed one.
func TestEncodeTraceContext(t *testing.T) {
	for _, tc := range []struct {
		name          string
		parent, state string
		wantP, wantS  string
	}{
		{"both", testTraceParent, "a=1,b@c=2", testTraceParent, "a=1,b@c=2"},
		{"parent only", testTraceParent, "", testTraceParent, ""},
		{"none", "", "", "", ""},
		{"malformed parent drops both", "00-" + strings.Repeat("0", 32) + "-00f067aa0ba902b7-01", "a=1", "", ""},
		{"malformed state", testTraceParent, "A=1", testTraceParent, ""},
		{"state without parent", "", "a=1", "", ""},
		{"state whitespace removed", testTraceParent, " a=1 ,\tb=2", testTraceParent, "a=1,b=2"},
	} {
		for _, structured := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/structured=%v", tc.name, structured), func(t *testing.T) {
				ev := StatusEvent{RequestID: "r1", Status: StatusSubmitted, Attempt: 1, CommandSeq: 1, TraceParent: tc.parent, TraceState: tc.state}
				msg, err := NewEncoder(EncoderConfig{Structured: structured}).Encode(ev)
				if err != nil {
					t.Fatal(err)
				}
				var gotP, gotS string
				var hasP, hasS bool
				if structured {
					var env map[string]any
					if err := json.Unmarshal(msg.Data, &env); err != nil {
						t.Fatal(err)
					}
					p, okP := env["traceparent"].(string)
					s, okS := env["tracestate"].(string)
					gotP, gotS, hasP, hasS = p, s, okP, okS
				} else {
					_, hasP = msg.Header["ce-traceparent"]
					_, hasS = msg.Header["ce-tracestate"]
					gotP, gotS = msg.Header.Get("ce-traceparent"), msg.Header.Get("ce-tracestate")
				}
				if gotP != tc.wantP || gotS != tc.wantS || hasP != (tc.wantP != "") || hasS != (tc.wantS != "") {
					t.Errorf("traceparent %q (present %v), tracestate %q (present %v); want %q, %q", gotP, hasP, gotS, hasS, tc.wantP, tc.wantS)
				}
				got, _, err := DecodeStatus(msg.Header, msg.Data)
				if err != nil {
					t.Fatal(err)
				}
				if got.TraceParent != tc.wantP || got.TraceState != tc.wantS {
					t.Errorf("decoded trace context %q, %q; want %q, %q", got.TraceParent, got.TraceState, tc.wantP, tc.wantS)
				}
			})
		}
	}
}
