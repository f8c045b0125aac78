package consumer

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heapdel/heapdel/events"
)

// publishes gathers the asynchronous publishes of status events made while handling
// one batch, so they travel together and are awaited once.
type publishes struct {
	futures  []jetstream.PubAckFuture
	statuses []events.Status
	err      error
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
}

// await waits for every publish acknowledgement; any failure is returned so the
// commands can be redelivered (their events are then published again, same ids).
func (p *publishes) await(ctx context.Context, s *Service) error {
	err := p.err
	for i, f := range p.futures {
		ack, aerr := awaitAck(ctx, f)
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("status event: %w", aerr))
			continue
		}
		if !ack.Duplicate {
			s.m.statusEvents.WithLabelValues(string(p.statuses[i])).Inc()
		}
	}
	p.futures, p.statuses, p.err = nil, nil, nil
	return err
}
