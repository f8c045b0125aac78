package events

import (
	"testing"
	"time"
)

func benchmarkDecode(b *testing.B, structured bool) {
	msg, err := NewCommandMsg(testSubject, Command{RequestID: "dsr-2026-000123", Identity: "alice@example.com",
		Deadline: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}, structured)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDecoder(DecoderConfig{})
	b.ReportAllocs()
	b.SetBytes(int64(len(msg.Data)))
	for b.Loop() {
		if _, err := d.Decode(msg.Subject, msg.Header, msg.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBinary(b *testing.B)     { benchmarkDecode(b, false) }
func BenchmarkDecodeStructured(b *testing.B) { benchmarkDecode(b, true) }

// BenchmarkDecodeInvalid measures refusing a hostile message: it must stay cheap.
func BenchmarkDecodeInvalid(b *testing.B) {
	h, data := buildMsg(b, binaryMode, `{"request_id":"dsr.*","identity":"x"}`, nil)
	d := NewDecoder(DecoderConfig{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(testSubject, h, data); err == nil {
			b.Fatal("accepted")
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range []struct {
		name       string
		structured bool
	}{{"binary", false}, {"structured", true}} {
		b.Run(bc.name, func(b *testing.B) {
			enc := NewEncoder(EncoderConfig{Structured: bc.structured})
			now := time.Now()
			ev := StatusEvent{RequestID: "dsr-2026-000123", Status: StatusProcessing, Attempt: 1, CommandSeq: 1042,
				HeapDeletionRequestID: "c93fae81-f67a-46d6-acf1-0c3ba1c3e5a6", RequestedAt: now, SubmittedAt: now, Time: now}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.Encode(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
