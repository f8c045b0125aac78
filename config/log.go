package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// redacted stands in for a secret that is set.
const redacted = "[redacted]"

// MarshalZerologObject writes every setting, keyed by its variable's name
// without HEAPDEL_ in lower case (batch_size), for the start-up log line.
// Secrets show as "[redacted]" when set and "" when not; a derived identity
// hash key shows as "[derived]"; credentials in URLs are replaced.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	for _, s := range settings() {
		key := logKey(s.env)
		v := s.get(&c)
		if s.secret {
			switch {
			case s.env == "HEAPDEL_IDENTITY_HASH_KEY" && c.hashKeyDerived:
				e.Str(key, "[derived]")
			case v != "":
				e.Str(key, redacted)
			default:
				e.Str(key, "")
			}
			continue
		}
		switch s.env {
		case "HEAPDEL_NATS_URL", "HEAPDEL_HEAP_BASE_URL":
			v = RedactURLs(v.(string))
		}
		switch v := v.(type) {
		case string:
			e.Str(key, v)
		case Behavior:
			e.Str(key, string(v))
		case int:
			e.Int(key, v)
		case float64:
			e.Float64(key, v)
		case bool:
			e.Bool(key, v)
		case time.Duration:
			e.Str(key, formatDuration(v))
		case []string:
			e.Strs(key, v)
		}
	}
}

// RedactURLs returns a comma list of URLs with each URL's user information (a
// NATS password or token) replaced, for logs and error messages.
func RedactURLs(list string) string {
	if list == "" {
		return ""
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "[unparsable URL]"
			continue
		}
		parts[i] = redactURL(u)
	}
	return strings.Join(parts, ",")
}
