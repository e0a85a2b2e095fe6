// Package state is the projection behind ami-state: from a node's ordered
// event log (events plus session, gap and snapshot markers) it keeps which
// channels are up, which bridges hold them and who waits in which queue.
//
// The projection (Projection, Apply) is pure: no I/O, no clock, no calls to
// the PBX. Applying the same messages in the same order always gives the same
// state, which is what makes rebuild, resume and time travel exact. The
// service around it (Service) reads the stream, applies and flushes the keys
// the projection marks dirty to a JetStream KV bucket.
package state

import "time"

// Channel is the value of a channel key: one live channel, keyed by Uniqueid.
type Channel struct {
	Uniqueid          string    `json:"uniqueid"`
	Channel           string    `json:"channel"`
	State             int       `json:"state"`
	StateDesc         string    `json:"state_desc"`
	CallerIDNum       string    `json:"caller_id_num"`
	CallerIDName      string    `json:"caller_id_name"`
	ConnectedLineNum  string    `json:"connected_line_num"`
	ConnectedLineName string    `json:"connected_line_name"`
	AccountCode       string    `json:"account_code"`
	Language          string    `json:"language"`
	Context           string    `json:"context"`
	Exten             string    `json:"exten"`
	Priority          string    `json:"priority"`
	Application       string    `json:"application"`
	ApplicationData   string    `json:"application_data"`
	Linkedid          string    `json:"linkedid"`
	Bridge            string    `json:"bridge"`
	DialStatus        string    `json:"dial_status"`
	OnHold            bool      `json:"on_hold"`
	Created           time.Time `json:"created"`
	Answered          time.Time `json:"answered,omitzero"`
	Seq               uint64    `json:"seq"`

	stored bool // the KV holds a value for this key (a delete must be written)
}

// Bridge is the value of a bridge key. Members is a set of Uniqueids, kept
// sorted so that equal states encode equally.
type Bridge struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Technology string    `json:"technology"`
	Creator    string    `json:"creator"`
	Name       string    `json:"name"`
	Members    []string  `json:"members"`
	Created    time.Time `json:"created"`
	Seq        uint64    `json:"seq"`

	stored bool
}

// QueueMember is one member (agent) of a queue, keyed by its interface.
type QueueMember struct {
	Interface      string `json:"interface"`
	Name           string `json:"name"`
	StateInterface string `json:"state_interface"`
	Membership     string `json:"membership"`
	Penalty        string `json:"penalty"`
	Status         string `json:"status"`
	Paused         bool   `json:"paused"`
	PausedReason   string `json:"paused_reason"`
	InCall         bool   `json:"in_call"`
	CallsTaken     string `json:"calls_taken"`
}

// QueueCaller is one caller waiting in a queue.
type QueueCaller struct {
	Uniqueid     string    `json:"uniqueid"`
	Channel      string    `json:"channel"`
	Position     int       `json:"position"`
	CallerIDNum  string    `json:"caller_id_num"`
	CallerIDName string    `json:"caller_id_name"`
	Since        time.Time `json:"since"`
}

// Queue is the value of a queue key. Members are sorted by interface and
// callers by position.
type Queue struct {
	Name     string        `json:"name"`
	Strategy string        `json:"strategy"`
	Members  []QueueMember `json:"members"`
	Callers  []QueueCaller `json:"callers"`
	Seq      uint64        `json:"seq"`

	stored bool
}

// Status is the value of a node's status key; it is also the node's
// checkpoint: Seq is the last stream sequence whose effects are in every
// key written before it.
type Status struct {
	Node    string    `json:"node"`
	Session string    `json:"session"`
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	// SessionSeq is the session's seq once that message is applied (the
	// reader's position in the session, for resuming).
	SessionSeq  uint64 `json:"session_seq"`
	Stale       bool   `json:"stale"`
	StaleReason string `json:"stale_reason,omitempty"`
	Channels    int    `json:"channels"`
	Bridges     int    `json:"bridges"`
	Queues      int    `json:"queues"`
	// Uptime is the PBX uptime last reported by FullyBooted (seconds); a
	// smaller one later means the PBX restarted.
	Uptime int64 `json:"uptime"`
	// Restarts counts PBX restarts seen; BadEvents the events this node's
	// projection could not fully apply (see the bad-input reasons).
	Restarts  uint64 `json:"restarts"`
	BadEvents uint64 `json:"bad_events"`
	// SnapshotSession is the session of the last complete CoreShowChannels
	// snapshot applied: a restart seen after it in the same session (the
	// PBX sends FullyBooted after the login's snapshot) changes nothing.
	SnapshotSession string `json:"snapshot_session,omitempty"`
}

// Snapshot is a node's whole state as one document: the answer of
// ami.state.<node> and ami.state.<node>.at.
type Snapshot struct {
	Node     string    `json:"node"`
	Status   Status    `json:"status"`
	Channels []Channel `json:"channels"`
	Bridges  []Bridge  `json:"bridges"`
	Queues   []Queue   `json:"queues"`
}
