package heaptest

import "testing"

func TestPreload(t *testing.T) {
	s := New(Options{NeverComplete: true})
	ids := s.Preload(3, 7)
	if len(ids) != 3 || ids[0] == ids[1] {
		t.Fatalf("ids %v", ids)
	}
	for _, id := range ids {
		d, ok := s.Deletion(id)
		if !ok || d.Status != "pending" || d.Users != 7 {
			t.Fatalf("deletion %s: %+v %v", id, d, ok)
		}
	}
	if s.SubmittedUsers() != 21 || len(s.Submissions()) != 0 {
		t.Fatalf("users %d, submissions %d", s.SubmittedUsers(), len(s.Submissions()))
	}
}
