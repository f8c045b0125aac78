package events

import (
	"mime"
	"strings"

	"github.com/nats-io/nats.go"
)

// maxHeaders bounds the header values a command may carry, so a message with
// thousands of headers is refused after counting, before any parsing.
const maxHeaders = 64

const (
	hdrContentType  = "content-type"
	hdrSpecVersion  = "ce-specversion"
	hdrDataCT       = "ce-datacontenttype"
	ctCloudEvents   = "application/cloudevents+json"
	ctJSON          = "application/json"
	headerLineExtra = len(": \r\n") // wire bytes per header line beyond key and value
)

// checkSize refuses a message whose data plus header bytes exceed maxBytes or that
// has more than maxHeaders header values. It stops counting as soon as either limit
// is passed.
func checkSize(h nats.Header, data []byte, maxBytes int) *InvalidError {
	if len(h) > maxHeaders {
		return invalid(reasonTooLarge, "more than 64 headers")
	}
	size, n := len(data), 0
	if size > maxBytes {
		return invalid(reasonTooLarge, "message larger than the size limit")
	}
	for k, vs := range h {
		for _, v := range vs {
			n++
			size += len(k) + len(v) + headerLineExtra
			if n > maxHeaders {
				return invalid(reasonTooLarge, "more than 64 headers")
			}
		}
		if size > maxBytes {
			return invalid(reasonTooLarge, "message larger than the size limit")
		}
	}
	return nil
}

// isCEHeader reports whether k names a CloudEvents header ("ce-" in any case).
func isCEHeader(k string) bool {
	return len(k) >= 3 && k[0]|0x20 == 'c' && k[1]|0x20 == 'e' && k[2] == '-'
}

func isSDKHeader(k string) bool {
	return isCEHeader(k) || strings.EqualFold(k, hdrContentType)
}

// canonicalHeader returns the header the CloudEvents SDK should read: the lowercase
// "ce-" names and "content-type" it looks up, one value each. When h is already in
// that form it is returned as is (no copy on the hot path); otherwise a normalised
// copy holding only the headers the SDK reads. The caller's header is never changed.
// A header given twice (two values, or two spellings such as "ce-id" and "Ce-Id") is
// a doubled field.
func canonicalHeader(h nats.Header) (nats.Header, *InvalidError) {
	clean := true
	for k, vs := range h {
		if len(vs) == 0 {
			// The SDK reads v[0] of every header; an empty one must not reach it.
			clean = false
			continue
		}
		if !isSDKHeader(k) {
			continue
		}
		if len(vs) > 1 {
			return nil, invalid(reasonBadField, "header "+safeText(strings.ToLower(k))+" given more than once")
		}
		if strings.ToLower(k) != k {
			clean = false
		}
	}
	if clean {
		return h, nil
	}
	out := make(nats.Header, len(h))
	for k, vs := range h {
		if len(vs) == 0 || !isSDKHeader(k) {
			continue
		}
		lk := strings.ToLower(k)
		if _, dup := out[lk]; dup {
			return nil, invalid(reasonBadField, "header "+safeText(lk)+" given more than once")
		}
		out[lk] = vs
	}
	return out, nil
}

// mediaType returns the lowercased media type of a content type, without parameters.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}

// isJSONType reports whether a datacontenttype names JSON: application/json or any
// "+json" structured syntax suffix.
func isJSONType(ct string) bool {
	mt := mediaType(ct)
	return mt == ctJSON || (strings.HasSuffix(mt, "+json") && strings.IndexByte(mt, '/') > 0)
}

// checkContentTypes checks, in binary mode, that content-type and
// ce-datacontenttype agree when both are given: the SDK takes whichever it reads
// last as the datacontenttype, so they must say the same thing. They agree when
// they name the same media type (in any case, as RFC 2045 allows) and no parameter
// has a different value in each (charset compared in any case); a parameter given in
// one only is no conflict, so "application/json; charset=utf-8" agrees with
// "application/json".
func checkContentTypes(h nats.Header) *InvalidError {
	ct, dct := h.Get(hdrContentType), h.Get(hdrDataCT)
	if ct == "" || dct == "" || ct == dct {
		return nil
	}
	mt1, p1, err1 := mime.ParseMediaType(ct)
	mt2, p2, err2 := mime.ParseMediaType(dct)
	if err1 != nil || err2 != nil {
		// What the SDK's validation says of either one alone.
		return invalid(reasonNotCloudEvent, "invalid CloudEvent attributes: datacontenttype")
	}
	if mt1 != mt2 {
		return invalid(reasonBadField, "content-type and ce-datacontenttype disagree: different media types")
	}
	for k, v := range p1 {
		if w, both := p2[k]; both && v != w && !(k == "charset" && strings.EqualFold(v, w)) {
			return invalid(reasonBadField, "content-type and ce-datacontenttype disagree: a parameter has different values")
		}
	}
	return nil
}

// sdkReadsAsJSON reports whether the CloudEvents SDK (v2.16) reads structured-mode
// data of content type ct as JSON, as its GetDataMediaType and isJSON do: the media
// type as written, case and all, trimmed only when parameters follow, and no "+json"
// type but its own; ct == "" means JSON.
func sdkReadsAsJSON(ct string) bool {
	mt := ct
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		mt = strings.TrimSpace(ct[:i])
	}
	switch mt {
	case "", ctJSON, "text/json", ctCloudEvents, "application/cloudevents-batch+json":
		return true
	}
	return false
}
