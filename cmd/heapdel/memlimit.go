package main

import (
	"math"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/rs/zerolog"
)

// setMemoryLimit gives the Go runtime a soft memory limit of 90% of the container's
// memory limit (cgroup v1 or v2), unless GOMEMLIMIT is set (or AUTOMEMLIMIT=off), so
// the collector works harder before the container would be OOM-killed. Outside a
// memory-limited container it changes nothing.
func setMemoryLimit(log zerolog.Logger) {
	limit, err := memlimit.Set()
	switch {
	case err != nil:
		log.Debug().Err(err).Msg("no container memory limit read; GOMEMLIMIT left as it is")
	case limit > 0 && limit < math.MaxInt64:
		log.Info().Int64("gomemlimit_bytes", limit).Msg("Go memory limit in force (GOMEMLIMIT, or 90% of the container's memory limit)")
	}
}
