package media

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"sync"
	"time"
)

// The audio format of a call.
const (
	SampleRate    = 8000                  // Hz
	FrameSamples  = 160                   // samples per frame, mono
	FrameDuration = 20 * time.Millisecond // one frame
)

// FrameSource supplies outgoing audio. The Session calls ReadFrame once per 20 ms tick
// from one goroutine, so a source paces nothing itself; a source reading a live device
// may block briefly, but a ReadFrame that takes longer than a frame delays the call.
type FrameSource interface {
	// ReadFrame fills pcm (FrameSamples long) with the next frame. It returns io.EOF
	// when there is no more audio (a last partial frame is returned zero-padded first,
	// with a nil error).
	ReadFrame(pcm []int16) error
}

// FrameSink receives played-out audio, one frame per 20 ms tick, from one goroutine.
type FrameSink interface {
	// WriteFrame takes one frame. lost is true when the frame never arrived in time
	// and pcm is the silence that conceals it. pcm is only valid during the call.
	WriteFrame(pcm []int16, lost bool) error
}

// Silence is a FrameSource of endless silence (what a nil Config.Source means).
type Silence struct{}

var _ FrameSource = Silence{}

// ReadFrame fills pcm with zeros.
func (Silence) ReadFrame(pcm []int16) error {
	clear(pcm)
	return nil
}

// Discard is a FrameSink that drops everything (what a nil Config.Sink means).
type Discard struct{}

var _ FrameSink = Discard{}

// WriteFrame does nothing.
func (Discard) WriteFrame([]int16, bool) error { return nil }

// Sine is a FrameSource of a sine tone, for demos and tests. Its output depends only on
// its fields and the number of frames read, so a test can regenerate what was sent.
type Sine struct {
	Freq      float64 // Hz; 0 = 440
	Amplitude int16   // peak; 0 = 8000 (about -12 dBFS)
	Frames    int     // frames before io.EOF; 0 = endless

	n int // frames read
}

var _ FrameSource = (*Sine)(nil)

// ReadFrame fills pcm with the next frame of the tone.
func (s *Sine) ReadFrame(pcm []int16) error {
	if s.Frames > 0 && s.n >= s.Frames {
		return io.EOF
	}
	freq, amp := s.Freq, float64(s.Amplitude)
	if freq == 0 {
		freq = 440
	}
	if amp == 0 {
		amp = 8000
	}
	base := s.n * len(pcm)
	for i := range pcm {
		pcm[i] = int16(math.Round(amp * math.Sin(2*math.Pi*freq*float64(base+i)/SampleRate)))
	}
	s.n++
	return nil
}

// Recorder is a FrameSink that keeps frames in memory, for tests: the first Max frames
// are kept and later ones only counted. It is safe for concurrent use.
type Recorder struct {
	Max int // frames kept; 0 = 3000 (one minute)

	mu      sync.Mutex // mu protects the following fields
	frames  [][]int16
	lost    []bool
	dropped int
}

var _ FrameSink = (*Recorder)(nil)

// WriteFrame records a copy of pcm.
func (r *Recorder) WriteFrame(pcm []int16, lost bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	limit := r.Max
	if limit <= 0 {
		limit = 3000
	}
	if len(r.frames) >= limit {
		r.dropped++
		return nil
	}
	r.frames = append(r.frames, append([]int16(nil), pcm...))
	r.lost = append(r.lost, lost)
	return nil
}

// Frames returns the recorded frames and their lost flags (shared; do not modify).
func (r *Recorder) Frames() (pcm [][]int16, lost []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames[:len(r.frames):len(r.frames)], r.lost[:len(r.lost):len(r.lost)]
}

// Dropped returns how many frames arrived after the recorder was full.
func (r *Recorder) Dropped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// PCMReader is a FrameSource of raw 8 kHz mono signed 16-bit little-endian samples, as
// "arecord -f S16_LE -r 8000 -c 1 -t raw" writes them.
type PCMReader struct {
	r   io.Reader
	buf [2 * FrameSamples]byte
	eof bool
}

var _ FrameSource = (*PCMReader)(nil)

// NewPCMReader reads raw samples from r.
func NewPCMReader(r io.Reader) *PCMReader { return &PCMReader{r: r} }

// ReadFrame reads the next frame; a trailing partial frame is zero-padded.
func (p *PCMReader) ReadFrame(pcm []int16) error {
	if len(pcm) != FrameSamples {
		return ErrFrameSize
	}
	if p.eof {
		return io.EOF
	}
	n, err := io.ReadFull(p.r, p.buf[:])
	switch {
	case errors.Is(err, io.EOF):
		p.eof = true
		return io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		p.eof = true
		clear(p.buf[n:])
	case err != nil:
		return err
	}
	for i := range pcm {
		pcm[i] = int16(binary.LittleEndian.Uint16(p.buf[2*i:]))
	}
	return nil
}

// PCMWriter is a FrameSink writing raw 8 kHz mono signed 16-bit little-endian samples,
// for "aplay -f S16_LE -r 8000 -c 1 -t raw".
type PCMWriter struct {
	w   io.Writer
	buf [2 * FrameSamples]byte
}

var _ FrameSink = (*PCMWriter)(nil)

// NewPCMWriter writes raw samples to w.
func NewPCMWriter(w io.Writer) *PCMWriter { return &PCMWriter{w: w} }

// WriteFrame writes pcm (concealed frames too: they keep the stream in time).
func (p *PCMWriter) WriteFrame(pcm []int16, _ bool) error {
	if len(pcm) != FrameSamples {
		return ErrFrameSize
	}
	for i, s := range pcm {
		binary.LittleEndian.PutUint16(p.buf[2*i:], uint16(s))
	}
	_, err := p.w.Write(p.buf[:])
	return err
}
