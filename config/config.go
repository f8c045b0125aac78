package config

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/heapdel/heapdel/consumer"
)

// Behavior says how far heapdel follows a deletion: until Heap reports it
// complete, or only until Heap accepts it.
type Behavior string

// The deletion behaviours that HEAPDEL_DELETION_BEHAVIOR accepts.
const (
	// BehaviorUntilComplete publishes submitted → processing → complete | failed,
	// polling Heap until the deletion is complete.
	BehaviorUntilComplete Behavior = "until-complete"
	// BehaviorOnSubmit publishes submitted → complete as soon as Heap accepts
	// the deletion, and never polls.
	BehaviorOnSubmit Behavior = "on-submit"
)

// Status event encodings that HEAPDEL_STATUS_ENCODING accepts.
const (
	EncodingBinary     = "binary"
	EncodingStructured = "structured"
)

// identityHashLabel is the message that, keyed with the Heap API key, gives the
// default identity hash key. Changing it changes every stored identity hash.
const identityHashLabel = "heapdel identity hash key v1"

// Config is heapdel's effective configuration. Every field is one environment
// variable and one flag of `heapdel run`; the table in the package
// documentation lists them with their defaults. Build one with [Default] or a
// [Loader], and check it with [Config.Validate].
type Config struct {
	// NATSURL is a comma-separated list of NATS server URLs; empty starts an
	// embedded JetStream server.
	NATSURL      string
	NATSCreds    string // path of a .creds file
	NATSNKey     string // path of an nkey seed file
	NATSUser     string
	NATSPassword string
	NATSToken    string
	NATSTLSCA    string // path of a PEM CA bundle
	NATSTLSCert  string // path of a PEM client certificate
	NATSTLSKey   string // path of the client certificate's PEM key
	DataDir      string // the embedded server's storage

	HeapAppID string
	// HeapAPIKey is the Heap API key: given directly, or read from
	// HeapAPIKeyFile by [Loader.Load].
	HeapAPIKey string
	// HeapAPIKeyFile, when set, is the file the key comes from; it goes on to
	// the Heap client (heapclient.Config.APIKeyFile), which reads it again
	// when Heap refuses the key, so that a rotated Secret needs no restart.
	HeapAPIKeyFile string
	HeapBaseURL    string

	DeletionBehavior Behavior
	BatchSize        int
	BatchWait        time.Duration
	HeapRate         float64       // Heap requests per second
	HeapBurst        int           // token bucket size
	HeapTimeout      time.Duration // per Heap request
	RecheckInterval  time.Duration
	PollMaxInterval  time.Duration
	MaxPending       time.Duration

	SubjectPrefix string
	HTTPAddr      string
	LogLevel      string
	LogFormat     string

	// Provision creates or updates the streams, the consumer and the
	// key-value store at start; turn it off for locked-down accounts.
	Provision bool
	// EventSource is the CloudEvents source of status events.
	EventSource string
	// EventTypes are the accepted CloudEvents types of deletion commands.
	EventTypes []string
	// StatusEncoding is the CloudEvents mode of status events:
	// [EncodingBinary] or [EncodingStructured].
	StatusEncoding string
	// StatusMaxAge is the status stream's age limit.
	StatusMaxAge time.Duration
	// JobRetention is how long a terminal job is kept (and so how long a
	// repeated request id is recognised).
	JobRetention time.Duration
	// MaxMessageBytes is the largest deletion command accepted.
	MaxMessageBytes int
	// ConsumerName is the durable consumer shared by all replicas.
	ConsumerName string
	// StreamReplicas is the replica count of the streams and key-value buckets
	// heapdel provisions: 3 on a NATS cluster, so state survives a lost node.
	StreamReplicas int
	// IdentityHashKey keys the hash of identities kept in job state. Empty
	// means: derive it from the Heap API key (see [Config.HashKey]);
	// [Loader.Load] fills it in.
	IdentityHashKey string
	// IdentityHashKeyFile, when set, is where [Loader.Load] reads
	// IdentityHashKey from.
	IdentityHashKeyFile string
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration

	// apiKeyFrom and hashKeyFrom are the files HeapAPIKey and
	// IdentityHashKey were read from, so that Validate can tell a key read
	// from its file from a key given twice.
	apiKeyFrom     string
	hashKeyFrom    string
	hashKeyDerived bool // IdentityHashKey was derived from HeapAPIKey by Load
}

// Default returns the configuration with every default filled in. It is the one
// place defaults are defined; HEAPDEL_HEAP_APP_ID and the API key have none.
func Default() Config {
	return Config{
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
		StatusEncoding:   EncodingBinary,
		StatusMaxAge:     720 * time.Hour,
		JobRetention:     2160 * time.Hour,
		MaxMessageBytes:  65536,
		ConsumerName:     "heapdel",
		StreamReplicas:   1,
		ShutdownTimeout:  30 * time.Second,
	}
}

// StreamName returns the command stream's name, derived from the subject
// prefix: upper-cased, with '.' and '-' turned into '_' ("HEAP_DELETION").
func (c Config) StreamName() string { return consumer.StreamBase(c.SubjectPrefix) }

// StatusStreamName returns the status stream's name, [Config.StreamName] + "_STATUS".
func (c Config) StatusStreamName() string { return c.StreamName() + "_STATUS" }

// JobBucket returns the job key-value bucket's name, [Config.StreamName] + "_JOBS".
func (c Config) JobBucket() string { return c.StreamName() + "_JOBS" }

// HashKey returns the key for hashing identities: IdentityHashKey when set,
// otherwise the one derived from HeapAPIKey (HMAC-SHA256 of a fixed label, hex).
// It returns nil when neither is set. A derived key changes when the API key
// does; set HEAPDEL_IDENTITY_HASH_KEY to keep hashes stable across rotations.
func (c Config) HashKey() []byte {
	if c.IdentityHashKey != "" {
		return []byte(c.IdentityHashKey)
	}
	if c.HeapAPIKey == "" {
		return nil
	}
	return []byte(deriveHashKey(c.HeapAPIKey))
}

func deriveHashKey(apiKey string) string {
	m := hmac.New(sha256.New, []byte(apiKey))
	m.Write([]byte(identityHashLabel))
	return hex.EncodeToString(m.Sum(nil))
}

// HashKeyFromEnv reads the identity hash key as `heapdel run` would from the
// environment: HEAPDEL_IDENTITY_HASH_KEY or _FILE, else the key derived from
// HEAPDEL_HEAP_API_KEY or _FILE. Commands other than run that need it (`heapdel
// redrive` without a running service) use it; the error names the variables.
func HashKeyFromEnv(getenv func(string) string) ([]byte, error) {
	read := func(value, fileVar string) (string, error) {
		if value != "" {
			return value, nil
		}
		path := getenv(fileVar)
		if path == "" {
			return "", nil
		}
		key, err := readKeyFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", fileVar, err)
		}
		return key, nil
	}
	key, err := read(getenv("HEAPDEL_IDENTITY_HASH_KEY"), "HEAPDEL_IDENTITY_HASH_KEY_FILE")
	if err != nil || key != "" {
		return []byte(key), err
	}
	api, err := read(getenv("HEAPDEL_HEAP_API_KEY"), "HEAPDEL_HEAP_API_KEY_FILE")
	if err != nil {
		return nil, err
	}
	if api == "" {
		return nil, errors.New("HEAPDEL_IDENTITY_HASH_KEY (or _FILE) or HEAPDEL_HEAP_API_KEY (or _FILE): set the one heapdel run uses, to open the sealed users of failed jobs")
	}
	return []byte(deriveHashKey(api)), nil
}
