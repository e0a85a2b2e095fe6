package ingest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestDuplicatePublishDeduplicated: a publish repeated with the same
// Nats-Msg-Id, as the publisher's retries are, is not stored again: every
// id the ingest writes (events "<session>-<seq>" and markers alike) is
// deterministic and the stream's duplicate window catches the repeat.
func TestDuplicatePublishDeduplicated(t *testing.T) {
	leakCheck(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	_, cfg, nc, reader := startRig(t, []*amisim.Server{sim}, "")
	run := startService(t, cfg, nc, nil)
	upAndSnapshot(reader, "pbx1", 1)
	base := sim.SentEventCount()
	sim.EmitEvents(200, 0)
	testenv.WaitSim(t, sim, "the events written", func() bool { return sim.SentEventCount() == base+200 })
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	recs := reader.all()
	if len(recs) < 200 {
		t.Fatalf("%d messages stored", len(recs))
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "AMI_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	count := func() uint64 {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	before := count()
	ids := map[string]bool{}
	for _, r := range recs {
		if r.MsgID == "" || ids[r.MsgID] {
			t.Fatalf("%v: Nats-Msg-Id %q missing or not unique", r, r.MsgID)
		}
		ids[r.MsgID] = true
		msg := &nats.Msg{Subject: r.Subject, Data: r.Data, Header: nats.Header{jetstream.MsgIDHeader: []string{r.MsgID}}}
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate || ack.Sequence != r.StreamSeq {
			t.Fatalf("republished %v: ack %+v, want a duplicate of stream seq %d", r, ack, r.StreamSeq)
		}
	}
	if after := count(); after != before {
		t.Fatalf("stream holds %d messages after the repeats, %d before", after, before)
	}
	// The same content under a new id is stored: the check above could fail.
	msg := &nats.Msg{Subject: recs[1].Subject, Data: recs[1].Data, Header: nats.Header{jetstream.MsgIDHeader: []string{"another-id"}}}
	if ack, err := js.PublishMsg(ctx, msg); err != nil || ack.Duplicate {
		t.Fatalf("new id: ack %+v, %v", ack, err)
	}
	if after := count(); after != before+1 {
		t.Fatalf("stream holds %d messages, want %d", after, before+1)
	}
}
