package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
)

// eventWindow is how many status events one batch keeps in flight before waiting
// for the oldest acks: enough to keep JetStream busy, few enough that a 10,000-user
// batch does not hold 20,000 encoded events in memory at once. In `heapdel bench`
// (batches of 10,000) 2,048 → 1,024 → 512 (with writeWindow alike) took the
// service's peak RSS from 244 to 157 to 148 MiB at the same throughput.
const eventWindow = 512

// writeWindow is the same bound for a batch's job-store writes.
const writeWindow = 512

// window bounds a batch's asynchronous writes: it holds up to writeWindow of them
// and, when full, hands the older half to settle (which awaits each), so a
// 10,000-command batch never holds all its writes at once. drain settles the rest.
type window[T any] struct {
	inflight []T
	settle   func(T)
}

func newWindow[T any](n int, settle func(T)) *window[T] {
	return &window[T]{inflight: make([]T, 0, min(n, writeWindow)), settle: settle}
}

func (w *window[T]) add(v T) {
	w.inflight = append(w.inflight, v)
	if len(w.inflight) == writeWindow {
		for _, x := range w.inflight[:writeWindow/2] {
			w.settle(x)
		}
		w.inflight = w.inflight[:copy(w.inflight, w.inflight[writeWindow/2:])]
	}
}

func (w *window[T]) drain() {
	for _, x := range w.inflight {
		w.settle(x)
	}
	w.inflight = w.inflight[:0]
}

// publishes gathers the asynchronous publishes of status events made while handling
// one batch, so they travel together and are awaited together.
type publishes struct {
	futures  []jetstream.PubAckFuture
	statuses []events.Status
	err      error
	// later holds re-published events by rank in a request id's sequence
	// (submitted, processing, then complete or failed), published by await one
	// rank after the other: see addInOrder.
	later [3][]events.StatusEvent
}

// addInOrder queues ev, the re-publication of an event already published once,
// for await, which stores every submitted before any processing and those before
// any complete or failed. Published all at once, a retried submitted could land
// after its processing (a publish refused while the first copy is still being
// stored, 10158 on R3), and a subscriber reading in stream order would see the
// sequence out of order whenever the first copies were lost.
func (p *publishes) addInOrder(ev events.StatusEvent) {
	r := 2
	switch ev.Status {
	case events.StatusSubmitted:
		r = 0
	case events.StatusProcessing:
		r = 1
	}
	p.later[r] = append(p.later[r], ev)
}

// add encodes and publishes ev asynchronously. Its Nats-Msg-Id is the event id, so a
// re-publication after a redelivery is dropped by the stream's duplicate window and
// recognisable by id after it.
func (p *publishes) add(s *Service, ev events.StatusEvent) {
	msg, err := s.encoder.Encode(ev)
	if err != nil {
		p.err = errors.Join(p.err, fmt.Errorf("encode %s event: %w", ev.Status, err))
		return
	}
	f, err := s.js.PublishMsgAsync(msg)
	if err != nil {
		p.err = errors.Join(p.err, fmt.Errorf("publish %s event: %w", ev.Status, err))
		return
	}
	p.futures = append(p.futures, f)
	p.statuses = append(p.statuses, ev.Status)
	if len(p.futures) >= eventWindow {
		p.settle(s.runCtx, s, len(p.futures)/2)
	}
}

// settle waits for the oldest n acknowledgements and forgets them; failures are
// kept for await.
func (p *publishes) settle(ctx context.Context, s *Service, n int) {
	for i, f := range p.futures[:n] {
		ack, err := awaitAck(ctx, f)
		if err != nil {
			p.err = errors.Join(p.err, fmt.Errorf("status event: %w", err))
			continue
		}
		if !ack.Duplicate {
			s.m.statusEvents.WithLabelValues(string(p.statuses[i])).Inc()
		}
	}
	p.futures = append(p.futures[:0], p.futures[n:]...)
	p.statuses = append(p.statuses[:0], p.statuses[n:]...)
}

// await waits for every outstanding acknowledgement and returns any failure since
// the last await, so the commands can be redelivered (their events are then
// published again, with the same ids).
func (p *publishes) await(ctx context.Context, s *Service) error {
	p.settle(ctx, s, len(p.futures))
	for r := range p.later {
		if p.err != nil {
			break // a later rank must not be stored before this one
		}
		for _, ev := range p.later[r] {
			p.add(s, ev)
		}
		p.settle(ctx, s, len(p.futures))
	}
	p.later = [3][]events.StatusEvent{}
	err := p.err
	p.futures, p.statuses, p.err = nil, nil, nil
	return err
}
