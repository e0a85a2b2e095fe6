package session

import (
	"bufio"
	"github.com/amibus/amibus/internal/testenv"
	"net"
	"testing"
	"time"
)

// TestOnAnswerAtItsPlaceInTheWireOrder: the peer writes events, a whole list
// answer, and more events in one write. OnAnswer runs on the reader between
// the Handler's last event before the list's completion and its first
// after. An action that timed out unanswered gets none.
func TestOnAnswerAtItsPlaceInTheWireOrder(t *testing.T) {
	leakCheck(t)
	ev := func(name string) string { return "Event: " + name + "\r\nPrivilege: user,all\r\n\r\n" }
	p := testenv.ServeTCP(t, func(c net.Conn) {
		c.Write([]byte("Asterisk Call Manager/9.0.0\r\n"))
		br := bufio.NewReader(c)
		for {
			hs, ok := readAction(br)
			if !ok {
				return
			}
			id := header(hs, "ActionID")
			switch header(hs, "Action") {
			case "Login":
				c.Write([]byte("Response: Success\r\nActionID: " + id + "\r\nMessage: Authentication accepted\r\n\r\n"))
			case "CoreShowChannels":
				c.Write([]byte(ev("Before") +
					"Response: Success\r\nActionID: " + id + "\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n" +
					"Event: CoreShowChannel\r\nActionID: " + id + "\r\nChannel: PJSIP/100-00000001\r\n\r\n" +
					"Event: CoreShowChannelsComplete\r\nActionID: " + id + "\r\nEventList: Complete\r\nListItems: 1\r\n\r\n" +
					ev("After1") + ev("After2")))
			case "Logoff":
				c.Write([]byte("Response: Goodbye\r\nActionID: " + id + "\r\n\r\n"))
				return
			}
			// Anything else (Silent) is never answered.
		}
	})
	s, rec, _ := startSession(t, p.Addr())
	waitStarts(t, rec, 1)

	// Timed out unanswered: no OnAnswer.
	if _, err := s.Send(ctxTimeout(t, 50*time.Millisecond), Action{Name: "Silent", OnAnswer: func(*Result) {
		rec.add(call{kind: "answer", name: "Silent"})
	}}); err == nil {
		t.Fatal("Silent answered")
	}
	res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "CoreShowChannels", OnAnswer: func(r *Result) {
		rec.add(call{kind: "answer", name: r.Events[0].Get("Channel")})
	}})
	if err != nil || len(res.Events) != 2 {
		t.Fatalf("CoreShowChannels: %v, %+v", err, res)
	}
	log := rec.waitFor(t, "the events after the list", func(l []call) bool { return countName(l, "After2") == 1 })
	var order []string
	for _, x := range log {
		if x.kind == "event" || x.kind == "answer" {
			order = append(order, x.name)
		}
	}
	want := []string{"Before", "PJSIP/100-00000001", "After1", "After2"}
	if len(order) != len(want) {
		t.Fatalf("order %q, want %q", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order %q, want %q", order, want)
		}
	}
}
