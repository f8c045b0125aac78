// Package deps pins the chosen stack in go.mod until the packages that use it land.
package deps

import (
	_ "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	_ "github.com/cloudevents/sdk-go/v2"
	_ "github.com/google/uuid"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/collectors"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/rs/zerolog"
	_ "go.uber.org/goleak"
	_ "golang.org/x/time/rate"
)
