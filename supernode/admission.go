package supernode

import (
	"math/rand/v2"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/proto"
)

// Admission: a supernode admits clients at the rate it can serve them and sheds the
// rest with a busy answer that says when to come back and where to go instead, so that
// a boot storm or the clients of dead supernodes arriving at once are spread over the
// layer instead of piling onto whoever they reach first (the Dec 2010 outage: the load
// of the lost supernodes moved onto the others, which shut down under it).
//
// Two bounds, both answered with proto.ErrBusy, a retry-after and up to maxAlternatives
// less loaded supernodes:
//
//   - MaxAttached clients at once (attach_shed_full). It sits below MaxClients, the
//     listener's connection limit, so a full supernode still answers the clients it
//     turns away, instead of the listener closing their connections unanswered.
//   - AttachConcurrency attachments in progress at once (attach_shed_concurrency). An
//     attachment is in progress from the Attach request until the client's first
//     publication has been answered: a credential check (an Ed25519 signature), a record
//     check (another, plus the record's parsing) and the record's replication to its
//     holders, which is the attachment's real cost, several RPCs on other supernodes.
//     The listener's handshakes run before it and are bounded by MaxClients. The bound
//     is a few per core, by Little's law: a whole attachment (handshake, Attach, first
//     publication) takes about 3.3 ms of wall time with both ends in one process on
//     this 2-core machine (BenchmarkAttach), so a supernode saturating its cores at a
//     thousand or so attachments a second has some 3 to 15 in progress; 8 per core
//     keeps every core busy while some wait on their holders, and a crowd of thousands
//     is served a few at a time at full speed instead of all at once, each waiting for
//     all the others and timing out together.
//
// The loads of the other supernodes come with the login server's answer to every
// heartbeat (the least loaded members, each with the clients it reported and its
// limit), which flows anyway; no extra message is sent for them.

// maxAlternatives is how many less loaded supernodes a busy answer names.
const maxAlternatives = 8

// admission tracks the attachments in progress and what is known of the others' load.
type admission struct {
	slots chan struct{} // one per attachment in progress

	mu       sync.Mutex            // mu protects the following fields
	loads    []proto.SupernodeInfo // the least loaded supernodes, from the last heartbeat answer
	layer    proto.Layer           // the layer against its target, from the same answer
	loadsAt  time.Time             // when loads was received
	peakRing int                   // the largest ring seen since overload began (demotion)
}

func defaultConcurrency() int { return max(16, 8*runtime.GOMAXPROCS(0)) }

func newAdmission(concurrency int) *admission {
	return &admission{slots: make(chan struct{}, concurrency)}
}

// acquire takes a slot for an attachment in progress; false when all are taken.
func (a *admission) acquire() bool {
	select {
	case a.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (a *admission) release() { <-a.slots }

// attaching is the number of attachments in progress.
func (a *admission) attaching() int { return len(a.slots) }

// setLoads records a heartbeat answer's loads and layer.
func (a *admission) setLoads(list []proto.SupernodeInfo, layer proto.Layer, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loads, a.layer, a.loadsAt = list, layer, now
}

// Layer is the supernode layer's size against its target, as the login server last
// said it.
func (sn *Supernode) Layer() proto.Layer {
	sn.adm.mu.Lock()
	defer sn.adm.mu.Unlock()
	return sn.adm.layer
}

// alternatives picks up to maxAlternatives supernodes with fewer clients than this one
// has (clients) and room for more, at random among them so that the clients one busy
// supernode sheds do not all land on the same one. Without load figures (no heartbeat
// answered yet, or a login server that sends none) it picks from the member list.
func (sn *Supernode) alternatives(clients int) []proto.SupernodeInfo {
	sn.adm.mu.Lock()
	loads := sn.adm.loads
	sn.adm.mu.Unlock()
	var out []proto.SupernodeInfo
	for _, s := range loads {
		if s.ID == sn.id || s.Clients >= clients || (s.MaxClients > 0 && s.Clients >= s.MaxClients) {
			continue
		}
		if sn.ix.Alive(s.ID) {
			out = append(out, s)
		}
	}
	if len(loads) == 0 {
		out = sn.Peers()
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if len(out) > maxAlternatives {
		out = out[:maxAlternatives]
	}
	// Least loaded first among those picked.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Clients < out[j].Clients })
	return out
}

// headroom is the clients the known less loaded supernodes could still take.
func (sn *Supernode) headroom() int {
	sn.adm.mu.Lock()
	defer sn.adm.mu.Unlock()
	n := 0
	for _, s := range sn.adm.loads {
		if s.ID != sn.id && s.MaxClients > s.Clients {
			n += s.MaxClients - s.Clients
		}
	}
	return n
}

// busy is the answer to an Attach beyond a bound: retry-after jittered around base, so
// that the clients shed together do not come back together, and the alternatives.
func (sn *Supernode) busy(why string, base time.Duration, clients int) *proto.Error {
	ra := base/2 + rand.N(base)
	alts := sn.alternatives(clients)
	sn.m.Add("alternatives_given", uint64(len(alts)))
	return proto.ErrBusy.With("supernode busy (%s); try the alternatives", why).WithRetry(ra).WithAlternatives(alts)
}
