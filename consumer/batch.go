package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
)

// item is one command message taken from the stream, decoded or found invalid.
type item struct {
	msg       jetstream.Msg
	cmd       events.Command
	err       error // non-nil: the command is invalid
	seq       uint64
	delivered uint64
}

// batch is a group of items handed to Heap together.
type batch struct {
	items   []item
	trigger string
	since   time.Time
}

// batcher gathers commands into batches: a batch goes to Heap at BatchSize users, at
// the byte budget of one job-store entry, or BatchWait after its first command.
// Consume callbacks run one at a time, so the callback only decodes and hands over.
type batcher struct {
	s        *Service
	in       chan item
	stop     chan chan struct{}
	slots    chan struct{} // bounds concurrent flushes
	flushCtx context.Context
	abort    context.CancelFunc

	mu       sync.Mutex
	held     map[*batch]struct{}
	inflight map[uint64]struct{} // stream sequences taken and not yet settled
	wg       sync.WaitGroup
	done     chan struct{} // closed when run returns: intake then naks instead of blocking
}

// maxFlushes is how many batches may be between Heap and JetStream at once. Two keep
// Heap busy while the previous batch's job records and events are written.
const maxFlushes = 2

func newBatcher(s *Service) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &batcher{
		s:        s,
		in:       make(chan item, 1024),
		stop:     make(chan chan struct{}),
		slots:    make(chan struct{}, maxFlushes),
		flushCtx: ctx,
		abort:    cancel,
		held:     make(map[*batch]struct{}),
		inflight: make(map[uint64]struct{}),
		done:     make(chan struct{}),
	}
}

// onCommand is the Consume callback: decode, then hand over.
func (s *Service) onCommand(msg jetstream.Msg) {
	it := item{msg: msg}
	if md, err := msg.Metadata(); err == nil {
		it.seq, it.delivered = md.Sequence.Stream, md.NumDelivered
	}
	if it.delivered > 1 {
		s.m.redeliveries.Inc()
	}
	if !s.batcher.take(it.seq) {
		// A second copy of a command this process holds (JetStream redelivered it
		// while it waited in the client's buffer on a starved machine). The copy
		// is left alone: the first one settles the message, and submitting both
		// would send the user to Heap twice.
		s.log.Debug().Uint64("stream_seq", it.seq).Msg("second delivery of a command already in flight here: ignored")
		return
	}
	if r := msg.Headers().Get(nats.MsgRollup); r != "" && it.delivered <= 1 {
		s.rolledUp(r, it.seq)
	}
	it.cmd, it.err = s.decoder.Decode(msg.Subject(), msg.Headers(), msg.Data())
	select {
	case s.batcher.in <- it:
	case <-s.batcher.done:
		s.giveBack([]item{it}, nil) // shutting down: another replica, or the next start, takes it
	}
}

// rolledUp reports a command that carried a Nats-Rollup header. The command stream
// has to allow roll-ups (JetStream requires it of a stream with message schedules),
// so by the time heapdel reads such a command, JetStream has already deleted every
// command queued before it on its subject ("sub") or in the stream ("all"). heapdel
// cannot bring them back; it can make sure someone knows.
func (s *Service) rolledUp(value string, seq uint64) {
	if value != nats.MsgRollupSubject && value != nats.MsgRollupAll {
		value = "other" // whatever a publisher wrote, it is not logged
	}
	s.m.rollups.Inc()
	s.log.Error().Str("rollup", value).Uint64("stream_seq", seq).
		Msg("a deletion command carried a Nats-Rollup header, so JetStream deleted the commands queued before it: those deletions are lost unless they are sent again; find the publisher that sets the header, stop it, and have upstream re-send its recent commands")
}

// entryBudget is the most request-id bytes one batch may carry, so that its members
// record fits in one key-value entry whatever the server's max payload.
func (b *batcher) entryBudget() int {
	mp := int(b.s.nc.MaxPayload())
	return max(mp-mp/8-4096, 16<<10)
}

func (b *batcher) run(ctx context.Context) {
	var (
		cur    *batch
		users  int
		bytes  int
		budget = b.entryBudget()
		timer  = time.NewTimer(time.Hour)
		touch  = time.NewTicker(b.s.cfg.AckWait / 4)
	)
	timer.Stop()
	defer touch.Stop()
	defer close(b.done)
	dispatch := func(trigger string) {
		if cur == nil {
			return
		}
		timer.Stop()
		cur.trigger = trigger
		b.dispatch(cur)
		cur, users, bytes = nil, 0, 0
	}
	for {
		select {
		case it := <-b.in:
			if cur == nil {
				cur = b.newBatch()
				timer.Reset(b.s.cfg.BatchWait)
			}
			cur.items = append(cur.items, it)
			if it.err == nil {
				users++
				bytes += len(it.cmd.RequestID) + 16
				if !it.cmd.Deadline.IsZero() {
					bytes += 12
				}
			}
			if users >= b.s.cfg.BatchSize || bytes >= budget || len(cur.items) >= 2*b.s.cfg.BatchSize+100 {
				dispatch("size")
			}
		case <-timer.C:
			dispatch("wait")
		case <-touch.C:
			b.touch()
		case done := <-b.stop:
			// The consumers are drained: whatever reached us is flushed now.
		drain:
			for {
				select {
				case it := <-b.in:
					if cur == nil {
						cur = b.newBatch()
					}
					cur.items = append(cur.items, it)
				default:
					break drain
				}
			}
			dispatch("shutdown")
			b.waitFlushes(touch)
			close(done)
			return
		case <-ctx.Done():
			// Stopped without a shutdown: give back what was gathered and buffered.
			if cur != nil {
				b.s.giveBack(cur.items, nil)
			}
			for {
				select {
				case it := <-b.in:
					b.s.giveBack([]item{it}, nil)
					continue
				default:
				}
				break
			}
			b.abort()
			b.wg.Wait()
			return
		}
	}
}

// waitFlushes waits for the flushes in flight while still telling JetStream the
// held messages are being worked on.
func (b *batcher) waitFlushes(touch *time.Ticker) {
	done := make(chan struct{})
	go func() { b.wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return
		case <-touch.C:
			b.touch()
		}
	}
}

// newBatch starts a batch; its messages are held (and kept alive by touch) from now.
func (b *batcher) newBatch() *batch {
	bt := &batch{since: b.s.now()}
	b.mu.Lock()
	b.held[bt] = struct{}{}
	b.mu.Unlock()
	return bt
}

func (b *batcher) dispatch(bt *batch) {
	b.s.m.batches.WithLabelValues(bt.trigger).Inc()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case b.slots <- struct{}{}:
		case <-b.flushCtx.Done():
			b.s.giveBack(bt.items, nil)
			b.forget(bt)
			return
		}
		defer func() { <-b.slots }()
		b.s.flush(b.flushCtx, bt.items)
		b.forget(bt)
	}()
}

func (b *batcher) forget(bt *batch) {
	b.mu.Lock()
	delete(b.held, bt)
	for _, it := range bt.items {
		delete(b.inflight, it.seq)
	}
	b.mu.Unlock()
}

// settled forgets items' sequences as in flight: they were given back, so a
// redelivery of theirs is the next try, not a copy.
func (b *batcher) settled(items []item) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, it := range items {
		delete(b.inflight, it.seq)
	}
}

// take records seq as in flight; false means it already is.
func (b *batcher) take(seq uint64) bool {
	if seq == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.inflight[seq]; ok {
		return false
	}
	b.inflight[seq] = struct{}{}
	return true
}

// touch tells JetStream that messages held longer than a quarter of AckWait are
// still being worked on, so a long batch wait or a slow Heap is never mistaken for
// a crash and redelivered meanwhile.
func (b *batcher) touch() {
	cutoff := b.s.now().Add(-b.s.cfg.AckWait / 4)
	b.mu.Lock()
	var old []*batch
	for bt := range b.held {
		if bt.since.Before(cutoff) {
			old = append(old, bt)
		}
	}
	b.mu.Unlock()
	for _, bt := range old {
		for _, it := range bt.items {
			_ = it.msg.InProgress()
		}
	}
}

// shutdown flushes the batch being gathered and waits for every flush. When ctx
// ends first, the flushes are aborted and their commands released for redelivery.
func (b *batcher) shutdown(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case b.stop <- done:
	case <-ctx.Done():
		b.abort()
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		b.abort()
		<-done
		return ctx.Err()
	}
}
