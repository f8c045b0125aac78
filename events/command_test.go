package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

const testSubject = "heap.deletion.requested"

// Every identity in these tests contains "secret", and every user id the digits of
// secretUserID, so a test can prove an error text never carries one.
const (
	secretIdentity = "secret.alice@example.com"
	secretUserID   = "8512376125342183"
)

type mode int

const (
	binaryMode mode = iota
	structuredMode
)

func (m mode) String() string { return [...]string{"binary", "structured"}[m] }

// testAttrs are the CloudEvent attributes of a good command.
func testAttrs() map[string]string {
	return map[string]string{
		"specversion":     "1.0",
		"id":              "evt-1",
		"source":          "test",
		"type":            "heap.deletion.requested",
		"datacontenttype": "application/json",
		"time":            "2026-01-02T03:04:05.123Z",
	}
}

var attrOrder = []string{"specversion", "id", "source", "type", "datacontenttype", "time"}

// buildMsg makes a command message in mode m with data as the raw data value; attrs
// override testAttrs, and "-" removes an attribute (and data "-" removes the data).
func buildMsg(t testing.TB, m mode, data string, override map[string]string) (nats.Header, []byte) {
	t.Helper()
	attrs := testAttrs()
	maps.Copy(attrs, override)
	if m == binaryMode {
		h := nats.Header{}
		for _, k := range attrOrder {
			v := attrs[k]
			switch {
			case v == "-":
			case k == "datacontenttype":
				h.Set("content-type", v)
			default:
				h.Set("ce-"+k, v)
			}
		}
		if data == "-" {
			return h, nil
		}
		return h, []byte(data)
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for _, k := range attrOrder {
		if v := attrs[k]; v != "-" {
			fmt.Fprintf(&b, "%q:%q,", k, v)
		}
	}
	if data != "-" {
		b.WriteString(`"data":`)
		b.WriteString(data)
	} else {
		b.Truncate(b.Len() - 1)
	}
	b.WriteByte('}')
	return nats.Header{"content-type": {"application/cloudevents+json"}}, b.Bytes()
}

type decodeCase struct {
	name  string
	data  string            // the data object, raw
	attrs map[string]string // CloudEvent attribute overrides
	only  *mode             // run in this mode only
	msg   func(t testing.TB, m mode) (nats.Header, []byte)

	reason string // "" = valid
	rid    string // request id expected in the command or the error
	check  func(t *testing.T, c Command)
}

func onlyMode(m mode) *mode { return &m }

// sdkStructured makes a structured-mode command the way the CloudEvents SDK writes
// one whose data has content type ct.
func sdkStructured(ct string) func(t testing.TB, m mode) (nats.Header, []byte) {
	return func(t testing.TB, _ mode) (nats.Header, []byte) {
		e := event.New()
		e.SetID("evt-1")
		e.SetSource("test")
		e.SetType(DefaultCommandType)
		if err := e.SetData(ct, map[string]string{"request_id": "r1", "identity": secretIdentity}); err != nil {
			t.Fatal(err)
		}
		b, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return nats.Header{"content-type": {"application/cloudevents+json"}}, b
	}
}

// A W3C traceparent of version 00 (the W3C specification's example).
const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// withAttrs makes a command in mode m with data and extra CloudEvent attributes,
// given as raw JSON values (binary mode takes the string's content as the
// header value).
func withAttrs(data string, raw map[string]string) func(t testing.TB, m mode) (nats.Header, []byte) {
	return func(t testing.TB, m mode) (nats.Header, []byte) {
		h, b := buildMsg(t, m, data, nil)
		for _, k := range slices.Sorted(maps.Keys(raw)) {
			v := raw[k]
			if m == binaryMode {
				var sv string
				if err := json.Unmarshal([]byte(v), &sv); err != nil {
					t.Fatalf("binary attribute %s: %v", k, err)
				}
				h.Set("ce-"+k, sv)
				continue
			}
			b = append([]byte(`{"`+k+`":`+v+`,`), b[1:]...)
		}
		return h, b
	}
}

// traceAttrs is withAttrs for a traceparent and a tracestate ("-": absent).
func traceAttrs(data, parent, state string) func(t testing.TB, m mode) (nats.Header, []byte) {
	raw := map[string]string{}
	for k, v := range map[string]string{"traceparent": parent, "tracestate": state} {
		if v != "-" {
			q, _ := json.Marshal(v)
			raw[k] = string(q)
		}
	}
	return withAttrs(data, raw)
}

func wantTrace(parent, state string) func(t *testing.T, c Command) {
	return func(t *testing.T, c Command) {
		t.Helper()
		if c.TraceParent != parent || c.TraceState != state {
			t.Errorf("trace context %q, %q; want %q, %q", c.TraceParent, c.TraceState, parent, state)
		}
	}
}

// contentTypes makes a binary-mode command with data and both content type headers.
func contentTypes(data, ct, dct string) func(t testing.TB, m mode) (nats.Header, []byte) {
	return func(t testing.TB, m mode) (nats.Header, []byte) {
		h, b := buildMsg(t, m, data, map[string]string{"datacontenttype": ct})
		h.Set("ce-datacontenttype", dct)
		return h, b
	}
}

func decodeCases() []decodeCase {
	long := func(n int) string { return strings.Repeat("a", n) }
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	deepObj := `{"request_id":"deep-1","identity":"` + secretIdentity + `","x":` + deep + `}`
	tooDeep := `{"request_id":"deep-2","identity":"` + secretIdentity + `","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`
	id := `"identity":"` + secretIdentity + `"`
	return []decodeCase{
		// valid
		{name: "identity", data: `{"request_id":"dsr-2026-000123",` + id + `}`, rid: "dsr-2026-000123",
			check: func(t *testing.T, c Command) {
				if c.Identity != secretIdentity || c.UserID != 0 || c.EventID != "evt-1" || c.Source != "test" ||
					c.Type != DefaultCommandType || !c.Time.Equal(time.Date(2026, 1, 2, 3, 4, 5, 123e6, time.UTC)) || !c.Deadline.IsZero() {
					t.Errorf("command = %+v", c)
				}
			}},
		{name: "user id integer", data: `{"request_id":"dsr-2026-000124","user_id":` + secretUserID + `}`, rid: "dsr-2026-000124",
			check: wantUser(8512376125342183)},
		{name: "user id max uint64", data: `{"request_id":"r1","user_id":18446744073709551615}`, rid: "r1",
			check: wantUser(18446744073709551615)},
		{name: "user id decimal string", data: `{"request_id":"r1","user_id":"9223372036854775807"}`, rid: "r1",
			check: wantUser(9223372036854775807)},
		{name: "user id string max uint64", data: `{"request_id":"r1","user_id":"18446744073709551615"}`, rid: "r1",
			check: wantUser(18446744073709551615)},
		{name: "user id 1", data: `{"request_id":"r1","user_id":1}`, rid: "r1", check: wantUser(1)},
		{name: "deadline", data: `{"request_id":"r1",` + id + `,"deadline":"2026-03-01T00:00:00+02:00"}`, rid: "r1",
			check: func(t *testing.T, c Command) {
				if !c.Deadline.Equal(time.Date(2026, 2, 28, 22, 0, 0, 0, time.UTC)) {
					t.Errorf("deadline = %v", c.Deadline)
				}
			}},
		{name: "unknown fields ignored", data: `{"note":{"a":[1,2,{"b":"}"}]},"request_id":"r1",` + id + `,"extra":null}`, rid: "r1"},
		{name: "null user id is absent", data: `{"request_id":"r1",` + id + `,"user_id":null,"deadline":null}`, rid: "r1"},
		{name: "request id all characters", data: `{"request_id":"aZ09._:-",` + id + `}`, rid: "aZ09._:-"},
		{name: "request id dots at the edges", data: `{"request_id":".r1.",` + id + `}`, rid: ".r1."},
		{name: "request id 128", data: `{"request_id":"` + long(128) + `",` + id + `}`, rid: long(128)},
		{name: "escaped key and value", data: `{"request\u005fid":"r\u0031",` + id + `}`, rid: "r1"},
		{name: "identity unicode", data: `{"request_id":"r1","identity":"secret-\u00e9\ud83d\ude00é"}`, rid: "r1",
			check: func(t *testing.T, c Command) {
				if c.Identity != "secret-é😀é" {
					t.Errorf("identity = %q", c.Identity)
				}
			}},
		{name: "identity 1024 bytes", data: `{"request_id":"r1","identity":"secret` + long(1018) + `"}`, rid: "r1"},
		{name: "deeply nested unknown field", data: deepObj, rid: "deep-1"},
		// The SDK alone would read structured data of these types as a string.
		{name: "datacontenttype +json", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "application/vnd.heap+json; charset=utf-8"}, rid: "r1"},
		{name: "datacontenttype in capitals", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "Application/JSON; Charset=UTF-8"}, rid: "r1"},
		{name: "datacontenttype with charset", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "application/json;charset=utf-8"}, rid: "r1"},
		{name: "binary content-type with charset", only: onlyMode(binaryMode), rid: "r1",
			msg: contentTypes(`{"request_id":"r1",`+id+`}`, "application/json; charset=utf-8", "application/json")},
		{name: "binary content-type in capitals", only: onlyMode(binaryMode), rid: "r1",
			msg: contentTypes(`{"request_id":"r1",`+id+`}`, "application/json", "Application/JSON;charset=UTF-8")},
		{name: "no datacontenttype", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "-"}, rid: "r1"},
		{name: "no time", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"time": "-"}, rid: "r1",
			check: func(t *testing.T, c Command) {
				if !c.Time.IsZero() {
					t.Errorf("time = %v", c.Time)
				}
			}},
		{name: "mixed-case binary headers", only: onlyMode(binaryMode), rid: "r1",
			msg: func(t testing.TB, _ mode) (nats.Header, []byte) {
				return nats.Header{
					"Ce-Specversion": {"1.0"}, "CE-ID": {"evt-1"}, "Ce-Source": {"test"},
					"CE-TYPE": {"heap.deletion.requested"}, "Content-Type": {"application/json"}, "Nats-Msg-Id": {"x"},
				}, []byte(`{"request_id":"r1",` + id + `}`)
			}},
		{name: "structured without content-type", only: onlyMode(structuredMode), rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				_, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				return nats.Header{"Other": {"x"}}, b
			}},
		{name: "structured mixed-case content-type", only: onlyMode(structuredMode), rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				_, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				return nats.Header{"Content-Type": {"Application/CloudEvents+JSON; charset=utf-8"}}, b
			}},

		// invalid: envelope
		{name: "unknown type", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"type": "com.example.other"}, reason: "wrong_type", rid: "r1"},
		{name: "specversion 0.3", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"specversion": "0.3"}, reason: "not_cloudevent", rid: "r1"},
		{name: "specversion 2.0", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"specversion": "2.0"}, reason: "not_cloudevent", rid: "r1"},
		{name: "missing id", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"id": "-"}, reason: "not_cloudevent", rid: "r1"},
		{name: "missing source", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"source": "-"}, reason: "not_cloudevent", rid: "r1"},
		{name: "bad time", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"time": "yesterday"}, reason: "not_cloudevent", rid: "r1"},
		{name: "datacontenttype not json", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "text/plain"}, reason: "bad_json", rid: "r1"},
		{name: "datacontenttype Text/Plain", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "Text/Plain"}, reason: "bad_json", rid: "r1"},
		{name: "datacontenttype bad parameter", data: `{"request_id":"r1",` + id + `}`, attrs: map[string]string{"datacontenttype": "Application/JSON; charset"}, reason: "not_cloudevent", rid: "r1"},
		// The SDK writes data of a type it does not take for JSON as a string.
		{name: "datacontenttype +json string data", only: onlyMode(structuredMode), data: `"{\"request_id\":\"r1\",\"identity\":\"` + secretIdentity + `\"}"`, attrs: map[string]string{"datacontenttype": "application/vnd.heap+json"}, rid: "r1",
			check: func(t *testing.T, c Command) {
				if c.Identity != secretIdentity {
					t.Errorf("identity = %q", c.Identity)
				}
			}},
		{name: "datacontenttype +json string data not an object", only: onlyMode(structuredMode), data: `"{\"request_id\":\"r1\"}x"`, attrs: map[string]string{"datacontenttype": "application/vnd.heap+json"}, reason: "bad_json"},
		{name: "datacontenttype Application/JSON string data", only: onlyMode(structuredMode), data: `"{\"request_id\":\"r1\",\"identity\":\"x\"}"`, attrs: map[string]string{"datacontenttype": "Application/JSON"}, reason: "bad_json"},
		{name: "datacontenttype application/json string data", only: onlyMode(structuredMode), data: `"{\"request_id\":\"r1\",\"identity\":\"x\"}"`, attrs: map[string]string{"datacontenttype": "application/json"}, reason: "bad_json"},
		{name: "structured +json written by the SDK", only: onlyMode(structuredMode), rid: "r1", msg: sdkStructured("application/vnd.heap+json")},
		{name: "structured text/plain+json written by the SDK", only: onlyMode(structuredMode), rid: "r1", msg: sdkStructured("text/plain+json")},
		{name: "no data", data: "-", reason: "bad_json"},
		{name: "not a cloudevent at all", only: onlyMode(structuredMode), reason: "not_cloudevent", rid: "r1",
			msg: func(t testing.TB, _ mode) (nats.Header, []byte) {
				return nil, []byte(`{"request_id":"r1",` + id + `}`)
			}},
		{name: "flattened envelope", only: onlyMode(structuredMode), reason: "not_cloudevent", rid: "r1",
			msg: func(t testing.TB, _ mode) (nats.Header, []byte) {
				return nil, []byte(`{"specversion":"1.0","id":"e","source":"s","type":"heap.deletion.requested","request_id":"r1",` + id + `}`)
			}},
		{name: "structured body not JSON", only: onlyMode(structuredMode), reason: "bad_json",
			msg: func(t testing.TB, _ mode) (nats.Header, []byte) {
				return nats.Header{"content-type": {"application/cloudevents+json"}}, []byte(`{"specversion":"1.0", "data":{"identity":"` + secretIdentity)
			}},
		{name: "structured wrong content-type", only: onlyMode(structuredMode), reason: "not_cloudevent", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				_, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				return nats.Header{"content-type": {"text/plain"}}, b
			}},
		{name: "structured doubled data", only: onlyMode(structuredMode), reason: "bad_field",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				b = append(b[:len(b)-1], `,"data":{"request_id":"r2","user_id":`+secretUserID+`}}`...)
				return h, b
			}},
		{name: "structured data is a string", data: `"{\"request_id\":\"r1\"}"`, only: onlyMode(structuredMode), reason: "bad_json"},
		{name: "binary doubled header spelling", only: onlyMode(binaryMode), reason: "bad_field", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h["Ce-Type"] = []string{"heap.deletion.requested"}
				return h, b
			}},
		{name: "binary header with two values", only: onlyMode(binaryMode), reason: "bad_field", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h.Add("ce-id", "evt-2")
				return h, b
			}},
		{name: "binary empty header slices", only: onlyMode(binaryMode), rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h["X-Empty"] = nil
				h["ce-empty"] = []string{}
				return h, b
			}},
		{name: "binary content-type disagrees", only: onlyMode(binaryMode), reason: "bad_field", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h.Set("ce-datacontenttype", "text/plain")
				return h, b
			}},
		{name: "binary charsets disagree", only: onlyMode(binaryMode), reason: "bad_field", rid: "r1",
			msg: contentTypes(`{"request_id":"r1",`+id+`}`, "application/json; charset=utf-8", "application/json; charset=iso-8859-1")},
		{name: "binary ce-datacontenttype bad parameter", only: onlyMode(binaryMode), reason: "not_cloudevent", rid: "r1",
			msg: contentTypes(`{"request_id":"r1",`+id+`}`, "application/json", "application/json; charset")},
		{name: "binary bad extension name", only: onlyMode(binaryMode), reason: "not_cloudevent", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h.Set("ce-bad_name!", "x")
				return h, b
			}},
		{name: "too many headers", reason: "too_large", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				for i := range 10000 {
					h.Set("x-h"+strconv.Itoa(i), "v")
				}
				return h, b
			}},
		{name: "too many values of one header", reason: "too_large", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h["X-Many"] = make([]string, 10000)
				return h, b
			}},
		{name: "huge header value", reason: "too_large", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				h.Set("x-big", strings.Repeat("v", 70000))
				return h, b
			}},
		{name: "1 MB body", reason: "too_large", rid: "big-1",
			data: `{"request_id":"big-1",` + id + `,"pad":"` + long(1<<20) + `"}`},
		{name: "10 MB body", reason: "too_large",
			data: `{"request_id":"big-1",` + id + `,"pad":"` + long(10<<20) + `"}`},

		// trace context: kept when valid, dropped (the command still valid) when not
		{name: "trace context", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "congo=t61rcWkgMzE,rojo@vendor=00f067aa0ba902b7"),
			check: wantTrace(testTraceParent, "congo=t61rcWkgMzE,rojo@vendor=00f067aa0ba902b7")},
		{name: "traceparent only", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "-"),
			check: wantTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "")},
		{name: "no trace context", rid: "r1", data: `{"request_id":"r1",` + id + `}`, check: wantTrace("", "")},
		{name: "tracestate whitespace and empty members removed", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a=1 ,\t, b=x*y/z , "),
			check: wantTrace(testTraceParent, "a=1,b=x*y/z")},
		{name: "tracestate 32 members", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, traceMembers(32)),
			check: wantTrace(testTraceParent, traceMembers(32))},
		{name: "traceparent uppercase hex dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "a=1"),
			check: wantTrace("", "")},
		{name: "traceparent zero trace id dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "a=1"),
			check: wantTrace("", "")},
		{name: "traceparent zero parent id dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "-"),
			check: wantTrace("", "")},
		{name: "traceparent version ff dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "-"),
			check: wantTrace("", "")},
		{name: "traceparent with a suffix dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent+"-xyz", "-"),
			check: wantTrace("", "")},
		{name: "traceparent short dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "-"),
			check: wantTrace("", "")},
		{name: "traceparent bad separator dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "-"),
			check: wantTrace("", "")},
		{name: "tracestate without traceparent dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, "-", "a=1"),
			check: wantTrace("", "")},
		{name: "tracestate uppercase key dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "A=1"),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate doubled key dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a=1,a=2"),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate 33 members dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, traceMembers(33)),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate over 512 characters dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a="+long(255)+",b="+long(255)),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate member without = dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a=1,b"),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate value with a space dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a=b c"),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate value with percent dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a=%41"),
			check: wantTrace(testTraceParent, "")},
		{name: "tracestate bad multi-tenant key dropped", rid: "r1", msg: traceAttrs(`{"request_id":"r1",`+id+`}`, testTraceParent, "a@1=x"),
			check: wantTrace(testTraceParent, "")},
		{name: "structured traceparent not a string dropped", only: onlyMode(structuredMode), rid: "r1",
			msg: withAttrs(`{"request_id":"r1",`+id+`}`, map[string]string{"traceparent": "42", "tracestate": `"a=1"`}), check: wantTrace("", "")},

		// invalid: envelope
		{name: "structured data and data_base64", only: onlyMode(structuredMode), reason: "bad_field", rid: "r1",
			msg: withAttrs(`{"request_id":"r1",`+id+`}`, map[string]string{"data_base64": `"eyJyZXF1ZXN0X2lkIjoicjEiLCJ1c2VyX2lkIjoxfQ=="`})},
		{name: "structured data_base64 and data", only: onlyMode(structuredMode), reason: "bad_field", rid: "r1",
			msg: func(t testing.TB, m mode) (nats.Header, []byte) {
				h, b := buildMsg(t, m, `{"request_id":"r1",`+id+`}`, nil)
				return h, bytes.Replace(b, []byte(`"data":`), []byte(`"data_base64":"eyJyZXF1ZXN0X2lkIjoicjEiLCJ1c2VyX2lkIjoxfQ==","data":`), 1)
			}},
		{name: "structured data null and data_base64", only: onlyMode(structuredMode), reason: "bad_field",
			msg: withAttrs(`null`, map[string]string{"data_base64": `"eyJyZXF1ZXN0X2lkIjoicjEiLCJ1c2VyX2lkIjoxfQ=="`})},

		// invalid: data
		{name: "identity blank", data: `{"request_id":"r1","identity":" "}`, reason: "bad_field", rid: "r1"},
		{name: "identity whitespace only", data: `{"request_id":"r1","identity":"\t\n\r \u00a0"}`, reason: "bad_field", rid: "r1"},
		{name: "identity leading space", data: `{"request_id":"r1","identity":" ` + secretIdentity + `"}`, reason: "bad_field", rid: "r1"},
		{name: "identity trailing newline", data: `{"request_id":"r1","identity":"` + secretIdentity + `\n"}`, reason: "bad_field", rid: "r1"},
		{name: "identity trailing no-break space", data: `{"request_id":"r1","identity":"` + secretIdentity + `\u00a0"}`, reason: "bad_field", rid: "r1"},
		{name: "data not JSON", data: `request_id=r1 identity=` + secretIdentity, only: onlyMode(binaryMode), reason: "bad_json"},
		{name: "data truncated JSON", data: `{"request_id":"r1",` + id, only: onlyMode(binaryMode), reason: "bad_json"},
		{name: "data array", data: `[{"request_id":"r1"}]`, reason: "bad_json"},
		{name: "data null", data: `null`, only: onlyMode(binaryMode), reason: "bad_json"},
		{name: "data number", data: `42`, reason: "bad_json"},
		{name: "data too deep", data: tooDeep, reason: "bad_json"},
		{name: "invalid UTF-8 identity", data: "{\"request_id\":\"r1\",\"identity\":\"secret\xff\xfe\"}", only: onlyMode(binaryMode), reason: "bad_field", rid: "r1"},
		{name: "lone surrogate identity", data: `{"request_id":"r1","identity":"secret\ud800x"}`, reason: "bad_field", rid: "r1"},
		{name: "reversed surrogates identity", data: `{"request_id":"r1","identity":"secret\udc00\ud800"}`, reason: "bad_field", rid: "r1"},
		{name: "missing request id", data: `{` + id + `}`, reason: "missing_field"},
		{name: "null request id", data: `{"request_id":null,` + id + `}`, reason: "missing_field"},
		{name: "request id number", data: `{"request_id":123,` + id + `}`, reason: "bad_field"},
		{name: "request id object", data: `{"request_id":{"a":"b"},` + id + `}`, reason: "bad_field"},
		{name: "request id empty", data: `{"request_id":"",` + id + `}`, reason: "bad_field"},
		{name: "request id star", data: `{"request_id":"dsr.*",` + id + `}`, reason: "bad_field"},
		{name: "request id gt", data: `{"request_id":"dsr.>",` + id + `}`, reason: "bad_field"},
		{name: "request id space", data: `{"request_id":"dsr 1",` + id + `}`, reason: "bad_field"},
		{name: "request id 129", data: `{"request_id":"` + long(129) + `",` + id + `}`, reason: "bad_field"},
		{name: "request id 10 KB", data: `{"request_id":"` + long(10<<10) + `",` + id + `}`, reason: "bad_field"},
		{name: "request id unicode", data: `{"request_id":"dsr-é",` + id + `}`, reason: "bad_field"},
		{name: "request id doubled", data: `{"request_id":"r1",` + id + `,"request_id":"r2"}`, reason: "bad_field"},
		{name: "request id doubled same", data: `{"request_id":"r1",` + id + `,"request_id":"r1"}`, reason: "bad_field", rid: "r1"},
		{name: "request id doubled via escape", data: `{"request_id":"r1",` + id + `,"request\u005fid":"r2"}`, reason: "bad_field"},
		{name: "identity doubled", data: `{"request_id":"r1",` + id + `,` + id + `}`, reason: "bad_field", rid: "r1"},
		{name: "unknown field doubled", data: `{"request_id":"r1",` + id + `,"x":1,"x":2}`, reason: "bad_field", rid: "r1"},
		{name: "wide object doubled", data: `{"request_id":"r1",` + id + wideFields(100) + `,"f50":0}`, reason: "bad_field", rid: "r1"},
		{name: "wide object", data: `{"request_id":"r1",` + id + wideFields(2000) + `}`, rid: "r1"},
		{name: "both users", data: `{"request_id":"r1",` + id + `,"user_id":` + secretUserID + `}`, reason: "both_users", rid: "r1"},
		{name: "empty identity and user id", data: `{"request_id":"r1","identity":"","user_id":` + secretUserID + `}`, reason: "both_users", rid: "r1"},
		{name: "neither user", data: `{"request_id":"r1"}`, reason: "missing_field", rid: "r1"},
		{name: "both null", data: `{"request_id":"r1","identity":null,"user_id":null}`, reason: "missing_field", rid: "r1"},
		{name: "identity empty", data: `{"request_id":"r1","identity":""}`, reason: "bad_field", rid: "r1"},
		{name: "identity number", data: `{"request_id":"r1","identity":` + secretUserID + `}`, reason: "bad_field", rid: "r1"},
		{name: "identity array", data: `{"request_id":"r1","identity":["` + secretIdentity + `"]}`, reason: "bad_field", rid: "r1"},
		{name: "identity 1025 bytes", data: `{"request_id":"r1","identity":"secret` + long(1019) + `"}`, reason: "bad_field", rid: "r1"},
		{name: "user id zero", data: `{"request_id":"r1","user_id":0}`, reason: "bad_field", rid: "r1"},
		{name: "user id zero string", data: `{"request_id":"r1","user_id":"0"}`, reason: "bad_field", rid: "r1"},
		{name: "user id negative", data: `{"request_id":"r1","user_id":-` + secretUserID + `}`, reason: "bad_field", rid: "r1"},
		{name: "user id fraction", data: `{"request_id":"r1","user_id":` + secretUserID + `.5}`, reason: "bad_field", rid: "r1"},
		{name: "user id exponent", data: `{"request_id":"r1","user_id":` + secretUserID + `e3}`, reason: "bad_field", rid: "r1"},
		{name: "user id overflow", data: `{"request_id":"r1","user_id":18446744073709551616}`, reason: "bad_field", rid: "r1"},
		{name: "user id string overflow", data: `{"request_id":"r1","user_id":"99999999999999999999"}`, reason: "bad_field", rid: "r1"},
		{name: "user id string plus", data: `{"request_id":"r1","user_id":"+` + secretUserID + `"}`, reason: "bad_field", rid: "r1"},
		{name: "user id string minus", data: `{"request_id":"r1","user_id":"-` + secretUserID + `"}`, reason: "bad_field", rid: "r1"},
		{name: "user id string spaces", data: `{"request_id":"r1","user_id":" ` + secretUserID + `"}`, reason: "bad_field", rid: "r1"},
		{name: "user id string leading zero", data: `{"request_id":"r1","user_id":"0` + secretUserID + `"}`, reason: "bad_field", rid: "r1"},
		{name: "user id string exponent", data: `{"request_id":"r1","user_id":"` + secretUserID + `e1"}`, reason: "bad_field", rid: "r1"},
		{name: "user id string empty", data: `{"request_id":"r1","user_id":""}`, reason: "bad_field", rid: "r1"},
		{name: "user id bool", data: `{"request_id":"r1","user_id":true}`, reason: "bad_field", rid: "r1"},
		{name: "user id object", data: `{"request_id":"r1","user_id":{"id":` + secretUserID + `}}`, reason: "bad_field", rid: "r1"},
		{name: "deadline not RFC 3339", data: `{"request_id":"r1",` + id + `,"deadline":"next week"}`, reason: "bad_field", rid: "r1"},
		{name: "deadline number", data: `{"request_id":"r1",` + id + `,"deadline":1767225600}`, reason: "bad_field", rid: "r1"},
	}
}

// traceMembers returns a valid tracestate of n members.
func traceMembers(n int) string {
	m := make([]string, n)
	for i := range m {
		m[i] = fmt.Sprintf("k%d=v%d", i, i)
	}
	return strings.Join(m, ",")
}

func wideFields(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `,"f%d":%d`, i, i)
	}
	return b.String()
}

func wantUser(id uint64) func(t *testing.T, c Command) {
	return func(t *testing.T, c Command) {
		t.Helper()
		if c.UserID != id || c.Identity != "" {
			t.Errorf("user = %d / %q, want %d", c.UserID, c.Identity, id)
		}
	}
}

func TestDecode(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	for _, tc := range decodeCases() {
		for _, m := range []mode{binaryMode, structuredMode} {
			if tc.only != nil && *tc.only != m {
				continue
			}
			t.Run(m.String()+"/"+tc.name, func(t *testing.T) {
				var h nats.Header
				var data []byte
				if tc.msg != nil {
					h, data = tc.msg(t, m)
				} else {
					h, data = buildMsg(t, m, tc.data, tc.attrs)
				}
				before := cloneHeader(h)
				c, err := d.Decode(testSubject, h, data)
				if !equalHeader(h, before) {
					t.Errorf("Decode changed the caller's header")
				}
				if tc.reason == "" {
					if err != nil {
						t.Fatalf("Decode: %v", err)
					}
					if c.RequestID != tc.rid {
						t.Errorf("RequestID = %q, want %q", c.RequestID, tc.rid)
					}
					if tc.check != nil {
						tc.check(t, c)
					}
					return
				}
				checkInvalid(t, err, tc.reason, tc.rid)
				if c != (Command{}) {
					t.Errorf("command not empty on error: %+v", c)
				}
			})
		}
	}
}

func checkInvalid(t *testing.T, err error, reason, rid string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Decode succeeded, want reason %q", reason)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	var ie *InvalidError
	if !errors.As(err, &ie) {
		t.Fatalf("error %T is not *InvalidError", err)
	}
	if ie.Reason != reason {
		t.Errorf("Reason = %q (%v), want %q", ie.Reason, err, reason)
	}
	if ie.RequestID != rid {
		t.Errorf("RequestID = %q, want %q", ie.RequestID, rid)
	}
	msg := err.Error()
	for _, secret := range []string{"secret", "example.com", secretUserID} {
		if strings.Contains(msg, secret) {
			t.Errorf("error text %q contains %q", msg, secret)
		}
	}
	if len(msg) > 400 {
		t.Errorf("error text is %d bytes long", len(msg))
	}
	if rid != "" && !strings.Contains(msg, rid) {
		t.Errorf("error text %q does not name request id %q", msg, rid)
	}
}

func cloneHeader(h nats.Header) nats.Header {
	if h == nil {
		return nil
	}
	out := make(nats.Header, len(h))
	for k, v := range h {
		if v == nil {
			out[k] = nil
			continue
		}
		out[k] = append([]string{}, v...)
	}
	return out
}

func equalHeader(a, b nats.Header) bool {
	return maps.EqualFunc(a, b, func(x, y []string) bool {
		return (x == nil) == (y == nil) && strings.Join(x, "\x00") == strings.Join(y, "\x00") && len(x) == len(y)
	})
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name   string
		cfg    DecoderConfig
		typ    string
		pad    int
		reason string
	}{
		{name: "custom type accepted", cfg: DecoderConfig{Types: []string{"a.b", "c.d"}}, typ: "c.d"},
		{name: "default type not in custom list", cfg: DecoderConfig{Types: []string{"a.b"}}, typ: DefaultCommandType, reason: "wrong_type"},
		{name: "under a small limit", cfg: DecoderConfig{MaxBytes: 1000}, typ: DefaultCommandType, pad: 100},
		{name: "over a small limit", cfg: DecoderConfig{MaxBytes: 1000}, typ: DefaultCommandType, pad: 1000, reason: "too_large"},
		{name: "headers count toward the limit", cfg: DecoderConfig{MaxBytes: 1000}, typ: DefaultCommandType, pad: 900, reason: "too_large"},
	}
	for _, tc := range tests {
		for _, m := range []mode{binaryMode, structuredMode} {
			t.Run(m.String()+"/"+tc.name, func(t *testing.T) {
				data := `{"request_id":"r1","identity":"` + secretIdentity + `","pad":"` + strings.Repeat("p", tc.pad) + `"}`
				h, b := buildMsg(t, m, data, map[string]string{"type": tc.typ})
				_, err := NewDecoder(tc.cfg).Decode(testSubject, h, b)
				if tc.reason == "" {
					if err != nil {
						t.Fatalf("Decode: %v", err)
					}
					return
				}
				checkInvalid(t, err, tc.reason, "r1")
			})
		}
	}
}

func TestNewCommandMsgRoundTrip(t *testing.T) {
	deadline := time.Date(2026, 5, 1, 12, 0, 0, 5, time.UTC)
	tests := []struct {
		name string
		in   Command
	}{
		{name: "identity", in: Command{RequestID: "r1", Identity: secretIdentity, Deadline: deadline, EventID: "e1", Source: "src", Time: deadline}},
		{name: "user id max", in: Command{RequestID: "r2", UserID: 18446744073709551615}},
		{name: "identity needing escapes", in: Command{RequestID: "r3", Identity: "secret \"<&>\" \u2028 é"}},
		{name: "trace context", in: Command{RequestID: "r4", UserID: 1, TraceParent: testTraceParent, TraceState: "a=1,b@c=2"}},
	}
	for _, tc := range tests {
		for _, structured := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/structured=%v", tc.name, structured), func(t *testing.T) {
				msg, err := NewCommandMsg(testSubject, tc.in, structured)
				if err != nil {
					t.Fatal(err)
				}
				if msg.Subject != testSubject {
					t.Errorf("subject = %q", msg.Subject)
				}
				if structured != (msg.Header.Get("ce-specversion") == "") {
					t.Errorf("header %v for structured=%v", msg.Header, structured)
				}
				c, err := NewDecoder(DecoderConfig{}).Decode(msg.Subject, msg.Header, msg.Data)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				want := tc.in
				if want.EventID == "" {
					if c.EventID == "" {
						t.Error("no event id")
					}
					want.EventID = c.EventID
				}
				want.Source = cmp(want.Source, DefaultPublishSource)
				want.Type = cmp(want.Type, DefaultCommandType)
				if want.Time.IsZero() {
					want.Time = c.Time
				}
				if c.RequestID != want.RequestID || c.Identity != want.Identity || c.UserID != want.UserID ||
					!c.Deadline.Equal(want.Deadline) || c.EventID != want.EventID || c.Source != want.Source ||
					c.Type != want.Type || !c.Time.Equal(want.Time) || c.Time.IsZero() ||
					c.TraceParent != want.TraceParent || c.TraceState != want.TraceState {
					t.Errorf("decoded %+v, want %+v", c, want)
				}
			})
		}
	}
}

func TestNewCommandMsgUserIDIsExactInteger(t *testing.T) {
	msg, err := NewCommandMsg(testSubject, Command{RequestID: "r1", UserID: 18446744073709551615}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg.Data, []byte(`"user_id":18446744073709551615`)) {
		t.Errorf("data %s lacks the exact integer", msg.Data)
	}
}

func TestInvalidErrorText(t *testing.T) {
	tests := []struct {
		err  *InvalidError
		want string
	}{
		{&InvalidError{Reason: "bad_json", Detail: "data is not valid JSON"}, "invalid deletion command: bad_json: data is not valid JSON"},
		{&InvalidError{RequestID: "r1", Reason: "both_users"}, `invalid deletion command (request_id "r1"): both_users`},
	}
	for _, tc := range tests {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if wrapped := fmt.Errorf("x: %w", tc.err); !errors.Is(wrapped, ErrInvalid) {
			t.Errorf("wrapped error is not ErrInvalid")
		}
	}
}
