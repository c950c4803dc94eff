package media

import "errors"

// Errors of the packet layer, the session and the audio files. The packet errors are what
// a receiver counts (Stats.BadPackets, Stats.Replayed, Stats.Duplicates) and logs at
// debug level; none of them ends a call, since anyone on a path can send junk.
var (
	// ErrMalformed: the packet is too short or too long, has an unknown type, a body of
	// the wrong length for its type, or sequence number 0. The sender runs an
	// incompatible or broken client, or the bytes are not Peerline media at all.
	ErrMalformed = errors.New("media: malformed packet")

	// ErrVersion: the packet's version byte is not Version; the peer runs another
	// Peerline release. Both sides must update.
	ErrVersion = errors.New("media: unsupported packet version; update Peerline on both ends")

	// ErrAuth: the AEAD tag does not verify. The packet was sealed under another call
	// key or for the other direction, or it was altered on the path (a relay or an
	// attacker tampering). Such packets are dropped.
	ErrAuth = errors.New("media: packet does not authenticate (another call's key, or altered in transit)")

	// ErrReplay: the packet's sequence number was already accepted, or is older than the
	// replay window. Copies of one packet arriving over two paths are expected during a
	// path switch; the same packet twice on one path is a replay.
	ErrReplay = errors.New("media: replayed or duplicate packet")

	// ErrSeqExhausted: the sender used up the 48-bit sequence space (after 178 years
	// of audio at 50 packets a second); the call must be re-keyed.
	ErrSeqExhausted = errors.New("media: sequence numbers exhausted; start a new call")

	// ErrInvalidPacket: Seal was given something it cannot send (unknown type, a
	// payload on a type that has none, an empty or oversized audio payload).
	ErrInvalidPacket = errors.New("media: packet cannot be sealed")

	// ErrConfig: NewSession was given an unusable Config.
	ErrConfig = errors.New("media: invalid session config")

	// ErrRunning: Run was called twice on one Session; a Session carries one call.
	ErrRunning = errors.New("media: session already started; create a new Session per call")

	// ErrNotWAV: the input is not a RIFF/WAVE file.
	ErrNotWAV = errors.New("media: not a WAV file")

	// ErrUnsupportedWAV: the WAV file is not 16-bit PCM with one or two channels. Convert
	// it, e.g. "sox in.wav -b 16 -e signed-integer -c 1 out.wav".
	ErrUnsupportedWAV = errors.New("media: unsupported WAV format (need 16-bit PCM, mono or stereo); convert it with e.g. sox in.wav -b 16 -e signed-integer -c 1 out.wav")

	// ErrFrameSize: a FrameSource or FrameSink was handed a buffer that is not one
	// frame (FrameSamples samples).
	ErrFrameSize = errors.New("media: buffer is not one 20 ms frame of 160 samples")
)
