package consumer_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/heapdel/heapdel/events"
	"github.com/heapdel/heapdel/heapclient/heaptest"
)

// TestIdentitiesAppearNowhere runs commands through success, rejection, a 404,
// transient faults and invalid input, then searches the logs (debug level), the
// metrics, the raw status events and both key-value buckets for every identity and
// user id used.
func TestIdentitiesAppearNowhere(t *testing.T) {
	const refused = "refused-leak@example.com"
	e := newEnv(t, heaptest.Options{CompleteAfter: 300 * time.Millisecond, Rule: func(u heaptest.User) heaptest.Outcome {
		if u.Identity == refused {
			return heaptest.OutcomeReject
		}
		return heaptest.OutcomeComplete
	}}, nil)
	e.sim.Script(
		heaptest.Fault{Endpoint: "user_deletion", Status: 503, Count: 2},
		heaptest.Fault{Endpoint: "deletion_status", Status: 404, Count: 1},
	)
	e.replica(nil)

	var secrets []string
	var cmds []events.Command
	for i := range 30 {
		c := events.Command{RequestID: fmt.Sprintf("leak-%02d", i)}
		if i%3 == 0 {
			c.UserID = 7_000_000_000_000_000_000 + uint64(i)
			secrets = append(secrets, strconv.FormatUint(c.UserID, 10))
		} else {
			c.Identity = fmt.Sprintf("leak-person-%02d@example.org", i)
			secrets = append(secrets, c.Identity)
		}
		cmds = append(cmds, c)
	}
	cmds[5].Identity = refused
	secrets = append(secrets, refused)
	e.publish(false, cmds...)
	// An invalid command carrying an identity.
	bad, _ := events.NewCommandMsg("heap.deletion.requested", events.Command{RequestID: "leak-bad", Identity: "invalid-leak@example.org", UserID: 9_111_222_333_444_555}, false)
	e.publishMsg(bad)
	secrets = append(secrets, "invalid-leak@example.org", "9111222333444555")
	e.waitTerminal(40*time.Second, append(ids(cmds), "leak-bad")...)

	var where []string
	search := func(place, text string) {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				where = append(where, fmt.Sprintf("%s holds %q", place, s))
			}
		}
	}
	search("logs", e.logs.String())
	e.mu.Lock()
	regs := e.regs
	e.mu.Unlock()
	for _, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		for _, mf := range mfs {
			_, _ = expfmt.MetricFamilyToText(&buf, mf)
		}
		search("metrics", buf.String())
	}
	ctx := context.Background()
	for _, stream := range []string{"HEAP_DELETION_STATUS", "KV_HEAP_DELETION_JOBS", "KV_HEAP_DELETION_REQUESTS"} {
		st, err := e.js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted or expired
			}
			var hdr strings.Builder
			for k, vs := range m.Header {
				hdr.WriteString(k + ":" + strings.Join(vs, ",") + "\n")
			}
			search(stream, hdr.String()+string(m.Data))
		}
	}
	if len(where) > 0 {
		t.Fatalf("identities leaked:\n%s", strings.Join(where, "\n"))
	}
	if !strings.Contains(e.logs.String(), `"request_id":"leak-05"`) {
		t.Errorf("logs do not carry request ids; the search above proves nothing")
	}
}
