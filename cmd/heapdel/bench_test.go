package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// The bench prints figures; this checks they are there and consistent, never how fast.
func TestBenchReportsFigures(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"bench", "--in-process", "--count", "600", "--batch-size", "200", "--batch-wait", "3s", "--json"}, envOf(nil), &out, &errb)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	var r benchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out.String())
	}
	if r.Commands != 600 || r.Throughput <= 0 || r.BasePublish <= 0 || r.RatioToPublish <= 0 || r.LatencyP99MS < r.LatencyP50MS {
		t.Errorf("figures missing or inconsistent: %+v", r)
	}
	// 600 commands published at once, batches of 200 closed by size (the wait is
	// far longer): one token and three submissions.
	if r.HeapRequests != 4 {
		t.Errorf("Heap requests %d, want 4 (1 token + 3 batches)", r.HeapRequests)
	}

	out.Reset()
	err = run(context.Background(), []string{"bench", "--in-process", "--mode", "recheck", "--requests", "300", "--users", "2", "--json"}, envOf(nil), &out, &errb)
	if err != nil {
		t.Fatalf("bench recheck: %v\n%s", err, errb.String())
	}
	r = benchResult{}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Recheck) != 1 || r.Recheck[0].NoneDueCalls != 0 || r.Recheck[0].AllDueCalls != 300 {
		t.Errorf("recheck figures: %+v (want no Heap call when none is due, one per request when all are)", r.Recheck)
	}
}
