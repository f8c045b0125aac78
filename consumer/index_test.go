package consumer

import (
	"strings"
	"testing"
	"time"
)

// A waiting entry counts in the deadline gauges until its command is in a Heap
// request; while both exist (the purge is on its way) it counts once. It is never a
// Heap request to check or a pending user.
func TestDeadlineStatsCountWaitingOnce(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	x := newPendingIndex()
	x.putWaiting(waitingKey("dsr:breached"), waitEntry{deadline: at(-time.Hour), rev: 1})
	x.putWaiting(waitingKey("dsr.12h"), waitEntry{deadline: at(12 * time.Hour), rev: 2})
	x.putWaiting(waitingKey("dsr-3d"), waitEntry{deadline: at(72 * time.Hour), rev: 3})
	x.put(requestKey("h-0"), indexEntry{req: HeapRequest{ID: "h-0", Users: 1, Deadlines: []int64{at(30 * 24 * time.Hour)}}, rev: 4})

	check := func(step string, breached, due24h, due7d int) {
		t.Helper()
		b, d1, d7 := x.deadlineStats(now)
		if b != breached || d1 != due24h || d7 != due7d {
			t.Errorf("%s: breached %d, 24h %d, 7d %d; want %d, %d, %d", step, b, d1, d7, breached, due24h, due7d)
		}
	}
	check("waiting", 1, 1, 2)
	h1 := HeapRequest{ID: "h-1", Users: 2, Deadlines: []int64{at(12 * time.Hour), at(time.Hour)}, Waited: []string{"dsr.12h"}}
	x.put(requestKey("h-1"), indexEntry{req: h1, rev: 5})
	check("submitted, waiting entry not yet purged", 1, 2, 3)
	x.remove(waitingKey("dsr.12h"))
	check("purged", 1, 2, 3)
	x.remove(requestKey("h-1"))
	check("complete", 1, 0, 1)

	if n := x.len(); n != 1 {
		t.Errorf("%d Heap requests in the index, want 1", n)
	}
	if n := len(x.due(now.Add(1000 * time.Hour))); n != 1 {
		t.Errorf("%d Heap requests due, want 1: waiting entries are not checked", n)
	}
	if users, _ := x.pendingStats(); users != 1 {
		t.Errorf("%d users pending, want 1", users)
	}
}

// No request id or Heap id makes a key that looks like another kind of entry.
func TestWaitingKeysAreDistinct(t *testing.T) {
	for _, id := range []string{"w", "w.x", "w/x", "w=2Fx", "m.x", "a:b", "c93fae81-f67a-46d6-acf1-0c3ba1c3e5a6"} {
		if isWaitingKey(requestKey(id)) || isWaitingKey(membersKey(id)) {
			t.Errorf("key of Heap request %q taken for a waiting entry", id)
		}
		if k := waitingKey(id); !isWaitingKey(k) || strings.Count(k, ".") > 0 {
			t.Errorf("waiting key %q of %q is not one key-value token", k, id)
		}
	}
}
