// Package config reads heapdel's configuration from environment variables and
// `heapdel run` flags, mapped one to one, with every default in [Default] and
// every rule in [Config.Validate].
//
// A flag's name is its variable's without HEAPDEL_, in lower case, with '_'
// turned into '-': HEAPDEL_BATCH_SIZE is --batch-size. A flag that is given
// wins over its variable, a variable that is non-empty wins over the default.
// Durations are Go durations (500ms, 30s, 5m, 24h). An invalid setting stops
// start-up with one line naming the variable, and the flag when one was used.
//
// This list is the reference the README and docs point at. Variables marked
// "extra" go beyond SPEC.md's table.
//
//	variable                        default                    meaning
//	HEAPDEL_NATS_URL                (empty)                    NATS server URLs, comma-separated nats://, tls://, ws://, wss://; empty starts an embedded JetStream server
//	HEAPDEL_NATS_CREDS              (empty)                    NATS credentials (.creds) file
//	HEAPDEL_NATS_NKEY               (empty)                    NATS nkey seed file
//	HEAPDEL_NATS_USER               (empty)                    NATS user, with HEAPDEL_NATS_PASSWORD
//	HEAPDEL_NATS_PASSWORD           (empty)                    NATS password (secret)
//	HEAPDEL_NATS_TOKEN              (empty)                    NATS token (secret)
//	HEAPDEL_NATS_TLS_CA             (empty)                    PEM CA bundle that verifies the NATS servers
//	HEAPDEL_NATS_TLS_CERT           (empty)                    PEM client certificate, with HEAPDEL_NATS_TLS_KEY
//	HEAPDEL_NATS_TLS_KEY            (empty)                    PEM key of the client certificate
//	HEAPDEL_DATA_DIR                ./heapdel-data             the embedded server's storage
//	HEAPDEL_HEAP_APP_ID             required                   Heap Main Production environment id; no whitespace
//	HEAPDEL_HEAP_API_KEY            required, or the _FILE     Heap API key, trimmed (secret)
//	HEAPDEL_HEAP_API_KEY_FILE       (empty)                    file holding the Heap API key, trimmed; exactly one of the two;
//	                                                           read again when Heap refuses the key (a rotated Secret, no restart)
//	HEAPDEL_HEAP_BASE_URL           https://heapanalytics.com  Heap API; plain http only to a loopback host
//	HEAPDEL_HEAP_RATE               1                          Heap requests per second (token bucket), > 0
//	HEAPDEL_HEAP_BURST              1                          token bucket size, ≥ 1 (extra)
//	HEAPDEL_HEAP_TIMEOUT            30s                        time limit of one Heap request (extra)
//	HEAPDEL_DELETION_BEHAVIOR       until-complete             or on-submit
//	HEAPDEL_BATCH_SIZE              1000                       users per Heap request, 1–10000
//	HEAPDEL_BATCH_WAIT              1s                         longest a command waits for its batch to fill, > 0 and ≤ 1m
//	HEAPDEL_RECHECK_INTERVAL        1m                         how often the recheck tick fires, ≥ 1s
//	HEAPDEL_POLL_MAX_INTERVAL       1h                         longest gap between two status checks of one Heap request, ≥ the recheck interval
//	HEAPDEL_MAX_PENDING             720h                       after this, a still-pending deletion fails with reason timeout
//	HEAPDEL_SUBJECT_PREFIX          heap.deletion              dot-separated tokens of [A-Za-z0-9_-]; stream and bucket names derive from it
//	HEAPDEL_HTTP_ADDR               :9090                      host:port of /metrics, /healthz, /readyz
//	HEAPDEL_LOG_LEVEL               info                       debug, info, warn or error
//	HEAPDEL_LOG_FORMAT              json                       or console, for humans
//	HEAPDEL_PROVISION               true                       create or update streams, consumer and key-value store at start (extra)
//	HEAPDEL_EVENT_SOURCE            heapdel                    CloudEvents source of status events (extra)
//	HEAPDEL_EVENT_TYPES             heap.deletion.requested    accepted command types, comma-separated (extra)
//	HEAPDEL_STATUS_ENCODING         binary                     or structured: CloudEvents mode of status events (extra)
//	HEAPDEL_STATUS_MAX_AGE          720h                       age limit of the status stream (extra)
//	HEAPDEL_JOB_RETENTION           2160h                      how long a finished job, and so its request id, is kept (extra)
//	HEAPDEL_MAX_MESSAGE_BYTES       65536                      largest command accepted, 1024–67108864 (extra)
//	HEAPDEL_STREAM_REPLICAS         1                          replicas of the provisioned streams and buckets, 1–5 (extra)
//	HEAPDEL_CONSUMER_NAME           heapdel                    durable consumer shared by the replicas, [A-Za-z0-9_-] (extra)
//	HEAPDEL_IDENTITY_HASH_KEY       derived from the API key   key of identity hashes in job state, ≥ 16 characters (secret, extra)
//	HEAPDEL_IDENTITY_HASH_KEY_FILE  (empty)                    file holding the identity hash key, trimmed (extra)
//	HEAPDEL_SHUTDOWN_TIMEOUT        30s                        bound on the graceful shutdown (extra)
//
// NATS authentication takes one method at most: creds, nkey, user and password,
// or token. The derived identity hash key is HMAC-SHA256, keyed with the Heap
// API key, of a fixed label; it changes when the API key does, so set
// HEAPDEL_IDENTITY_HASH_KEY to keep job-state hashes stable across key
// rotations. Secrets are best given by variable or file: a flag's value shows
// in the process list.
//
// A program builds a [Loader] on its flag set, parses the flags, then calls
// [Loader.Load]; `heapdel publish` and `heapdel status` use [SetNATS] to take
// only the NATS settings, the subject prefix and logging.
package config
