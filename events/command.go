package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strconv"
	"strings"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// Command is one validated deletion command.
type Command struct {
	RequestID string
	Identity  string // exactly one of Identity / UserID is set (UserID > 0)
	UserID    uint64
	Deadline  time.Time // zero when absent
	EventID   string    // the CloudEvent's id
	Source    string    // the CloudEvent's source
	Type      string    // the CloudEvent's type
	Time      time.Time // the CloudEvent's time, zero if absent
	// TraceParent and TraceState are the command's W3C Trace Context, from the
	// CloudEvents distributed tracing extension (traceparent and tracestate
	// attributes; ce-traceparent and ce-tracestate headers in binary mode), to be
	// copied onto every status event of the request. Each is "" when absent or
	// malformed: a malformed one is dropped (a tracestate also when the
	// traceparent is dropped), never copied, and the command stays valid.
	// TraceState has the whitespace around its list members removed.
	TraceParent string
	TraceState  string
}

// Defaults for [DecoderConfig].
const (
	DefaultCommandType = "heap.deletion.requested"
	DefaultMaxBytes    = 64 << 10
)

const (
	maxRequestID = 128
	maxIdentity  = 1024
	// recoverLimit bounds the work spent reading a request id out of a body that is
	// too large to accept, so refusing a hostile 10 MB body stays cheap.
	recoverLimit = 2 << 20
)

// DecoderConfig configures a [Decoder]. The zero value is usable.
type DecoderConfig struct {
	Types    []string // accepted CloudEvent types; default ["heap.deletion.requested"]
	MaxBytes int      // largest accepted message, data plus headers; default 65536
}

// Decoder turns JetStream messages into deletion commands. It is safe for
// concurrent use.
type Decoder struct {
	types    []string
	maxBytes int
}

// NewDecoder returns a Decoder for cfg, with defaults filled in for zero fields.
func NewDecoder(cfg DecoderConfig) *Decoder {
	d := &Decoder{types: slices.Clone(cfg.Types), maxBytes: cfg.MaxBytes}
	if len(d.types) == 0 {
		d.types = []string{DefaultCommandType}
	}
	if d.maxBytes <= 0 {
		d.maxBytes = DefaultMaxBytes
	}
	return d
}

// Decode reads a deletion command from a message's subject, headers and data, in
// binary or structured CloudEvents mode, and validates it as SPEC.md says. Every
// rejection is an [*InvalidError] (errors.Is(err, ErrInvalid)): the command can never
// succeed and must not be retried. Its RequestID is set whenever a valid request_id
// could be read, so a failed status event can still be published. h is not modified.
func (d *Decoder) Decode(subject string, h nats.Header, data []byte) (Command, error) {
	c, ie := d.decode(subject, h, data)
	if ie != nil {
		if ie.RequestID == "" {
			// Best effort: the envelope or headers may be broken while the body still
			// names its request id, which lets the caller publish a failed event.
			ie.RequestID = recoverRequestID(data)
		}
		return Command{}, ie
	}
	return c, nil
}

func (d *Decoder) decode(subject string, h nats.Header, data []byte) (Command, *InvalidError) {
	if ie := checkSize(h, data, d.maxBytes); ie != nil {
		return Command{}, ie
	}
	h, ie := canonicalHeader(h)
	if ie != nil {
		return Command{}, ie
	}
	body := data // what the SDK reads
	if h.Get(hdrSpecVersion) != "" {
		if ie := checkContentTypes(h); ie != nil {
			return Command{}, ie
		}
	} else {
		if body, ie = checkStructured(h, data); ie != nil {
			return Command{}, ie
		}
	}

	msg := &nats.Msg{Subject: subject, Header: h, Data: body}
	e, err := binding.ToEvent(context.Background(), cejs.NewMessage(msg))
	if err != nil {
		// The SDK's text can quote the body (and so an identity): never pass it on.
		return Command{}, invalid(reasonNotCloudEvent, "not a readable CloudEvent")
	}
	if err := e.Validate(); err != nil {
		return Command{}, invalid(reasonNotCloudEvent, "invalid CloudEvent attributes: "+attrNames(err))
	}
	if sv := e.SpecVersion(); sv != event.CloudEventsVersionV1 {
		return Command{}, invalid(reasonNotCloudEvent, "specversion "+safeText(sv)+" is not supported, want 1.0")
	}
	if !slices.Contains(d.types, e.Type()) {
		return Command{}, invalid(reasonWrongType, "type "+safeText(e.Type())+" is not accepted")
	}
	if ct := e.DataContentType(); ct != "" && !isJSONType(ct) {
		return Command{}, invalid(reasonBadJSON, "datacontenttype "+safeText(ct)+" is not JSON")
	}
	c, ie := parseData(e.Data())
	if ie != nil {
		return Command{}, ie
	}
	c.EventID, c.Source, c.Type, c.Time = e.ID(), e.Source(), e.Type(), e.Time()
	c.TraceParent, c.TraceState = traceContext(e)
	return c, nil
}

// checkStructured checks what the SDK does not in structured mode: a CloudEvents
// content type (when one is given), a JSON body, and no doubled envelope attribute
// (the SDK would silently keep the last "data"). It returns the body the SDK should
// read: body itself, or, when the datacontenttype names JSON in a way the SDK does
// not recognise (another case, such as "Application/JSON", or a "+json" type) and the
// data is a JSON value other than a string, a copy that says "application/json"
// instead, since the SDK would refuse such data of any other type. The datacontenttype is only ever used to tell JSON apart.
func checkStructured(h nats.Header, body []byte) ([]byte, *InvalidError) {
	if ct := h.Get(hdrContentType); ct != "" && mediaType(ct) != ctCloudEvents {
		return nil, invalid(reasonNotCloudEvent, "no ce-specversion header and content-type "+safeText(ct)+" is not "+ctCloudEvents)
	}
	if !json.Valid(body) {
		return nil, invalid(reasonBadJSON, "body is not valid JSON")
	}
	var seen keySet
	var doubled, dct, data []byte
	var base64 bool
	if !forEachMember(body, func(k, v []byte) bool {
		k = decodeKey(k)
		if seen.add(k) {
			doubled = k
			return false
		}
		switch string(k) {
		case "datacontenttype":
			dct = v
		case "data":
			data = v
		case "data_base64":
			base64 = true
		}
		return true
	}) {
		return nil, invalid(reasonNotCloudEvent, "body is not a JSON object")
	}
	if data != nil && base64 {
		// The JSON event format makes them exclusive, and the SDK would keep
		// whichever comes last.
		return nil, invalid(reasonBadField, "data and data_base64 both given, want one")
	}
	if doubled != nil {
		name := "an envelope attribute"
		if s := string(doubled); len(s) <= 32 && (event.IsExtensionNameValid(s) || s == "data_base64") {
			name = s
		}
		return nil, invalid(reasonBadField, name+" given more than once")
	}
	ct, ok := stringValue(dct)
	if !ok || sdkReadsAsJSON(ct) {
		return body, nil // the SDK reads it (or refuses a non-string one) as we would
	}
	// Checked here too (not only after the SDK) so both modes give the same reason:
	// the SDK refuses a non-JSON type with object data before we could look.
	if !isJSONType(ct) {
		return nil, invalid(reasonBadJSON, "datacontenttype "+safeText(ct)+" is not JSON")
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		// The SDK's validation would say so of the original.
		return nil, invalid(reasonNotCloudEvent, "invalid CloudEvent attributes: datacontenttype")
	}
	if len(data) > 0 && data[0] == '"' && mediaType(ct) != ctJSON {
		// String data of a "+json" type: how the SDK itself writes data of a type
		// it does not know as JSON. It reads it back as the string's bytes, which
		// parseData takes as the JSON they hold; rewriting the type would make the
		// SDK keep the quoted string instead. (String data of application/json, in
		// any case, is refused as it is when written in lower case.)
		return body, nil
	}
	at := offsetIn(body, dct)
	out := make([]byte, 0, len(body)-len(dct)+len(ctJSON)+2)
	out = append(out, body[:at]...)
	out = append(out, `"`+ctJSON+`"`...)
	return append(out, body[at+len(dct):]...), nil
}

// attrNames lists the attribute names of an SDK validation error (never its text,
// which may hold values).
func attrNames(err error) string {
	var ve event.ValidationError
	if !errors.As(err, &ve) {
		return "unknown"
	}
	names := make([]string, 0, len(ve))
	for k := range ve {
		names = append(names, safeText(k))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// dataFields holds the raw values of the command's known data fields.
type dataFields struct {
	requestID, identity, userID, deadline []byte
	doubled                               string // name of the first doubled field, "" if none
	ridConflict                           bool   // request_id given twice with different values
}

func scanData(data []byte) (f dataFields, ok bool) {
	var seen keySet
	ok = forEachMember(data, func(k, v []byte) bool {
		k = decodeKey(k)
		name := knownField(k)
		if seen.add(k) && f.doubled == "" {
			f.doubled = cmp(name, "a field")
		}
		switch name {
		case "request_id":
			if f.requestID != nil && !bytes.Equal(f.requestID, v) {
				f.ridConflict = true
			}
			f.requestID = v
		case "identity":
			f.identity = v
		case "user_id":
			f.userID = v
		case "deadline":
			f.deadline = v
		}
		return true
	})
	return f, ok
}

// knownField returns the name of a command data field spelt by key, or "".
func knownField(key []byte) string {
	switch string(key) { // no allocation: compared, not converted
	case "request_id":
		return "request_id"
	case "identity":
		return "identity"
	case "user_id":
		return "user_id"
	case "deadline":
		return "deadline"
	}
	return ""
}

// readRequestID returns the request id of f if it is present, unambiguous and valid.
func (f *dataFields) readRequestID() (string, bool) {
	if f.requestID == nil || f.ridConflict {
		return "", false
	}
	s, ok := stringValue(f.requestID)
	if !ok || !validRequestID(s) {
		return "", false
	}
	return s, true
}

// parseData validates the command's data object. The returned error carries the
// request id whenever it was readable.
func parseData(data []byte) (Command, *InvalidError) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Command{}, invalid(reasonBadJSON, "data is empty, want a JSON object")
	}
	if !json.Valid(data) {
		return Command{}, invalid(reasonBadJSON, "data is not valid JSON")
	}
	f, ok := scanData(data)
	if !ok {
		return Command{}, invalid(reasonBadJSON, "data is not a JSON object")
	}
	rid, ridOK := f.readRequestID()
	fail := func(reason, detail string) (Command, *InvalidError) {
		ie := invalid(reason, detail)
		if ridOK {
			ie.RequestID = rid
		}
		return Command{}, ie
	}
	if f.doubled != "" {
		return fail(reasonBadField, f.doubled+" given more than once")
	}
	if isNull(f.requestID) {
		return fail(reasonMissingField, "request_id is required")
	}
	if !ridOK {
		return fail(reasonBadField, "request_id must be a string of 1-128 characters from A-Z a-z 0-9 . _ : -")
	}
	hasIdentity, hasUser := !isNull(f.identity), !isNull(f.userID)
	switch {
	case hasIdentity && hasUser:
		return fail(reasonBothUsers, "identity and user_id are both given, want exactly one")
	case !hasIdentity && !hasUser:
		return fail(reasonMissingField, "identity or user_id is required")
	}
	c := Command{RequestID: rid}
	if hasIdentity {
		s, ok := exactString(f.identity)
		switch {
		case !ok:
			return fail(reasonBadField, "identity must be a string of valid UTF-8")
		case s == "":
			return fail(reasonBadField, "identity is empty")
		case strings.TrimSpace(s) == "":
			return fail(reasonBadField, "identity is blank (whitespace only)")
		case strings.TrimSpace(s) != s:
			// Not trimmed: Heap matches identities exactly, so trimming could delete
			// someone else, or no one.
			return fail(reasonBadField, "identity has leading or trailing whitespace")
		case len(s) > maxIdentity:
			return fail(reasonBadField, "identity is longer than 1024 bytes")
		}
		c.Identity = s
	} else {
		id, ok := parseUserID(f.userID)
		if !ok {
			return fail(reasonBadField, "user_id must be an integer from 1 to 18446744073709551615, as a JSON number or decimal string")
		}
		c.UserID = id
	}
	if !isNull(f.deadline) {
		s, ok := stringValue(f.deadline)
		if !ok {
			return fail(reasonBadField, "deadline must be an RFC 3339 time string")
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return fail(reasonBadField, "deadline is not an RFC 3339 time")
		}
		c.Deadline = t
	}
	return c, nil
}

// isNull reports whether a raw member value is absent or JSON null; both mean "not
// given".
func isNull(v []byte) bool { return v == nil || string(v) == "null" }

// parseUserID accepts a JSON integer or a decimal string: digits only, no sign,
// fraction, exponent or leading zero, from 1 to the largest uint64.
func parseUserID(v []byte) (uint64, bool) {
	digits := v
	if len(v) > 0 && v[0] == '"' {
		s, ok := stringValue(v)
		if !ok {
			return 0, false
		}
		digits = []byte(s)
	}
	if len(digits) == 0 || len(digits) > 20 || digits[0] == '0' {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	return n, err == nil
}

// validRequestID reports whether s is 1-128 characters of [A-Za-z0-9._:-].
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > maxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// recoverRequestID reads a valid request_id from a body that failed validation,
// best effort: the top-level request_id (binary mode, or a flattened envelope), else
// the request_id of a top-level "data" object (structured mode). It returns "" when
// the body is not JSON or the request id is missing, invalid or ambiguous.
func recoverRequestID(body []byte) string {
	if len(body) == 0 || len(body) > recoverLimit || !json.Valid(body) {
		return ""
	}
	f, ok := scanData(body)
	if !ok {
		return ""
	}
	if rid, ok := f.readRequestID(); ok {
		return rid
	}
	if f.requestID != nil {
		return ""
	}
	// Structured mode: every "data" member must yield the same request id.
	rid := ""
	ok = true
	forEachMember(body, func(k, v []byte) bool {
		if !keyIs(k, "data") {
			return true
		}
		var r string
		if len(v) > 0 && v[0] == '{' {
			if f, isObj := scanData(v); isObj {
				r, _ = f.readRequestID()
			}
		}
		if r == "" || (rid != "" && r != rid) {
			ok = false
			return false
		}
		rid = r
		return true
	})
	if !ok {
		return ""
	}
	return rid
}

// Defaults [NewCommandMsg] uses for a Command's empty CloudEvent fields.
const (
	DefaultPublishSource = "heapdel-publish"
)

type commandData struct {
	RequestID string `json:"request_id"`
	Identity  string `json:"identity,omitempty"`
	UserID    uint64 `json:"user_id,omitempty"`
	Deadline  string `json:"deadline,omitempty"`
}

// NewCommandMsg builds a deletion command message for subject, in binary mode, or in
// structured mode when structured is true. It writes what c holds (the CloudEvent id
// defaults to a new UUID, the source to "heapdel-publish", the type to
// "heap.deletion.requested", the time to now) and does not validate it, so tests can
// build invalid commands too: an identity is written when non-empty, a user_id (as an
// exact JSON integer) when non-zero, and the trace context attributes when
// non-empty. An error means the SDK could not encode the event.
func NewCommandMsg(subject string, c Command, structured bool) (*nats.Msg, error) {
	d := commandData{RequestID: c.RequestID, Identity: c.Identity, UserID: c.UserID}
	if !c.Deadline.IsZero() {
		d.Deadline = c.Deadline.Format(time.RFC3339Nano)
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode command data: %w", err)
	}
	e := event.New()
	e.SetID(cmp(c.EventID, uuid.NewString()))
	e.SetSource(cmp(c.Source, DefaultPublishSource))
	e.SetType(cmp(c.Type, DefaultCommandType))
	t := c.Time
	if t.IsZero() {
		t = time.Now()
	}
	e.SetTime(t)
	e.SetDataContentType(ctJSON)
	e.DataEncoded = data
	if c.TraceParent != "" {
		e.SetExtension(extTraceParent, c.TraceParent)
	}
	if c.TraceState != "" {
		e.SetExtension(extTraceState, c.TraceState)
	}
	return writeMsg(subject, &e, structured)
}

func cmp(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// bodySink receives the encoded body from the SDK, taking a *bytes.Buffer's bytes
// without copying them again.
type bodySink struct{ b []byte }

func (s *bodySink) ReadFrom(r io.Reader) (int64, error) {
	if bb, ok := r.(*bytes.Buffer); ok {
		s.b = bb.Bytes()
		return int64(len(s.b)), nil
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(r)
	s.b = buf.Bytes()
	return n, err
}

// writeMsg encodes e with the SDK's NATS JetStream binding. Structured mode sets
// "content-type: application/cloudevents+json", which is how the CloudEvents NATS
// binding tells the modes apart. Binary mode sets no "content-type": the binding
// maps datacontenttype to ce-datacontenttype only (unlike the HTTP binding).
func writeMsg(subject string, e *event.Event, structured bool) (*nats.Msg, error) {
	ctx := binding.WithForceBinary(context.Background())
	if structured {
		ctx = binding.WithForceStructured(context.Background())
	}
	var sink bodySink
	h, err := cejs.WriteMsg(ctx, binding.ToMessage(e), &sink)
	if err != nil {
		return nil, fmt.Errorf("encode cloudevent: %w", err)
	}
	if h == nil {
		h = make(nats.Header, 2)
	}
	if structured {
		h.Set(hdrContentType, ctCloudEvents)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: sink.b}, nil
}
