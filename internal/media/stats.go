package media

import (
	"fmt"
	"time"
)

// Stats is a snapshot of a call, from one side. Counts of received audio are in frames
// (20 ms); times are in milliseconds.
type Stats struct {
	FramesSent     uint64 `json:"frames_sent"`
	BytesSent      uint64 `json:"bytes_sent"` // every packet, every path
	FramesReceived uint64 `json:"frames_received"`
	BytesReceived  uint64 `json:"bytes_received"` // every authenticated packet
	// Lost is RTP's cumulative loss: frames expected from the first to the highest
	// received media timestamp, less held time, less frames received (late included).
	Lost        uint64  `json:"lost"`
	LossPercent float64 `json:"loss_percent"`
	Late        uint64  `json:"late"`       // arrived after their playout time; dropped
	Concealed   uint64  `json:"concealed"`  // played out as silence because missing
	Duplicates  uint64  `json:"duplicates"` // a packet's second copy over another path
	Replayed    uint64  `json:"replayed"`   // a packet again on the same path, or too old
	BadPackets  uint64  `json:"bad_packets"`
	JitterMs    float64 `json:"jitter_ms"` // RFC 3550 interarrival jitter
	RTTMs       float64 `json:"rtt_ms"`    // smoothed, on the active path; 0 = unknown

	ActiveKind  PathKind     `json:"active_kind,omitempty"` // "" = no live path
	ActiveName  string       `json:"active_name,omitempty"`
	Paths       []PathStats  `json:"paths"`
	PathChanges []PathChange `json:"path_changes"`
	// MaxGapMs is the longest interval between received audio frames, hold excepted.
	MaxGapMs float64 `json:"max_gap_ms"`
	// SetupMs is the time from Run to the first received audio frame; -1 = none yet.
	SetupMs float64 `json:"setup_ms"`

	Held       bool    `json:"held"`         // this side is on hold
	PeerHeld   bool    `json:"peer_held"`    // the peer is on hold
	PeerHeldMs float64 `json:"peer_held_ms"` // total time the peer was on hold
	HoldSent   uint64  `json:"hold_sent"`    // hold packets sent
	PeerHungUp bool    `json:"peer_hung_up"`
}

// PathStats describes one path.
type PathStats struct {
	Kind            PathKind `json:"kind"`
	Name            string   `json:"name"`
	Rank            int      `json:"rank"`
	Alive           bool     `json:"alive"`
	Closed          bool     `json:"closed"`
	RTTMs           float64  `json:"rtt_ms"` // smoothed; 0 = no reply yet
	PacketsSent     uint64   `json:"packets_sent"`
	PacketsReceived uint64   `json:"packets_received"`
	BytesSent       uint64   `json:"bytes_sent"`
	BytesReceived   uint64   `json:"bytes_received"`
}

// PathChange records a change of the path this side sends media on. From or To is ""
// when no path was live (media then goes to every open path).
type PathChange struct {
	At     time.Time `json:"at"`
	From   string    `json:"from"` // kind:name
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	// GapMs is the longest interval between received audio frames that spans the
	// change (give or take two frames), as this side saw it: for a failover, the time
	// from the last frame on the dead path to the first on the new one. The peer's
	// Stats show the other direction.
	GapMs float64 `json:"gap_ms"`
}

// String describes a change as "from -> to (reason, gap N ms)".
func (c PathChange) String() string {
	return fmt.Sprintf("%s -> %s (%s, gap %.0f ms)", c.From, c.To, c.Reason, c.GapMs)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
