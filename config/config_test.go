package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

const testKey = "test-api-key-0001"

// load builds a Loader on a fresh flag set, parses args, and loads.
func load(t *testing.T, set Set, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("heapdel run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := NewLoader(fs, func(k string) string { return env[k] }, set)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return l.Load()
}

// baseEnv is the least a full configuration needs, changed by pairs of
// variable and value; an empty value removes the variable.
func baseEnv(kv ...string) map[string]string {
	env := map[string]string{"HEAPDEL_HEAP_APP_ID": "1234567", "HEAPDEL_HEAP_API_KEY": testKey}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(env, kv[i])
		} else {
			env[kv[i]] = kv[i+1]
		}
	}
	return env
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefault(t *testing.T) {
	want := Config{
		DataDir:          "./heapdel-data",
		HeapBaseURL:      "https://heapanalytics.com",
		DeletionBehavior: BehaviorUntilComplete,
		BatchSize:        1000,
		BatchWait:        time.Second,
		HeapRate:         1,
		HeapBurst:        1,
		HeapTimeout:      30 * time.Second,
		RecheckInterval:  time.Minute,
		PollMaxInterval:  time.Hour,
		MaxPending:       720 * time.Hour,
		SubjectPrefix:    "heap.deletion",
		HTTPAddr:         ":9090",
		LogLevel:         "info",
		LogFormat:        "json",
		Provision:        true,
		EventSource:      "heapdel",
		EventTypes:       []string{"heap.deletion.requested"},
		StatusEncoding:   "binary",
		StatusMaxAge:     720 * time.Hour,
		JobRetention:     2160 * time.Hour,
		MaxMessageBytes:  65536,
		ConsumerName:     "heapdel",
		StreamReplicas:   1,
		ShutdownTimeout:  30 * time.Second,
	}
	if got := Default(); !configEqual(got, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", got, want)
	}

	// Loading with only the required settings gives the defaults.
	got, err := load(t, SetAll, baseEnv())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want.HeapAppID, want.HeapAPIKey = "1234567", testKey
	want.IdentityHashKey = deriveHashKey(testKey)
	got.hashKeyDerived = false
	if !configEqual(got, want) {
		t.Errorf("Load() =\n%+v\nwant\n%+v", got, want)
	}
}

func configEqual(a, b Config) bool {
	return reflect.DeepEqual(a, b)
}

// TestVariables maps each variable to its field, from the environment, then
// with its flag overriding the environment.
func TestVariables(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	credsA, credsB := file("a.creds", "x"), file("b.creds", "x")
	keyA, keyB := file("key-a", "key-from-a\n"), file("key-b", "  key-from-b  ")
	hashA, hashB := file("hash-a", "hash-key-aaaaaaaaaaaa"), file("hash-b", "hash-key-bbbbbbbbbbbb\n")

	tests := []struct {
		env          string
		a, b         string // two valid values: environment, then flag
		field        func(Config) any
		wantA, wantB any
		with         []string // more of the environment, as for baseEnv
	}{
		{env: "HEAPDEL_NATS_URL", a: "nats://a:4222", b: "tls://b:4222,wss://c:443", field: func(c Config) any { return c.NATSURL }},
		{env: "HEAPDEL_NATS_CREDS", a: credsA, b: credsB, field: func(c Config) any { return c.NATSCreds }},
		{env: "HEAPDEL_NATS_NKEY", a: credsA, b: credsB, field: func(c Config) any { return c.NATSNKey }},
		{env: "HEAPDEL_NATS_USER", a: "ua", b: "ub", field: func(c Config) any { return c.NATSUser }, with: []string{"HEAPDEL_NATS_PASSWORD", "pw"}},
		{env: "HEAPDEL_NATS_PASSWORD", a: "pa", b: "pb", field: func(c Config) any { return c.NATSPassword }, with: []string{"HEAPDEL_NATS_USER", "u"}},
		{env: "HEAPDEL_NATS_TOKEN", a: "ta", b: "tb", field: func(c Config) any { return c.NATSToken }},
		{env: "HEAPDEL_NATS_TLS_CA", a: credsA, b: credsB, field: func(c Config) any { return c.NATSTLSCA }},
		{env: "HEAPDEL_NATS_TLS_CERT", a: credsA, b: credsB, field: func(c Config) any { return c.NATSTLSCert }, with: []string{"HEAPDEL_NATS_TLS_KEY", credsA}},
		{env: "HEAPDEL_NATS_TLS_KEY", a: credsA, b: credsB, field: func(c Config) any { return c.NATSTLSKey }, with: []string{"HEAPDEL_NATS_TLS_CERT", credsA}},
		{env: "HEAPDEL_DATA_DIR", a: "/var/a", b: "/var/b", field: func(c Config) any { return c.DataDir }},
		{env: "HEAPDEL_HEAP_APP_ID", a: "111", b: "222", field: func(c Config) any { return c.HeapAppID }},
		{env: "HEAPDEL_HEAP_API_KEY", a: "key-a", b: "key-b", field: func(c Config) any { return c.HeapAPIKey }},
		{env: "HEAPDEL_HEAP_API_KEY_FILE", a: keyA, b: keyB, field: func(c Config) any { return [2]string{c.HeapAPIKeyFile, c.HeapAPIKey} },
			wantA: [2]string{keyA, "key-from-a"}, wantB: [2]string{keyB, "key-from-b"}, with: []string{"HEAPDEL_HEAP_API_KEY", ""}},
		{env: "HEAPDEL_HEAP_BASE_URL", a: "https://eu.example.com", b: "http://127.0.0.1:8080", field: func(c Config) any { return c.HeapBaseURL }},
		{env: "HEAPDEL_HEAP_RATE", a: "2.5", b: "0.5", field: func(c Config) any { return c.HeapRate }, wantA: 2.5, wantB: 0.5},
		{env: "HEAPDEL_HEAP_BURST", a: "3", b: "7", field: func(c Config) any { return c.HeapBurst }, wantA: 3, wantB: 7},
		{env: "HEAPDEL_HEAP_TIMEOUT", a: "10s", b: "2m", field: func(c Config) any { return c.HeapTimeout }, wantA: 10 * time.Second, wantB: 2 * time.Minute},
		{env: "HEAPDEL_DELETION_BEHAVIOR", a: "on-submit", b: "until-complete", field: func(c Config) any { return c.DeletionBehavior }, wantA: BehaviorOnSubmit, wantB: BehaviorUntilComplete},
		{env: "HEAPDEL_BATCH_SIZE", a: "1", b: "10000", field: func(c Config) any { return c.BatchSize }, wantA: 1, wantB: 10000},
		{env: "HEAPDEL_BATCH_WAIT", a: "250ms", b: "1m", field: func(c Config) any { return c.BatchWait }, wantA: 250 * time.Millisecond, wantB: time.Minute},
		{env: "HEAPDEL_RECHECK_INTERVAL", a: "1s", b: "30s", field: func(c Config) any { return c.RecheckInterval }, wantA: time.Second, wantB: 30 * time.Second},
		{env: "HEAPDEL_POLL_MAX_INTERVAL", a: "2h", b: "90m", field: func(c Config) any { return c.PollMaxInterval }, wantA: 2 * time.Hour, wantB: 90 * time.Minute},
		{env: "HEAPDEL_MAX_PENDING", a: "48h", b: "1h", field: func(c Config) any { return c.MaxPending }, wantA: 48 * time.Hour, wantB: time.Hour},
		{env: "HEAPDEL_SUBJECT_PREFIX", a: "acme.heap-del", b: "x", field: func(c Config) any { return c.SubjectPrefix }},
		{env: "HEAPDEL_HTTP_ADDR", a: "127.0.0.1:0", b: "[::1]:9091", field: func(c Config) any { return c.HTTPAddr }},
		{env: "HEAPDEL_LOG_LEVEL", a: "debug", b: "error", field: func(c Config) any { return c.LogLevel }},
		{env: "HEAPDEL_LOG_FORMAT", a: "console", b: "json", field: func(c Config) any { return c.LogFormat }},
		{env: "HEAPDEL_PROVISION", a: "false", b: "true", field: func(c Config) any { return c.Provision }, wantA: false, wantB: true},
		{env: "HEAPDEL_EVENT_SOURCE", a: "urn:acme:heapdel", b: "https://acme.example/heapdel", field: func(c Config) any { return c.EventSource }},
		{env: "HEAPDEL_EVENT_TYPES", a: "a.b, c.d", b: "x", field: func(c Config) any { return strings.Join(c.EventTypes, "|") }, wantA: "a.b|c.d", wantB: "x"},
		{env: "HEAPDEL_STATUS_ENCODING", a: "structured", b: "binary", field: func(c Config) any { return c.StatusEncoding }},
		{env: "HEAPDEL_STATUS_MAX_AGE", a: "24h", b: "1h", field: func(c Config) any { return c.StatusMaxAge }, wantA: 24 * time.Hour, wantB: time.Hour},
		{env: "HEAPDEL_JOB_RETENTION", a: "48h", b: "8760h", field: func(c Config) any { return c.JobRetention }, wantA: 48 * time.Hour, wantB: 8760 * time.Hour},
		{env: "HEAPDEL_MAX_MESSAGE_BYTES", a: "1024", b: "1048576", field: func(c Config) any { return c.MaxMessageBytes }, wantA: 1024, wantB: 1048576},
		{env: "HEAPDEL_CONSUMER_NAME", a: "heapdel-eu", b: "heapdel_2", field: func(c Config) any { return c.ConsumerName }},
		{env: "HEAPDEL_STREAM_REPLICAS", a: "3", b: "5", field: func(c Config) any { return c.StreamReplicas }, wantA: 3, wantB: 5},
		{env: "HEAPDEL_IDENTITY_HASH_KEY", a: "hash-key-aaaaaaaaaaaa", b: "hash-key-bbbbbbbbbbbb", field: func(c Config) any { return c.IdentityHashKey }},
		{env: "HEAPDEL_IDENTITY_HASH_KEY_FILE", a: hashA, b: hashB, field: func(c Config) any { return [2]string{c.IdentityHashKeyFile, c.IdentityHashKey} },
			wantA: [2]string{hashA, "hash-key-aaaaaaaaaaaa"}, wantB: [2]string{hashB, "hash-key-bbbbbbbbbbbb"}},
		{env: "HEAPDEL_SHUTDOWN_TIMEOUT", a: "5s", b: "1m", field: func(c Config) any { return c.ShutdownTimeout }, wantA: 5 * time.Second, wantB: time.Minute},
	}

	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.env] = true
		wantA, wantB := tt.wantA, tt.wantB
		if wantA == nil {
			wantA, wantB = tt.a, tt.b
		}
		t.Run(tt.env, func(t *testing.T) {
			env := baseEnv(append([]string{tt.env, tt.a}, tt.with...)...)
			c, err := load(t, SetAll, env)
			if err != nil {
				t.Fatalf("env: Load: %v", err)
			}
			if got := tt.field(c); got != wantA {
				t.Errorf("env %s=%q: got %#v, want %#v", tt.env, tt.a, got, wantA)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after Load: %v", err)
			}

			c, err = load(t, SetAll, env, "--"+flagName(tt.env)+"="+tt.b)
			if err != nil {
				t.Fatalf("flag: Load: %v", err)
			}
			if got := tt.field(c); got != wantB {
				t.Errorf("flag --%s=%q over env %q: got %#v, want %#v", flagName(tt.env), tt.b, tt.a, got, wantB)
			}
		})
	}
	for _, s := range settings() {
		if !covered[s.env] {
			t.Errorf("%s has no case in this test", s.env)
		}
	}
}

func TestBoolFlag(t *testing.T) {
	env := baseEnv("HEAPDEL_PROVISION", "false")
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--provision"}, true},
		{[]string{"-provision=false"}, false},
	} {
		c, err := load(t, SetAll, env, tt.args...)
		if err != nil {
			t.Fatalf("%q: %v", tt.args, err)
		}
		if c.Provision != tt.want {
			t.Errorf("%q: Provision = %v, want %v", tt.args, c.Provision, tt.want)
		}
	}
}

// TestEmptyEnvIsUnset: an empty variable leaves the default, an empty flag
// does not.
func TestEmptyEnvIsUnset(t *testing.T) {
	c, err := load(t, SetAll, baseEnv("HEAPDEL_LOG_LEVEL", "", "HEAPDEL_NATS_URL", ""))
	if err != nil || c.LogLevel != "info" {
		t.Errorf("empty env: LogLevel %q, err %v", c.LogLevel, err)
	}
	env := baseEnv("HEAPDEL_NATS_URL", "nats://a:4222")
	c, err = load(t, SetAll, env, "--nats-url=")
	if err != nil || c.NATSURL != "" {
		t.Errorf("--nats-url= over env: NATSURL %q, err %v", c.NATSURL, err)
	}
}

func TestValidationErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	empty := writeFile(t, "empty", " \n")
	some := writeFile(t, "some", "x")
	const secret = "s3cret-value-42"

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // a line of the error, or its start
	}{
		{"app id missing", baseEnv("HEAPDEL_HEAP_APP_ID", ""), nil, "HEAPDEL_HEAP_APP_ID: is required"},
		{"app id whitespace", baseEnv("HEAPDEL_HEAP_APP_ID", "12 34"), nil, `HEAPDEL_HEAP_APP_ID: must not contain whitespace, got "12 34"`},
		{"app id flag", baseEnv(), []string{"--heap-app-id=1\t2"}, `HEAPDEL_HEAP_APP_ID (--heap-app-id): must not contain whitespace`},
		{"no api key", baseEnv("HEAPDEL_HEAP_API_KEY", ""), nil, "HEAPDEL_HEAP_API_KEY / HEAPDEL_HEAP_API_KEY_FILE: the Heap API key is required: set one of these"},
		{"api key twice", baseEnv("HEAPDEL_HEAP_API_KEY_FILE", some), nil, "HEAPDEL_HEAP_API_KEY / HEAPDEL_HEAP_API_KEY_FILE: set one of these, not both"},
		{"api key twice by flag", baseEnv("HEAPDEL_HEAP_API_KEY", ""), []string{"--heap-api-key=k", "--heap-api-key-file=" + some}, "HEAPDEL_HEAP_API_KEY (--heap-api-key) / HEAPDEL_HEAP_API_KEY_FILE (--heap-api-key-file): set one of these, not both"},
		{"api key file missing", baseEnv("HEAPDEL_HEAP_API_KEY", "", "HEAPDEL_HEAP_API_KEY_FILE", missing), nil, "HEAPDEL_HEAP_API_KEY_FILE: cannot read the file: open " + missing},
		{"api key file empty", baseEnv("HEAPDEL_HEAP_API_KEY", "", "HEAPDEL_HEAP_API_KEY_FILE", empty), nil, "HEAPDEL_HEAP_API_KEY_FILE: the file " + empty + " is empty"},
		{"base url plain http", baseEnv("HEAPDEL_HEAP_BASE_URL", "http://heapanalytics.com"), nil, "HEAPDEL_HEAP_BASE_URL: plain http is allowed only to a loopback host: use https, or a loopback host for the simulator"},
		{"base url relative", baseEnv("HEAPDEL_HEAP_BASE_URL", "heapanalytics.com"), nil, `HEAPDEL_HEAP_BASE_URL: must be an absolute http(s) URL with a host, got "heapanalytics.com"`},
		{"base url scheme", baseEnv("HEAPDEL_HEAP_BASE_URL", "ftp://heap"), nil, "HEAPDEL_HEAP_BASE_URL: must be an absolute http(s) URL"},
		{"base url no host", baseEnv("HEAPDEL_HEAP_BASE_URL", "https://:443"), nil, "HEAPDEL_HEAP_BASE_URL: must be an absolute http(s) URL"},
		{"behavior", baseEnv("HEAPDEL_DELETION_BEHAVIOR", "sometimes"), nil, `HEAPDEL_DELETION_BEHAVIOR: must be one of "until-complete", "on-submit", got "sometimes"`},
		{"batch size zero flag", baseEnv(), []string{"--batch-size=0"}, `HEAPDEL_BATCH_SIZE (--batch-size): must be a whole number from 1 to 10000, got "0"`},
		{"batch size text env", baseEnv("HEAPDEL_BATCH_SIZE", "lots"), nil, `HEAPDEL_BATCH_SIZE: must be a whole number from 1 to 10000, got "lots"`},
		{"batch size too big", baseEnv("HEAPDEL_BATCH_SIZE", "10001"), nil, `HEAPDEL_BATCH_SIZE: must be a whole number from 1 to 10000, got "10001"`},
		{"batch wait zero", baseEnv("HEAPDEL_BATCH_WAIT", "0s"), nil, "HEAPDEL_BATCH_WAIT: must be a duration greater than 0 and at most 1m"},
		{"batch wait long", baseEnv("HEAPDEL_BATCH_WAIT", "61s"), nil, `HEAPDEL_BATCH_WAIT: must be a duration greater than 0 and at most 1m (such as 30s, 5m or 24h), got "1m1s"`},
		{"batch wait text", baseEnv("HEAPDEL_BATCH_WAIT", "soon"), nil, `HEAPDEL_BATCH_WAIT: must be a duration greater than 0 and at most 1m (such as 30s, 5m or 24h), got "soon"`},
		{"batch wait no unit", baseEnv("HEAPDEL_BATCH_WAIT", "5"), nil, `HEAPDEL_BATCH_WAIT: must be a duration`},
		{"rate zero", baseEnv("HEAPDEL_HEAP_RATE", "0"), nil, `HEAPDEL_HEAP_RATE: must be a number greater than 0 (such as 1 or 0.5), got "0"`},
		{"rate negative", baseEnv("HEAPDEL_HEAP_RATE", "-1"), nil, "HEAPDEL_HEAP_RATE: must be a number greater than 0"},
		{"rate NaN", baseEnv("HEAPDEL_HEAP_RATE", "NaN"), nil, "HEAPDEL_HEAP_RATE: must be a number greater than 0"},
		{"rate Inf", baseEnv("HEAPDEL_HEAP_RATE", "+Inf"), nil, "HEAPDEL_HEAP_RATE: must be a number greater than 0"},
		{"rate text", baseEnv(), []string{"--heap-rate=fast"}, `HEAPDEL_HEAP_RATE (--heap-rate): must be a number greater than 0 (such as 1 or 0.5), got "fast"`},
		{"burst", baseEnv("HEAPDEL_HEAP_BURST", "0"), nil, `HEAPDEL_HEAP_BURST: must be a whole number of at least 1, got "0"`},
		{"heap timeout", baseEnv("HEAPDEL_HEAP_TIMEOUT", "-1s"), nil, "HEAPDEL_HEAP_TIMEOUT: must be a duration greater than 0"},
		{"recheck", baseEnv("HEAPDEL_RECHECK_INTERVAL", "500ms"), nil, `HEAPDEL_RECHECK_INTERVAL: must be a duration of at least 1s (such as 30s, 5m or 24h), got "500ms"`},
		{"poll max below recheck", baseEnv("HEAPDEL_RECHECK_INTERVAL", "10m", "HEAPDEL_POLL_MAX_INTERVAL", "5m"), nil, `HEAPDEL_POLL_MAX_INTERVAL: must be at least HEAPDEL_RECHECK_INTERVAL (10m), got "5m"`},
		{"recheck unreadable", baseEnv("HEAPDEL_RECHECK_INTERVAL", "often", "HEAPDEL_POLL_MAX_INTERVAL", "30s"), nil, `HEAPDEL_RECHECK_INTERVAL: must be a duration of at least 1s (such as 30s, 5m or 24h), got "often"`},
		{"poll max zero", baseEnv("HEAPDEL_POLL_MAX_INTERVAL", "0s"), nil, "HEAPDEL_POLL_MAX_INTERVAL: must be a duration greater than 0"},
		{"max pending", baseEnv("HEAPDEL_MAX_PENDING", "0s"), nil, "HEAPDEL_MAX_PENDING: must be a duration greater than 0"},
		{"prefix empty flag", baseEnv(), []string{"--subject-prefix="}, "HEAPDEL_SUBJECT_PREFIX (--subject-prefix): must not be empty"},
		{"prefix wildcard", baseEnv("HEAPDEL_SUBJECT_PREFIX", "heap.*"), nil, `HEAPDEL_SUBJECT_PREFIX: must be dot-separated tokens of letters, digits, '_' or '-' (no wildcards, no spaces), got "heap.*"`},
		{"prefix full wildcard", baseEnv("HEAPDEL_SUBJECT_PREFIX", "heap.>"), nil, "HEAPDEL_SUBJECT_PREFIX: must be dot-separated tokens"},
		{"prefix space", baseEnv("HEAPDEL_SUBJECT_PREFIX", "heap deletion"), nil, "HEAPDEL_SUBJECT_PREFIX: must be dot-separated tokens"},
		{"prefix empty token", baseEnv("HEAPDEL_SUBJECT_PREFIX", "heap..deletion"), nil, "HEAPDEL_SUBJECT_PREFIX: must be dot-separated tokens"},
		{"prefix trailing dot", baseEnv("HEAPDEL_SUBJECT_PREFIX", "heap."), nil, "HEAPDEL_SUBJECT_PREFIX: must be dot-separated tokens"},
		{"http addr no port", baseEnv("HEAPDEL_HTTP_ADDR", "9090"), nil, `HEAPDEL_HTTP_ADDR: must be host:port, such as :9090 or 127.0.0.1:9090, got "9090"`},
		{"http addr bad port", baseEnv("HEAPDEL_HTTP_ADDR", ":99999"), nil, "HEAPDEL_HTTP_ADDR: must be host:port"},
		{"http addr named port", baseEnv("HEAPDEL_HTTP_ADDR", ":http"), nil, "HEAPDEL_HTTP_ADDR: must be host:port"},
		{"log level", baseEnv("HEAPDEL_LOG_LEVEL", "verbose"), nil, `HEAPDEL_LOG_LEVEL: must be one of "debug", "info", "warn", "error", got "verbose"`},
		{"log format", baseEnv("HEAPDEL_LOG_FORMAT", "text"), nil, `HEAPDEL_LOG_FORMAT: must be one of "json", "console", got "text"`},
		{"provision", baseEnv("HEAPDEL_PROVISION", "maybe"), nil, `HEAPDEL_PROVISION: must be true or false, got "maybe"`},
		{"provision flag", baseEnv(), []string{"--provision=maybe"}, `HEAPDEL_PROVISION (--provision): must be true or false, got "maybe"`},
		{"event source", baseEnv("HEAPDEL_EVENT_SOURCE", " "), nil, "HEAPDEL_EVENT_SOURCE: must not be empty"},
		{"event types empty entry", baseEnv("HEAPDEL_EVENT_TYPES", "a,,b"), nil, `HEAPDEL_EVENT_TYPES: must be a comma-separated list of types without spaces, got "a,,b"`},
		{"event types space", baseEnv("HEAPDEL_EVENT_TYPES", "a b"), nil, "HEAPDEL_EVENT_TYPES: must be a comma-separated list"},
		{"status encoding", baseEnv("HEAPDEL_STATUS_ENCODING", "xml"), nil, `HEAPDEL_STATUS_ENCODING: must be one of "binary", "structured", got "xml"`},
		{"status max age", baseEnv("HEAPDEL_STATUS_MAX_AGE", "0s"), nil, "HEAPDEL_STATUS_MAX_AGE: must be a duration greater than 0"},
		{"job retention", baseEnv("HEAPDEL_JOB_RETENTION", "0s"), nil, "HEAPDEL_JOB_RETENTION: must be a duration greater than 0"},
		{"max message bytes", baseEnv("HEAPDEL_MAX_MESSAGE_BYTES", "100"), nil, `HEAPDEL_MAX_MESSAGE_BYTES: must be a whole number from 1024 to 67108864, got "100"`},
		{"consumer name", baseEnv("HEAPDEL_CONSUMER_NAME", "heap.del"), nil, `HEAPDEL_CONSUMER_NAME: must be letters, digits, '_' or '-', got "heap.del"`},
		{"hash key short", baseEnv("HEAPDEL_IDENTITY_HASH_KEY", "short"), nil, "HEAPDEL_IDENTITY_HASH_KEY: must be at least 16 characters long"},
		{"hash key twice", baseEnv("HEAPDEL_IDENTITY_HASH_KEY", "hash-key-aaaaaaaaaaaa", "HEAPDEL_IDENTITY_HASH_KEY_FILE", some), nil, "HEAPDEL_IDENTITY_HASH_KEY / HEAPDEL_IDENTITY_HASH_KEY_FILE: set one of these, not both"},
		{"hash key file missing", baseEnv("HEAPDEL_IDENTITY_HASH_KEY_FILE", missing), nil, "HEAPDEL_IDENTITY_HASH_KEY_FILE: cannot read the file"},
		{"shutdown timeout", baseEnv("HEAPDEL_SHUTDOWN_TIMEOUT", "0s"), nil, "HEAPDEL_SHUTDOWN_TIMEOUT: must be a duration greater than 0"},
		{"nats url no scheme", baseEnv("HEAPDEL_NATS_URL", "localhost:4222"), nil, `HEAPDEL_NATS_URL: must be a comma-separated list of nats://, tls://, ws:// or wss:// URLs, got "localhost:4222"`},
		{"nats url http", baseEnv("HEAPDEL_NATS_URL", "nats://a:4222,http://b:4222"), nil, `HEAPDEL_NATS_URL: must be a comma-separated list of nats://, tls://, ws:// or wss:// URLs, got "http://b:4222"`},
		{"nats url no host", baseEnv("HEAPDEL_NATS_URL", "nats://"), nil, `HEAPDEL_NATS_URL: must be a comma-separated list of nats://, tls://, ws:// or wss:// URLs; "nats:" has no host`},
		{"nats url empty entry", baseEnv("HEAPDEL_NATS_URL", "nats://a:4222,"), nil, "HEAPDEL_NATS_URL: must be a comma-separated list"},
		{"nats url hides credentials", baseEnv("HEAPDEL_NATS_URL", "http://u:"+secret+"@b:4222"), nil, `HEAPDEL_NATS_URL: must be a comma-separated list of nats://, tls://, ws:// or wss:// URLs, got "http://redacted@b:4222"`},
		{"nats creds missing", baseEnv("HEAPDEL_NATS_CREDS", missing), nil, "HEAPDEL_NATS_CREDS: cannot read the file: open " + missing},
		{"nats creds directory", baseEnv("HEAPDEL_NATS_CREDS", t.TempDir()), nil, "HEAPDEL_NATS_CREDS: cannot read the file: "},
		{"nats nkey missing", baseEnv("HEAPDEL_NATS_NKEY", missing), nil, "HEAPDEL_NATS_NKEY: cannot read the file"},
		{"nats tls ca missing", baseEnv("HEAPDEL_NATS_TLS_CA", missing), nil, "HEAPDEL_NATS_TLS_CA: cannot read the file"},
		{"nats tls cert missing", baseEnv("HEAPDEL_NATS_TLS_CERT", missing, "HEAPDEL_NATS_TLS_KEY", some), nil, "HEAPDEL_NATS_TLS_CERT: cannot read the file"},
		{"nats tls key missing", baseEnv("HEAPDEL_NATS_TLS_CERT", some, "HEAPDEL_NATS_TLS_KEY", missing), nil, "HEAPDEL_NATS_TLS_KEY: cannot read the file"},
		{"nats tls cert alone", baseEnv("HEAPDEL_NATS_TLS_CERT", some), nil, "HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY: set both or neither"},
		{"nats tls key alone", baseEnv(), []string{"--nats-tls-key=" + some}, "HEAPDEL_NATS_TLS_CERT / HEAPDEL_NATS_TLS_KEY (--nats-tls-key): set both or neither"},
		{"nats user alone", baseEnv("HEAPDEL_NATS_USER", "u"), nil, "HEAPDEL_NATS_USER / HEAPDEL_NATS_PASSWORD: set both or neither"},
		{"nats password alone", baseEnv("HEAPDEL_NATS_PASSWORD", secret), nil, "HEAPDEL_NATS_USER / HEAPDEL_NATS_PASSWORD: set both or neither"},
		{"nats two auth kinds", baseEnv("HEAPDEL_NATS_CREDS", some, "HEAPDEL_NATS_TOKEN", secret), nil, "HEAPDEL_NATS_CREDS / HEAPDEL_NATS_TOKEN: use one NATS authentication method (creds, nkey, user and password, or token), not several"},
		{"nats three auth kinds", baseEnv("HEAPDEL_NATS_NKEY", some, "HEAPDEL_NATS_USER", "u", "HEAPDEL_NATS_PASSWORD", secret), []string{"--nats-token=" + secret}, "HEAPDEL_NATS_NKEY / HEAPDEL_NATS_USER / HEAPDEL_NATS_TOKEN (--nats-token): use one NATS authentication method"},
		{"data dir empty", baseEnv(), []string{"--data-dir="}, "HEAPDEL_DATA_DIR (--data-dir): must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, SetAll, tt.env, tt.args...)
			if err == nil {
				t.Fatalf("Load succeeded, want an error starting %q", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, tt.want) }) {
				t.Errorf("error:\n%v\nwant a line starting\n%s", err, tt.want)
			}
			for _, l := range lines {
				if !strings.HasPrefix(l, "HEAPDEL_") {
					t.Errorf("line %q does not start with a variable name", l)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows a secret: %v", err)
			}
			if len(lines) != 1 {
				t.Errorf("want one line, got %d:\n%v", len(lines), err)
			}
		})
	}
}

func TestValidAccepted(t *testing.T) {
	for _, kv := range [][]string{
		{"HEAPDEL_HEAP_BASE_URL", "http://127.0.0.1:8080"},
		{"HEAPDEL_HEAP_BASE_URL", "http://127.9.9.9"},
		{"HEAPDEL_HEAP_BASE_URL", "http://[::1]:8080/api"},
		{"HEAPDEL_HEAP_BASE_URL", "http://LOCALHOST:1"},
		{"HEAPDEL_HEAP_BASE_URL", "https://heapanalytics.com/"},
		{"HEAPDEL_NATS_URL", "nats://a:4222, tls://b:4222,ws://c:80,wss://d"},
		{"HEAPDEL_NATS_URL", "nats://user:pw@a:4222"},
		{"HEAPDEL_SUBJECT_PREFIX", "acme_prod.heap-deletion.v2"},
		{"HEAPDEL_HTTP_ADDR", "0.0.0.0:80"},
		{"HEAPDEL_BATCH_WAIT", "1ns"},
		{"HEAPDEL_RECHECK_INTERVAL", "1h"},
		{"HEAPDEL_HEAP_RATE", "1e3"},
	} {
		if _, err := load(t, SetAll, baseEnv(kv...)); err != nil {
			t.Errorf("%s=%q: %v", kv[0], kv[1], err)
		}
	}
}

func TestErrorsOnePerLine(t *testing.T) {
	_, err := load(t, SetAll, baseEnv("HEAPDEL_HEAP_APP_ID", "", "HEAPDEL_LOG_LEVEL", "loud"), "--batch-size=x")
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		`HEAPDEL_BATCH_SIZE (--batch-size): must be a whole number from 1 to 10000, got "x"`,
		`HEAPDEL_HEAP_APP_ID: is required`,
		`HEAPDEL_LOG_LEVEL: must be one of "debug", "info", "warn", "error", got "loud"`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error lines:\n%q\nwant\n%q", got, want)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	err := c.Validate()
	if err == nil {
		t.Fatal("Default().Validate() = nil, want errors for the app id and key")
	}
	want := "HEAPDEL_HEAP_APP_ID: is required\nHEAPDEL_HEAP_API_KEY / HEAPDEL_HEAP_API_KEY_FILE: the Heap API key is required: set one of these"
	if err.Error() != want {
		t.Errorf("Default().Validate() =\n%v\nwant\n%s", err, want)
	}
	c.HeapAppID, c.HeapAPIKey = "1", "k"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// Validate names variables only, never flags.
	c.BatchSize = 0
	if err := c.Validate(); err == nil || err.Error() != `HEAPDEL_BATCH_SIZE: must be a whole number from 1 to 10000, got "0"` {
		t.Errorf("Validate = %v", err)
	}
}

func TestKeyTrimmed(t *testing.T) {
	c, err := load(t, SetAll, baseEnv("HEAPDEL_HEAP_API_KEY", " "+testKey+"\n"))
	if err != nil || c.HeapAPIKey != testKey {
		t.Errorf("HeapAPIKey %q, err %v", c.HeapAPIKey, err)
	}
}

func TestKeyFromFile(t *testing.T) {
	path := writeFile(t, "heap-key", "\n  key-from-file-123 \n")
	c, err := load(t, SetAll, baseEnv("HEAPDEL_HEAP_API_KEY", "", "HEAPDEL_HEAP_API_KEY_FILE", path))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.HeapAPIKey != "key-from-file-123" || c.HeapAPIKeyFile != path {
		t.Errorf("HeapAPIKey %q, HeapAPIKeyFile %q", c.HeapAPIKey, c.HeapAPIKeyFile)
	}
	if c.IdentityHashKey != deriveHashKey("key-from-file-123") {
		t.Errorf("IdentityHashKey not derived from the file's key")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate of a loaded config: %v", err)
	}
	// Built by hand with both, it is a mistake.
	c2 := Default()
	c2.HeapAppID, c2.HeapAPIKey, c2.HeapAPIKeyFile = "1", "k", path
	if err := c2.Validate(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("Validate with key and file = %v", err)
	}
}

func TestHashKey(t *testing.T) {
	c := Default()
	if c.HashKey() != nil {
		t.Errorf("HashKey with no keys = %q", c.HashKey())
	}
	c.HeapAPIKey = "k1"
	d1 := string(c.HashKey())
	if d1 == "" || d1 == "k1" || strings.Contains(d1, "k1") {
		t.Errorf("derived HashKey = %q", d1)
	}
	c.HeapAPIKey = "k2"
	if string(c.HashKey()) == d1 {
		t.Error("derived HashKey does not depend on the API key")
	}
	c.IdentityHashKey = "fixed-hash-key-0123"
	if string(c.HashKey()) != "fixed-hash-key-0123" {
		t.Errorf("HashKey = %q, want the set key", c.HashKey())
	}
	loaded, err := load(t, SetAll, baseEnv())
	if err != nil {
		t.Fatal(err)
	}
	c.IdentityHashKey, c.HeapAPIKey = "", testKey
	if string(loaded.HashKey()) != string(c.HashKey()) {
		t.Error("Load's derived key differs from HashKey's")
	}
}

func TestMarshalZerologRedacts(t *testing.T) {
	const (
		apiKey   = "heap-api-key-SECRET-1"
		password = "nats-password-SECRET-2"
		token    = "nats-token-SECRET-3"
		hashKey  = "identity-hash-key-SECRET-4"
		urlPass  = "url-password-SECRET-5"
	)
	keyFile := writeFile(t, "key", apiKey)
	hashFile := writeFile(t, "hash", hashKey)

	render := func(c Config) (string, map[string]any) {
		t.Helper()
		var buf bytes.Buffer
		log := zerolog.New(&buf)
		log.Info().Object("config", c).Msg("configuration")
		var line struct{ Config map[string]any }
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", buf.String(), err)
		}
		return buf.String(), line.Config
	}

	cases := map[string]map[string]string{
		"direct": baseEnv("HEAPDEL_HEAP_API_KEY", apiKey, "HEAPDEL_NATS_USER", "u", "HEAPDEL_NATS_PASSWORD", password,
			"HEAPDEL_IDENTITY_HASH_KEY", hashKey, "HEAPDEL_NATS_URL", "nats://u:"+urlPass+"@a:4222,nats://"+token+"@b:4222"),
		"files": baseEnv("HEAPDEL_HEAP_API_KEY", "", "HEAPDEL_HEAP_API_KEY_FILE", keyFile,
			"HEAPDEL_IDENTITY_HASH_KEY_FILE", hashFile, "HEAPDEL_NATS_TOKEN", token),
	}
	for name, env := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := load(t, SetAll, env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			out, obj := render(c)
			for _, s := range []string{apiKey, password, token, hashKey, urlPass, c.IdentityHashKey, deriveHashKey(apiKey)} {
				if strings.Contains(out, s) {
					t.Errorf("log line contains secret %q:\n%s", s, out)
				}
			}
			for _, s := range settings() {
				if _, ok := obj[logKey(s.env)]; !ok {
					t.Errorf("log line lacks %s", logKey(s.env))
				}
			}
			if obj["heap_api_key"] != "[redacted]" || obj["identity_hash_key"] != "[redacted]" {
				t.Errorf("heap_api_key %v, identity_hash_key %v", obj["heap_api_key"], obj["identity_hash_key"])
			}
			if obj["batch_size"] != float64(1000) || obj["batch_wait"] != "1s" || obj["provision"] != true {
				t.Errorf("batch_size %v, batch_wait %v, provision %v", obj["batch_size"], obj["batch_wait"], obj["provision"])
			}
		})
	}

	c, err := load(t, SetAll, baseEnv())
	if err != nil {
		t.Fatal(err)
	}
	_, obj := render(c)
	if obj["nats_password"] != "" || obj["nats_token"] != "" || obj["identity_hash_key"] != "[derived]" {
		t.Errorf("unset secrets: password %v, token %v, identity_hash_key %v", obj["nats_password"], obj["nats_token"], obj["identity_hash_key"])
	}
}

func TestSetNATS(t *testing.T) {
	fs := flag.NewFlagSet("heapdel publish", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	count := fs.Int("count", 1, "commands to send") // the command's own flag
	env := map[string]string{
		"HEAPDEL_NATS_URL":       "nats://a:4222",
		"HEAPDEL_SUBJECT_PREFIX": "acme.deletion",
		"HEAPDEL_BATCH_SIZE":     "not-a-number", // not this set's business
		"HEAPDEL_HEAP_BASE_URL":  "http://example.com",
	}
	l := NewLoader(fs, func(k string) string { return env[k] }, SetNATS)
	if err := fs.Parse([]string{"--count=5", "--log-level=debug"}); err != nil {
		t.Fatal(err)
	}
	c, err := l.Load()
	if err != nil {
		t.Fatalf("Load without Heap settings: %v", err)
	}
	if *count != 5 || c.NATSURL != "nats://a:4222" || c.SubjectPrefix != "acme.deletion" || c.LogLevel != "debug" || c.StreamName() != "ACME_DELETION" {
		t.Errorf("count %d, config %+v", *count, c)
	}
	for _, name := range []string{"batch-size", "heap-app-id", "heap-api-key", "http-addr", "provision", "data-dir"} {
		if fs.Lookup(name) != nil {
			t.Errorf("SetNATS registered --%s", name)
		}
	}
	if u := fs.Lookup("nats-url"); u == nil || !strings.Contains(u.Usage, "127.0.0.1:4222") {
		t.Errorf("SetNATS --nats-url should say an empty URL means the local server")
	}
	for _, name := range []string{"nats-url", "nats-creds", "nats-nkey", "nats-user", "nats-password", "nats-token",
		"nats-tls-ca", "nats-tls-cert", "nats-tls-key", "subject-prefix", "log-level", "log-format"} {
		if fs.Lookup(name) == nil {
			t.Errorf("SetNATS did not register --%s", name)
		}
	}

	// Its own settings are still validated.
	_, err = load(t, SetNATS, map[string]string{"HEAPDEL_NATS_URL": "localhost:4222", "HEAPDEL_NATS_TOKEN": "t", "HEAPDEL_NATS_NKEY": "/nonexistent"})
	if err == nil || !strings.HasPrefix(err.Error(), "HEAPDEL_NATS_URL: ") || !strings.Contains(err.Error(), "HEAPDEL_NATS_NKEY / HEAPDEL_NATS_TOKEN: use one") {
		t.Errorf("SetNATS Load = %v", err)
	}
}

// specVariables is the variable column of SPEC.md's Configuration table, with
// its defaults as SPEC.md gives them ("" where it gives none).
var specVariables = map[string]string{
	"HEAPDEL_NATS_URL":          "",
	"HEAPDEL_NATS_CREDS":        "",
	"HEAPDEL_NATS_NKEY":         "",
	"HEAPDEL_NATS_USER":         "",
	"HEAPDEL_NATS_PASSWORD":     "",
	"HEAPDEL_NATS_TOKEN":        "",
	"HEAPDEL_NATS_TLS_CA":       "",
	"HEAPDEL_NATS_TLS_CERT":     "",
	"HEAPDEL_NATS_TLS_KEY":      "",
	"HEAPDEL_DATA_DIR":          "./heapdel-data",
	"HEAPDEL_HEAP_APP_ID":       "",
	"HEAPDEL_HEAP_API_KEY":      "",
	"HEAPDEL_HEAP_API_KEY_FILE": "",
	"HEAPDEL_HEAP_BASE_URL":     "https://heapanalytics.com",
	"HEAPDEL_DELETION_BEHAVIOR": "until-complete",
	"HEAPDEL_BATCH_SIZE":        "1000",
	"HEAPDEL_BATCH_WAIT":        "1s",
	"HEAPDEL_HEAP_RATE":         "1",
	"HEAPDEL_RECHECK_INTERVAL":  "1m",
	"HEAPDEL_POLL_MAX_INTERVAL": "1h",
	"HEAPDEL_MAX_PENDING":       "720h",
	"HEAPDEL_SUBJECT_PREFIX":    "heap.deletion",
	"HEAPDEL_HTTP_ADDR":         ":9090",
	"HEAPDEL_LOG_LEVEL":         "info",
	"HEAPDEL_LOG_FORMAT":        "json",
}

func TestSpecVariablesRegistered(t *testing.T) {
	fs := flag.NewFlagSet("heapdel run", flag.ContinueOnError)
	NewLoader(fs, nil, SetAll)
	d := Default()
	byEnv := map[string]setting{}
	for _, s := range settings() {
		byEnv[s.env] = s
	}
	for env, def := range specVariables {
		f := fs.Lookup(flagName(env))
		if f == nil {
			t.Errorf("%s: no flag --%s", env, flagName(env))
			continue
		}
		if !strings.Contains(f.Usage, "env "+env+")") && !strings.Contains(f.Usage, "env "+env+",") {
			t.Errorf("--%s usage does not name %s: %q", f.Name, env, f.Usage)
		}
		if got := formatValue(byEnv[env].get(&d)); got != def {
			t.Errorf("%s: default %q, SPEC.md says %q", env, got, def)
		}
		if byEnv[env].extra {
			t.Errorf("%s is in SPEC.md but marked extra", env)
		}
	}
	for _, s := range settings() {
		if _, inSpec := specVariables[s.env]; !inSpec && !s.extra {
			t.Errorf("%s is not in SPEC.md but not marked extra", s.env)
		}
	}
}

func TestUsage(t *testing.T) {
	fs := flag.NewFlagSet("heapdel run", flag.ContinueOnError)
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	NewLoader(fs, nil, SetAll)
	fs.PrintDefaults()
	out := buf.String()
	for env := range specVariables {
		if !strings.Contains(out, "-"+flagName(env)) || !strings.Contains(out, "env "+env) {
			t.Errorf("usage lacks %s / --%s", env, flagName(env))
		}
	}
	for _, want := range []string{
		"users per Heap request, 1–10000 (env HEAPDEL_BATCH_SIZE, default 1000)",
		"(env HEAPDEL_HEAP_RATE, default 1)",
		"(env HEAPDEL_MAX_PENDING, default 720h)",
		"(env HEAPDEL_HEAP_BASE_URL, default https://heapanalytics.com)",
		"(env HEAPDEL_HEAP_APP_ID, required)",
		"(extra; env HEAPDEL_PROVISION, default true)",
		"(extra; env HEAPDEL_IDENTITY_HASH_KEY, default derived from the Heap API key)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q", want)
		}
	}
	for _, s := range settings() {
		f := fs.Lookup(flagName(s.env))
		if !strings.HasSuffix(f.Usage, ")") || !strings.Contains(f.Usage, "env "+s.env) {
			t.Errorf("--%s usage does not end with its variable: %q", f.Name, f.Usage)
		}
		if s.secret && !strings.Contains(f.Usage, "prefer the environment variable") {
			t.Errorf("--%s usage does not recommend the variable: %q", f.Name, f.Usage)
		}
	}
	if strings.Contains(out, "(default ") {
		t.Errorf("usage has the flag package's own (default …), which doubles ours:\n%s", out)
	}
}

// TestDocListsEveryVariable keeps doc.go, the reference docs point at, in step
// with the settings and their defaults.
func TestDocListsEveryVariable(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	d := Default()
	for _, s := range settings() {
		i := slices.IndexFunc(lines, func(l string) bool {
			f := strings.Fields(strings.TrimPrefix(l, "//"))
			return len(f) > 0 && f[0] == s.env
		})
		if i < 0 {
			t.Errorf("doc.go does not list %s", s.env)
			continue
		}
		def := formatValue(s.get(&d))
		if def == "" {
			continue
		}
		if f := strings.Fields(strings.TrimPrefix(lines[i], "//")); len(f) < 2 || f[1] != def {
			t.Errorf("doc.go gives %s the default %v, Default() has %q", s.env, f[1:2], def)
		}
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct{ prefix, stream string }{
		{"heap.deletion", "HEAP_DELETION"},
		{"acme-prod.heap.deletion", "ACME_PROD_HEAP_DELETION"},
		{"x", "X"},
	} {
		c := Default()
		c.SubjectPrefix = tt.prefix
		if c.StreamName() != tt.stream || c.StatusStreamName() != tt.stream+"_STATUS" || c.JobBucket() != tt.stream+"_JOBS" {
			t.Errorf("%q: %s %s %s", tt.prefix, c.StreamName(), c.StatusStreamName(), c.JobBucket())
		}
	}
}

func TestFlagName(t *testing.T) {
	for env, want := range map[string]string{
		"HEAPDEL_BATCH_SIZE":        "batch-size",
		"HEAPDEL_HEAP_API_KEY_FILE": "heap-api-key-file",
		"HEAPDEL_NATS_TLS_CA":       "nats-tls-ca",
	} {
		if got := flagName(env); got != want {
			t.Errorf("flagName(%s) = %s, want %s", env, got, want)
		}
	}
}

func TestNilGetenv(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	l := NewLoader(fs, nil, SetNATS)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(); err != nil {
		t.Errorf("Load: %v", err)
	}
}
