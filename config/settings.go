package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/heapdel/heapdel/heapclient"
)

// setting is one configuration variable: its environment name, its help text,
// how to read it from a string into a Config and back out, and its own rules.
// The flag name and the log key derive from the environment name.
type setting struct {
	env    string
	usage  string // what it is; the help adds the variable and the default
	def    string // default as shown in help, when not simply the Default() value
	nats   bool   // part of SetNATS
	secret bool   // never shown, never echoed in an error
	extra  bool   // beyond SPEC.md's table
	isBool bool

	get   func(c *Config) any
	parse func(c *Config, v string) error // the error text is the reason only
	check func(c *Config) error           // rules of this one setting; nil when none
}

// flagName returns the flag that maps to an environment variable:
// HEAPDEL_BATCH_SIZE → batch-size.
func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(env, "HEAPDEL_")), "_", "-")
}

// logKey returns the key of a setting in the redacted log object:
// HEAPDEL_BATCH_SIZE → batch_size.
func logKey(env string) string {
	return strings.ToLower(strings.TrimPrefix(env, "HEAPDEL_"))
}

// help returns the flag usage text: what it is, then the variable and default.
func (s setting) help() string {
	d := s.def
	if d == "" {
		c := Default()
		d = formatValue(s.get(&c))
		if d != "" {
			d = "default " + d
		}
	}
	var b strings.Builder
	b.WriteString(s.usage)
	b.WriteString(" (")
	if s.extra {
		b.WriteString("extra; ")
	}
	b.WriteString("env ")
	b.WriteString(s.env)
	if d != "" {
		b.WriteString(", ")
		b.WriteString(d)
	}
	b.WriteString(")")
	return b.String()
}

// formatValue renders a setting's value the way a user would type it.
func formatValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case Behavior:
		return string(v)
	case int:
		return strconv.Itoa(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case time.Duration:
		return formatDuration(v)
	case []string:
		return strings.Join(v, ",")
	}
	return fmt.Sprint(v)
}

// formatDuration drops the zero units time.Duration.String adds: 1m, not 1m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// settings returns every setting, in help order.
func settings() []setting {
	return []setting{
		{
			env: "HEAPDEL_NATS_URL", nats: true,
			usage: "NATS server URLs, comma-separated (nats://, tls://, ws://, wss://); empty starts an embedded JetStream server",
			get:   func(c *Config) any { return c.NATSURL },
			parse: func(c *Config, v string) error { c.NATSURL = v; return nil },
			check: func(c *Config) error { return checkNATSURLs(c.NATSURL) },
		},
		fileSetting("HEAPDEL_NATS_CREDS", "NATS credentials (.creds) file", func(c *Config) *string { return &c.NATSCreds }),
		fileSetting("HEAPDEL_NATS_NKEY", "NATS nkey seed file", func(c *Config) *string { return &c.NATSNKey }),
		stringSetting("HEAPDEL_NATS_USER", "NATS user name, with HEAPDEL_NATS_PASSWORD", true, func(c *Config) *string { return &c.NATSUser }, nil),
		secretSetting("HEAPDEL_NATS_PASSWORD", "NATS password; prefer the environment variable: a flag shows in the process list", true, func(c *Config) *string { return &c.NATSPassword }),
		secretSetting("HEAPDEL_NATS_TOKEN", "NATS token; prefer the environment variable: a flag shows in the process list", true, func(c *Config) *string { return &c.NATSToken }),
		fileSetting("HEAPDEL_NATS_TLS_CA", "PEM file of the CA certificates that verify the NATS servers", func(c *Config) *string { return &c.NATSTLSCA }),
		fileSetting("HEAPDEL_NATS_TLS_CERT", "PEM client certificate file for NATS, with HEAPDEL_NATS_TLS_KEY", func(c *Config) *string { return &c.NATSTLSCert }),
		fileSetting("HEAPDEL_NATS_TLS_KEY", "PEM private key file of the NATS client certificate", func(c *Config) *string { return &c.NATSTLSKey }),
		stringSetting("HEAPDEL_DATA_DIR", "storage directory of the embedded NATS server", true, func(c *Config) *string { return &c.DataDir }, nonEmpty),

		{
			env: "HEAPDEL_HEAP_APP_ID", def: "required",
			usage: "Heap app id: the id of the Main Production environment",
			get:   func(c *Config) any { return c.HeapAppID },
			parse: func(c *Config, v string) error { c.HeapAppID = v; return nil },
			check: func(c *Config) error {
				switch {
				case c.HeapAppID == "":
					return fmt.Errorf("is required")
				case strings.ContainsFunc(c.HeapAppID, unicode.IsSpace):
					return fmt.Errorf("must not contain whitespace, got %q", c.HeapAppID)
				}
				return nil
			},
		},
		{
			env: "HEAPDEL_HEAP_API_KEY", def: "required unless HEAPDEL_HEAP_API_KEY_FILE is set", secret: true,
			usage: "Heap API key, surrounding whitespace trimmed; prefer the environment variable or --heap-api-key-file: a flag shows in the process list",
			get:   func(c *Config) any { return c.HeapAPIKey },
			parse: func(c *Config, v string) error { c.HeapAPIKey = strings.TrimSpace(v); return nil },
		},
		{
			env:   "HEAPDEL_HEAP_API_KEY_FILE",
			usage: "file holding the Heap API key (surrounding whitespace trimmed), instead of HEAPDEL_HEAP_API_KEY; read again when Heap refuses the key, so a rotated Secret needs no restart",
			get:   func(c *Config) any { return c.HeapAPIKeyFile },
			parse: func(c *Config, v string) error { c.HeapAPIKeyFile = v; return nil },
			check: func(c *Config) error { return checkKeyFile(c.HeapAPIKeyFile) },
		},
		{
			env:   "HEAPDEL_HEAP_BASE_URL",
			usage: "Heap API base URL; plain http only to a loopback host (the simulator)",
			get:   func(c *Config) any { return c.HeapBaseURL },
			parse: func(c *Config, v string) error { c.HeapBaseURL = v; return nil },
			check: func(c *Config) error { return checkBaseURL(c.HeapBaseURL) },
		},
		{
			env:   "HEAPDEL_HEAP_RATE",
			usage: "Heap requests per second (token bucket), more than 0",
			get:   func(c *Config) any { return c.HeapRate },
			parse: func(c *Config, v string) error {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return fmt.Errorf("must be a number greater than 0 (such as 1 or 0.5), got %q", v)
				}
				c.HeapRate = f
				return nil
			},
			check: func(c *Config) error {
				if !(c.HeapRate > 0) || math.IsInf(c.HeapRate, 0) {
					return fmt.Errorf("must be a number greater than 0 (such as 1 or 0.5), got %q", formatValue(c.HeapRate))
				}
				return nil
			},
		},
		intSetting("HEAPDEL_HEAP_BURST", "Heap requests allowed at once above the rate (token bucket size)", func(c *Config) *int { return &c.HeapBurst }, 1, 0, true),
		durationSetting("HEAPDEL_HEAP_TIMEOUT", "time limit of one Heap request", func(c *Config) *time.Duration { return &c.HeapTimeout }, 1, 0, true),

		{
			env:   "HEAPDEL_DELETION_BEHAVIOR",
			usage: "until-complete (follow each deletion until Heap reports it complete) or on-submit (complete once Heap accepts it)",
			get:   func(c *Config) any { return c.DeletionBehavior },
			parse: func(c *Config, v string) error { c.DeletionBehavior = Behavior(v); return nil },
			check: func(c *Config) error {
				return checkEnum(string(c.DeletionBehavior), string(BehaviorUntilComplete), string(BehaviorOnSubmit))
			},
		},
		intSetting("HEAPDEL_BATCH_SIZE", "users per Heap request, 1–10000", func(c *Config) *int { return &c.BatchSize }, 1, 10000, false),
		durationSetting("HEAPDEL_BATCH_WAIT", "longest a command waits for its batch to fill, at most 1m", func(c *Config) *time.Duration { return &c.BatchWait }, 1, time.Minute, false),
		durationSetting("HEAPDEL_RECHECK_INTERVAL", "how often the recheck tick fires, at least 1s", func(c *Config) *time.Duration { return &c.RecheckInterval }, time.Second, 0, false),
		durationSetting("HEAPDEL_POLL_MAX_INTERVAL", "longest gap between two status checks of one Heap request, at least the recheck interval", func(c *Config) *time.Duration { return &c.PollMaxInterval }, 1, 0, false),
		durationSetting("HEAPDEL_MAX_PENDING", "after this, a still-pending deletion fails with reason timeout", func(c *Config) *time.Duration { return &c.MaxPending }, 1, 0, false),

		{
			env: "HEAPDEL_SUBJECT_PREFIX", nats: true,
			usage: "prefix of every subject; the stream and bucket names derive from it",
			get:   func(c *Config) any { return c.SubjectPrefix },
			parse: func(c *Config, v string) error { c.SubjectPrefix = v; return nil },
			check: func(c *Config) error { return checkSubjectPrefix(c.SubjectPrefix) },
		},
		stringSetting("HEAPDEL_HTTP_ADDR", "listen address (host:port) of /metrics, /healthz and /readyz", false, func(c *Config) *string { return &c.HTTPAddr }, checkHostPort),
		stringSetting("HEAPDEL_LOG_LEVEL", "debug, info, warn or error", true, func(c *Config) *string { return &c.LogLevel }, func(v string) error {
			return checkEnum(v, "debug", "info", "warn", "error")
		}),
		stringSetting("HEAPDEL_LOG_FORMAT", "json, or console for humans", true, func(c *Config) *string { return &c.LogFormat }, func(v string) error {
			return checkEnum(v, "json", "console")
		}),

		{
			env: "HEAPDEL_PROVISION", extra: true, isBool: true,
			usage: "create or update the streams, the consumer and the key-value store at start; false for locked-down accounts",
			get:   func(c *Config) any { return c.Provision },
			parse: func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("must be true or false, got %q", v)
				}
				c.Provision = b
				return nil
			},
		},
		extra(stringSetting("HEAPDEL_EVENT_SOURCE", "CloudEvents source of status events", false, func(c *Config) *string { return &c.EventSource }, nonEmpty)),
		{
			env: "HEAPDEL_EVENT_TYPES", extra: true,
			usage: "accepted CloudEvents types of deletion commands, comma-separated",
			get:   func(c *Config) any { return c.EventTypes },
			parse: func(c *Config, v string) error {
				c.EventTypes = strings.Split(v, ",")
				for i := range c.EventTypes {
					c.EventTypes[i] = strings.TrimSpace(c.EventTypes[i])
				}
				return nil
			},
			check: func(c *Config) error {
				if len(c.EventTypes) == 0 {
					return fmt.Errorf("must list at least one type")
				}
				for _, t := range c.EventTypes {
					if t == "" || strings.ContainsFunc(t, unicode.IsSpace) {
						return fmt.Errorf("must be a comma-separated list of types without spaces, got %q", strings.Join(c.EventTypes, ","))
					}
				}
				return nil
			},
		},
		extra(stringSetting("HEAPDEL_STATUS_ENCODING", "CloudEvents mode of status events: binary or structured", false, func(c *Config) *string { return &c.StatusEncoding }, func(v string) error {
			return checkEnum(v, EncodingBinary, EncodingStructured)
		})),
		durationSetting("HEAPDEL_STATUS_MAX_AGE", "age limit of the status stream", func(c *Config) *time.Duration { return &c.StatusMaxAge }, 1, 0, true),
		durationSetting("HEAPDEL_JOB_RETENTION", "how long a finished job is kept; a repeated request id is recognised for this long", func(c *Config) *time.Duration { return &c.JobRetention }, 1, 0, true),
		intSetting("HEAPDEL_MAX_MESSAGE_BYTES", "largest deletion command accepted, in bytes", func(c *Config) *int { return &c.MaxMessageBytes }, 1024, 64<<20, true),
		extra(intSetting("HEAPDEL_STREAM_REPLICAS", "replicas of the streams and key-value buckets heapdel provisions, 1–5 (3 on a NATS cluster)", func(c *Config) *int { return &c.StreamReplicas }, 1, 5, true)),
		extra(stringSetting("HEAPDEL_CONSUMER_NAME", "durable consumer name, shared by all replicas", false, func(c *Config) *string { return &c.ConsumerName }, checkName)),
		{
			env: "HEAPDEL_IDENTITY_HASH_KEY", extra: true, secret: true,
			def:   "default derived from the Heap API key",
			usage: "key of the hash of identities kept in job state, at least 16 characters; set it to keep hashes stable when the API key changes; prefer the environment variable or --identity-hash-key-file",
			get:   func(c *Config) any { return c.IdentityHashKey },
			parse: func(c *Config, v string) error { c.IdentityHashKey = v; return nil },
			check: func(c *Config) error {
				if c.IdentityHashKey != "" && len(c.IdentityHashKey) < 16 {
					return fmt.Errorf("must be at least 16 characters long")
				}
				return nil
			},
		},
		{
			env: "HEAPDEL_IDENTITY_HASH_KEY_FILE", extra: true,
			usage: "file holding the identity hash key (surrounding whitespace trimmed), instead of HEAPDEL_IDENTITY_HASH_KEY",
			get:   func(c *Config) any { return c.IdentityHashKeyFile },
			parse: func(c *Config, v string) error { c.IdentityHashKeyFile = v; return nil },
			check: func(c *Config) error { return checkKeyFile(c.IdentityHashKeyFile) },
		},
		durationSetting("HEAPDEL_SHUTDOWN_TIMEOUT", "bound on the graceful shutdown", func(c *Config) *time.Duration { return &c.ShutdownTimeout }, 1, 0, true),
	}
}

func extra(s setting) setting { s.extra = true; return s }

func stringSetting(env, usage string, nats bool, f func(*Config) *string, check func(string) error) setting {
	s := setting{
		env: env, usage: usage, nats: nats,
		get:   func(c *Config) any { return *f(c) },
		parse: func(c *Config, v string) error { *f(c) = v; return nil },
	}
	if check != nil {
		s.check = func(c *Config) error { return check(*f(c)) }
	}
	return s
}

func secretSetting(env, usage string, nats bool, f func(*Config) *string) setting {
	s := stringSetting(env, usage, nats, f, nil)
	s.secret = true
	return s
}

// fileSetting is a NATS file path: when set, the file must be readable.
func fileSetting(env, usage string, f func(*Config) *string) setting {
	return stringSetting(env, usage, true, f, func(path string) error {
		if path == "" {
			return nil
		}
		return checkReadable(path)
	})
}

// intSetting is a whole number from lo to hi (no upper bound when hi is 0).
func intSetting(env, usage string, f func(*Config) *int, lo, hi int, isExtra bool) setting {
	rule := fmt.Sprintf("must be a whole number from %d to %d", lo, hi)
	if hi == 0 {
		rule = fmt.Sprintf("must be a whole number of at least %d", lo)
	}
	return setting{
		env: env, usage: usage, extra: isExtra,
		get: func(c *Config) any { return *f(c) },
		parse: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s, got %q", rule, v)
			}
			*f(c) = n
			return nil
		},
		check: func(c *Config) error {
			if n := *f(c); n < lo || (hi != 0 && n > hi) {
				return fmt.Errorf("%s, got %q", rule, strconv.Itoa(n))
			}
			return nil
		},
	}
}

// durationSetting is a Go duration from lo to hi (no upper bound when hi is 0;
// lo of 1ns reads as "more than 0").
func durationSetting(env, usage string, f func(*Config) *time.Duration, lo, hi time.Duration, isExtra bool) setting {
	var rule string
	switch {
	case lo <= 1 && hi == 0:
		rule = "must be a duration greater than 0"
	case lo <= 1:
		rule = "must be a duration greater than 0 and at most " + formatDuration(hi)
	case hi == 0:
		rule = "must be a duration of at least " + formatDuration(lo)
	default:
		rule = "must be a duration from " + formatDuration(lo) + " to " + formatDuration(hi)
	}
	rule += " (such as 30s, 5m or 24h)"
	return setting{
		env: env, usage: usage, extra: isExtra,
		get: func(c *Config) any { return *f(c) },
		parse: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s, got %q", rule, v)
			}
			*f(c) = d
			return nil
		},
		check: func(c *Config) error {
			if d := *f(c); d < lo || (hi != 0 && d > hi) {
				return fmt.Errorf("%s, got %q", rule, formatDuration(d))
			}
			return nil
		},
	}
}

func nonEmpty(v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("must not be empty")
	}
	return nil
}

func checkEnum(v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Errorf("must be one of %s, got %q", strings.Join(quoted, ", "), v)
}

// checkReadable reports whether path names a readable regular file.
func checkReadable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read the file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot read the file: %w", err)
	}
	if st.IsDir() {
		return fmt.Errorf("cannot read the file: %s is a directory", path)
	}
	return nil
}

// readKeyFile returns the trimmed contents of a key file; an empty key is an error.
// The error never holds the file's contents.
func readKeyFile(path string) (string, error) {
	if err := checkReadable(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the file: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return "", fmt.Errorf("the file %s is empty", path)
	}
	return key, nil
}

func checkKeyFile(path string) error {
	if path == "" {
		return nil
	}
	_, err := readKeyFile(path)
	return err
}

// checkNATSURLs accepts a comma-separated list of NATS URLs, or nothing (the
// embedded server). Errors never echo credentials a URL may carry.
func checkNATSURLs(list string) error {
	if strings.TrimSpace(list) == "" {
		return nil
	}
	const rule = "must be a comma-separated list of nats://, tls://, ws:// or wss:// URLs"
	for i, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("%s; entry %d is not a URL", rule, i+1)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("%s, got %q", rule, redactURL(u))
		}
		if u.Hostname() == "" {
			return fmt.Errorf("%s; %q has no host", rule, redactURL(u))
		}
	}
	return nil
}

// redactURL returns u as text with any user information replaced: NATS URLs
// may carry a user and password, or a token in the user position.
func redactURL(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	r := *u
	r.User = url.User("redacted")
	return r.String()
}

// checkBaseURL accepts an absolute https URL, or http to a loopback host.
func checkBaseURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" {
		shown := raw
		if err == nil {
			shown = redactURL(u)
		} else {
			shown = "an unparsable URL"
		}
		return fmt.Errorf("must be an absolute http(s) URL with a host, got %q", shown)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if heapclient.IsLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("plain http is allowed only to a loopback host: use https, or a loopback host for the simulator, got %q", redactURL(u))
	}
	return fmt.Errorf("must be an absolute http(s) URL with a host, got %q", redactURL(u))
}

// checkSubjectPrefix accepts dot-separated tokens of letters, digits, '_' and
// '-'. That is narrower than NATS allows, because the stream and key-value
// bucket names derive from the prefix and those take only [A-Za-z0-9_-].
func checkSubjectPrefix(p string) error {
	if p == "" {
		return fmt.Errorf("must not be empty")
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" || !isName(tok) {
			return fmt.Errorf("must be dot-separated tokens of letters, digits, '_' or '-' (no wildcards, no spaces), got %q", p)
		}
	}
	return nil
}

func checkName(v string) error {
	if !isName(v) {
		return fmt.Errorf("must be letters, digits, '_' or '-', got %q", v)
	}
	return nil
}

func isName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func checkHostPort(v string) error {
	const rule = "must be host:port, such as :9090 or 127.0.0.1:9090"
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%s, got %q", rule, v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s, got %q", rule, v)
	}
	return nil
}
