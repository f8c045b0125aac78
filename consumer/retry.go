package consumer

import (
	"context"
	"time"
)

// retryBackoff runs op until it succeeds, says stop, or ctx ends, waiting first
// after the first failure and twice as long after each further one, up to ceiling.
// onRetry, if not nil, hears each failure that will be retried, with the wait
// before the next try. It returns op's last error (nil on success). It is the one
// backoff loop of the package: provisioning, binding and consumer lookups at
// start, and the writes retried after Heap accepted a batch.
func retryBackoff(ctx context.Context, first, ceiling time.Duration, op func() (stop bool, err error), onRetry func(try int, err error, wait time.Duration)) error {
	wait := first
	for try := 1; ; try++ {
		stop, err := op()
		if err == nil || stop || ctx.Err() != nil {
			return err
		}
		if onRetry != nil {
			onRetry(try, err, wait)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, ceiling)
	}
}
