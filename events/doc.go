// Package events is heapdel's CloudEvents contract (SPEC.md, "Deletion command (in)"
// and "Status events (out)"): it decodes and validates deletion commands from
// JetStream messages in binary or structured mode, and encodes status events with
// deterministic ids.
//
// Both directions go through the CloudEvents SDK's NATS JetStream binding
// (github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2) on a plain
// subject/header/data triple; this package never acknowledges anything, so callers
// decide Ack, Nak or Term after their work is durable.
//
// Nothing here ever puts an identity or a user id into an error, a status event or a
// header: only the request id.
package events
