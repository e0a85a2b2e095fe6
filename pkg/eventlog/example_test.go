package eventlog_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/eventlog"
	"github.com/amibus/amibus/pkg/publish"
)

// exampleStream starts an embedded JetStream holding a short history of
// pbx1 as ami-ingest stores it (and one message of pbx2), and returns a
// JetStream handle and a function that stops it all. In a program, js
// comes from jetstream.New on a connection to the NATS servers ami-ingest
// writes to.
func exampleStream() (jetstream.JetStream, func()) {
	dir, err := os.MkdirTemp("", "eventlog-example")
	if err != nil {
		panic(err)
	}
	srv, err := eventlog.StartJetStream(dir)
	if err != nil {
		panic(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := publish.EnsureStream(ctx, js, publish.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		panic(err)
	}
	at := time.Date(2026, 11, 23, 14, 2, 0, 0, time.UTC)
	store := func(s eventlog.Stored) {
		if _, err := js.PublishMsg(ctx, s.Msg()); err != nil {
			panic(err)
		}
	}
	meta := func(node string, it eventq.Item) {
		at = at.Add(time.Second)
		it.Time = at
		store(eventlog.StoredMeta("ami", node, it))
	}
	event := func(node, session string, seq uint64, kv ...string) {
		at = at.Add(time.Second)
		store(eventlog.StoredEvent("ami", node, session, seq, at, eventlog.AMIMessage(kv...)))
	}
	chan1 := eventlog.AMIMessage("Event", "CoreShowChannel", "Channel", "PJSIP/100-00000001", "Uniqueid", "1700000000.1")
	meta("pbx1", eventq.Item{Kind: eventq.KindSessionStart, Session: "a1", Version: "5.0.2", Owner: "ingest-0"})
	meta("pbx1", eventq.Item{Kind: eventq.KindSnapshot, Session: "a1", Action: "CoreShowChannels",
		Items: []*amiwire.Message{chan1}, Total: 1})
	event("pbx1", "a1", 1, "Event", "Newchannel", "Channel", "PJSIP/200-00000002", "Uniqueid", "1700000000.2")
	event("pbx2", "b1", 1, "Event", "FullyBooted", "Uptime", "42")
	meta("pbx1", eventq.Item{Kind: eventq.KindGap, Session: "a1", FirstSeq: 2, LastSeq: 4, Count: 3, Reason: "buffer_full"})
	event("pbx1", "a1", 5, "Event", "VarSet", "Variable", "A=1", "Variable", "B=2")
	event("pbx1", "a1", 7, "Event", "Hangup", "Uniqueid", "1700000000.2") // seq 6 is missing with no marker
	meta("pbx1", eventq.Item{Kind: eventq.KindSessionEnd, Session: "a1", Reason: "eof", LastSeq: 7})
	return js, func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}
}

// Read one node's history from the start of the stream, up to what is
// stored now.
func ExampleOpen() {
	js, stop := exampleStream()
	defer stop()
	ctx := context.Background()

	stream, err := js.Stream(ctx, eventlog.DefaultStream)
	if err != nil {
		fmt.Println(err)
		return
	}
	last := stream.CachedInfo().State.LastSeq

	r, err := eventlog.Open(ctx, js, eventlog.Nodes("pbx1"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close(ctx)
	for r.Position() < last {
		e, err := r.Next(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%d %s %s seq=%d: ", e.StreamSeq, e.Node, e.Time.Format("15:04:05"), e.Seq)
		switch e.Kind {
		case eventlog.KindSessionStart:
			fmt.Println("new session", e.Session, "AMI", e.Start.Version)
		case eventlog.KindSnapshot:
			fmt.Println("snapshot", e.Snapshot.Action, "channels:", len(e.Snapshot.Items), e.Snapshot.Items[0].Get("Channel"))
		case eventlog.KindEvent:
			fmt.Println(e.Event.Name, e.Event.Fields.Get("Uniqueid"), e.Event.Fields.Values("Variable"))
		case eventlog.KindGap:
			fmt.Printf("gap of %d (%s, inferred %v): state unknown until the next snapshot\n", e.Gap.Count, e.Gap.Reason, e.Inferred)
		case eventlog.KindSessionEnd:
			fmt.Println("session end:", e.End.Reason)
		case eventlog.KindInvalid:
			fmt.Println("undecodable:", e.Invalid.Err)
		}
	}
	// Output:
	// 1 pbx1 14:02:01 seq=0: new session a1 AMI 5.0.2
	// 2 pbx1 14:02:02 seq=0: snapshot CoreShowChannels channels: 1 PJSIP/100-00000001
	// 3 pbx1 14:02:03 seq=1: Newchannel 1700000000.2 []
	// 5 pbx1 14:02:05 seq=4: gap of 3 (buffer_full, inferred false): state unknown until the next snapshot
	// 6 pbx1 14:02:06 seq=5: VarSet  [A=1 B=2]
	// 7 pbx1 14:02:07 seq=6: gap of 1 (unmarked, inferred true): state unknown until the next snapshot
	// 7 pbx1 14:02:07 seq=7: Hangup 1700000000.2 []
	// 8 pbx1 14:02:08 seq=7: session end: eof
}

// Store the position of what has been handled, and resume from it later
// (after a restart): nothing is read twice, nothing is skipped.
func ExampleAfter() {
	js, stop := exampleStream()
	defer stop()
	ctx := context.Background()

	r, err := eventlog.Open(ctx, js)
	if err != nil {
		fmt.Println(err)
		return
	}
	var stored uint64
	for range 3 {
		e, err := r.Next(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println("handled", e.StreamSeq, e.Node, e.Kind)
		stored = e.Position() // with the state it produced, in one write
	}
	r.Close(ctx)

	r, err = eventlog.Open(ctx, js, eventlog.After(stored))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close(ctx)
	e, err := r.Next(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("resumed at", e.StreamSeq, e.Node, e.Kind, e.Event.Name)
	// Output:
	// handled 1 pbx1 session_start
	// handled 2 pbx1 snapshot
	// handled 3 pbx1 event
	// resumed at 4 pbx2 event FullyBooted
}

// A service that must resume where it stopped, without storing a position
// itself, reads through a durable consumer.
func ExampleDurable() {
	js, stop := exampleStream()
	defer stop()
	ctx := context.Background()

	read := func(n int) {
		r, err := eventlog.Open(ctx, js, eventlog.Durable("my-service"), eventlog.Nodes("pbx2", "pbx1"))
		if err != nil {
			fmt.Println(err)
			return
		}
		defer r.Close(ctx) // acknowledges what was handled
		for range n {
			e, err := r.Next(ctx)
			if err != nil {
				fmt.Println(err)
				return
			}
			fmt.Println(e.StreamSeq, e.Node, e.Kind)
		}
	}
	read(2)
	fmt.Println("restart")
	read(2)
	// Output:
	// 1 pbx1 session_start
	// 2 pbx1 snapshot
	// restart
	// 3 pbx1 event
	// 4 pbx2 event
}
