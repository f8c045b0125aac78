package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// hostile is one kind of bad command; make builds an instance whose request id,
// when readable, is id.
type hostile struct {
	name     string
	readable bool // a failed/invalid_command event is expected for id
	rare     bool // large: only a few instances
	valid    bool // odd but acceptable: expected to complete
	make     func(id string) *nats.Msg
}

func ceHeaders(m *nats.Msg) *nats.Msg {
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "h", "ce-source": "abuse", "ce-type": "heap.deletion.requested"} {
		m.Header.Set(k, v)
	}
	return m
}

func binaryMsg(data string) *nats.Msg {
	m := nats.NewMsg("heap.deletion.requested")
	m.Data = []byte(data)
	return ceHeaders(m)
}

func hostileCorpus() []hostile {
	nested := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	return []hostile{
		{name: "not json", readable: false, rare: false, make: func(id string) *nats.Msg { return binaryMsg("this is not json " + id) }},
		{name: "invalid utf-8 identity", readable: true, rare: false, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + "\",\"identity\":\"\xff\xfe\xfd\"}")
		}},
		{name: "1 MB body", readable: true, rare: true, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + `","identity":"` + strings.Repeat("x", 1<<20) + `"}`)
		}},
		// Unknown fields are ignored, however deep: this one is a valid command.
		{name: "deeply nested extra field", readable: false, rare: true, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + `","identity":"nested-` + id + `@b.c","extra":` + nested + `}`)
		}, valid: true},
		{name: "many headers", readable: false, rare: false, make: func(id string) *nats.Msg {
			m := binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c"}`)
			for i := range 200 {
				m.Header.Set(fmt.Sprintf("x-h-%d", i), "v")
			}
			return m
		}},
		{name: "huge header value", readable: false, rare: true, make: func(id string) *nats.Msg {
			m := binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c"}`)
			m.Header.Set("x-big", strings.Repeat("v", 100<<10))
			return m
		}},
		{name: "request id missing", readable: false, rare: false, make: func(string) *nats.Msg { return binaryMsg(`{"identity":"a@b.c"}`) }},
		{name: "request id a number", readable: false, rare: false, make: func(string) *nats.Msg { return binaryMsg(`{"request_id":12,"identity":"a@b.c"}`) }},
		{name: "identity a number", readable: true, rare: false, make: func(id string) *nats.Msg { return binaryMsg(`{"request_id":"` + id + `","identity":5}`) }},
		{name: "user id a float", readable: true, rare: false, make: func(id string) *nats.Msg { return binaryMsg(`{"request_id":"` + id + `","user_id":1.5}`) }},
		{name: "user id negative", readable: true, rare: false, make: func(id string) *nats.Msg { return binaryMsg(`{"request_id":"` + id + `","user_id":-1}`) }},
		{name: "user id too big", readable: true, rare: false, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + `","user_id":18446744073709551616}`)
		}},
		{name: "neither user", readable: true, rare: false, make: func(id string) *nats.Msg { return binaryMsg(`{"request_id":"` + id + `"}`) }},
		{name: "both users", readable: true, rare: false, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c","user_id":7}`)
		}},
		{name: "deadline not a date", readable: true, rare: false, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c","deadline":"soon"}`)
		}},
		{name: "doubled field", readable: true, rare: false, make: func(id string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c","identity":"d@e.f"}`)
		}},
		{name: "request id wildcard", readable: false, rare: false, make: func(id string) *nats.Msg { return binaryMsg(`{"request_id":"` + id + `.*","identity":"a@b.c"}`) }},
		{name: "request id with space", readable: false, rare: false, make: func(id string) *nats.Msg { return binaryMsg(`{"request_id":"` + id + ` x","identity":"a@b.c"}`) }},
		{name: "request id 10 KB", readable: false, rare: false, make: func(string) *nats.Msg {
			return binaryMsg(`{"request_id":"` + strings.Repeat("r", 10<<10) + `","identity":"a@b.c"}`)
		}},
		{name: "unknown type", readable: true, rare: false, make: func(id string) *nats.Msg {
			m := binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c"}`)
			m.Header.Set("ce-type", "com.example.other")
			return m
		}},
		{name: "spec version 0.3", readable: true, rare: false, make: func(id string) *nats.Msg {
			m := binaryMsg(`{"request_id":"` + id + `","identity":"a@b.c"}`)
			m.Header.Set("ce-specversion", "0.3")
			return m
		}},
		{name: "no ce headers", readable: true, rare: false, make: func(id string) *nats.Msg {
			return &nats.Msg{Subject: "heap.deletion.requested", Data: []byte(`{"request_id":"` + id + `","identity":"a@b.c"}`)}
		}},
		{name: "structured, broken envelope", readable: true, rare: false, make: func(id string) *nats.Msg {
			m := nats.NewMsg("heap.deletion.requested")
			m.Header.Set("content-type", "application/cloudevents+json")
			m.Data = []byte(`{"specversion":"1.0","id":"x","type":"heap.deletion.requested","data":{"request_id":"` + id + `","identity":"a@b.c"}}`)
			return m
		}},
	}
}

// TestHostileCommands interleaves 10,000 hostile commands with good ones: every
// good one completes, every hostile one with a readable request id fails with
// invalid_command, none is left unacknowledged, nothing panics, and the heap stays
// bounded (its peak is reported).
func TestHostileCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("long: 10,000 hostile commands")
	}
	const nHostile, goodEvery = 10_000, 5
	e := newEnv(t, heaptest.Options{}, nil)
	e.replica(nil)

	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	corpus := hostileCorpus()
	var good, readable []string
	rareLeft := map[string]int{}
	for _, h := range corpus {
		if h.rare {
			rareLeft[h.name] = 10
		}
	}
	ctx := context.Background()
	for i := 0; i < nHostile; i++ {
		h := corpus[i%len(corpus)]
		if h.rare {
			if rareLeft[h.name] == 0 {
				h = corpus[0]
			} else {
				rareLeft[h.name]--
			}
		}
		id := fmt.Sprintf("bad-%05d", i)
		e.publishAsyncMsg(h.make(id))
		if h.readable {
			readable = append(readable, id)
		}
		if h.valid {
			good = append(good, id)
		}
		if i%goodEvery == 0 {
			c := events.Command{RequestID: fmt.Sprintf("good-%05d", i), Identity: fmt.Sprintf("good-%05d@example.com", i)}
			m, _ := events.NewCommandMsg("heap.deletion.requested", c, i%2 == 0)
			if i%10 == 0 { // binary mode with mixed-case headers is still a good command
				m.Header["Ce-Specversion"] = m.Header["ce-specversion"]
				delete(m.Header, "ce-specversion")
			}
			e.publishAsyncMsg(m)
			good = append(good, c.RequestID)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("publish acks did not arrive")
	}
	// A body over the server's max payload never reaches heapdel: NATS refuses it.
	huge := binaryMsg(`{"request_id":"huge","identity":"` + strings.Repeat("x", 10<<20) + `"}`)
	if _, err := e.js.PublishMsg(ctx, huge); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("a 10 MB command: %v, want the server's max-payload refusal", err)
	}

	e.waitTerminal(180*time.Second, good...)
	e.waitTerminal(60*time.Second, readable...)
	close(stopSampling)
	<-sampled
	for _, id := range good {
		if got := e.terminal(id); got != events.StatusComplete {
			t.Fatalf("good command %s: %s", id, got)
		}
	}
	for _, id := range readable {
		h := e.history(id)
		if last := h[len(h)-1]; last.Status != events.StatusFailed || last.Reason != events.ReasonInvalidCommand {
			t.Fatalf("%s: %s/%s, want failed/invalid_command", id, last.Status, last.Reason)
		}
	}
	eventually(t, 30*time.Second, func() string {
		st, err := e.js.Stream(ctx, "HEAP_DELETION")
		if err != nil {
			return err.Error()
		}
		c, err := st.Consumer(ctx, "heapdel")
		if err != nil {
			return err.Error()
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return err.Error()
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return fmt.Sprintf("%d commands pending, %d unacknowledged", ci.NumPending, ci.NumAckPending)
		}
		return ""
	})
	t.Logf("%d hostile (%d with a readable request id) and %d good commands; peak heap in use %.0f MiB (test process: NATS server, simulator, publisher and service)",
		nHostile, len(readable), len(good), float64(peak.Load())/(1<<20))
	if peak.Load() > 1<<30 {
		t.Errorf("peak heap %d MiB: memory not bounded", peak.Load()>>20)
	}
}
