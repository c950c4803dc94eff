package client

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/proto"
)

// Audio formats of the call commands' files.
const (
	AudioWAV  = "wav"  // a WAV file
	AudioRaw  = "raw"  // raw signed 16-bit little-endian PCM, 8 kHz mono (a file or a pipe)
	AudioTone = "tone" // send: a 440 Hz tone, no file
	AudioNone = ""     // send: silence; record: nothing
)

// thenSilence plays src, then silence: an answered call goes on after its file ends.
type thenSilence struct {
	src  media.FrameSource
	done bool
}

func (t *thenSilence) ReadFrame(pcm []int16) error {
	if !t.done {
		err := t.src.ReadFrame(pcm)
		if err == nil {
			return nil
		}
		t.done = true
	}
	clear(pcm)
	return nil
}

// openSource opens what a call sends. The caller's source ends the call when it ends;
// an answerer's (endless) plays silence after it.
func openSource(path, format string, endless bool) (media.FrameSource, func(), error) {
	nop := func() {}
	var src media.FrameSource
	closeFn := nop
	switch format {
	case AudioNone:
		return media.Silence{}, nop, nil
	case AudioTone:
		return &media.Sine{Freq: 440}, nop, nil
	case AudioWAV, AudioRaw:
		f, err := os.Open(path)
		if err != nil {
			return nil, nop, err
		}
		closeFn = func() { f.Close() }
		if format == AudioWAV {
			w, err := media.NewWAVReader(f)
			if err != nil {
				f.Close()
				return nil, nop, fmt.Errorf("%s: %w", path, err)
			}
			src = w
		} else {
			src = media.NewPCMReader(f)
		}
	default:
		return nil, nop, fmt.Errorf("unknown audio format %q", format)
	}
	if endless {
		src = &thenSilence{src: src}
	}
	return src, closeFn, nil
}

// openSink opens where a call's received audio goes.
func openSink(path, format string) (media.FrameSink, func(), error) {
	switch format {
	case AudioNone:
		return media.Discard{}, func() {}, nil
	case AudioWAV:
		w, err := media.CreateWAV(path)
		if err != nil {
			return nil, func() {}, err
		}
		return w, func() { w.Close() }, nil
	case AudioRaw:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, func() {}, err
		}
		return media.NewPCMWriter(f), func() { f.Close() }, nil
	}
	return nil, func() {}, fmt.Errorf("unknown audio format %q", format)
}

// answerAudio is the audio of a call answered on our own: CallConfig.AnswerSend (or a
// tone) into it, and a recording in CallConfig.RecordDir.
func (p *phone) answerAudio(id string) (CallOptions, func(), error) {
	format := AudioTone
	if p.cfg.AnswerSend != "" {
		format = AudioWAV
	}
	src, closeSrc, err := openSource(p.cfg.AnswerSend, format, true)
	if err != nil {
		return CallOptions{}, func() {}, err
	}
	var sink media.FrameSink = media.Discard{}
	closeSink := func() {}
	if p.cfg.RecordDir != "" {
		if err := os.MkdirAll(p.cfg.RecordDir, 0o755); err != nil {
			closeSrc()
			return CallOptions{}, func() {}, err
		}
		sink, closeSink, err = openSink(filepath.Join(p.cfg.RecordDir, id+".wav"), AudioWAV)
		if err != nil {
			closeSrc()
			return CallOptions{}, func() {}, err
		}
	}
	return CallOptions{Source: src, Sink: sink}, func() { closeSink(); closeSrc() }, nil
}

// callRequest parses the arguments of the call and answer control commands:
// target, send path, send format, record path, record format, duration in ms.
func callRequest(args []string, endless bool) (target string, opts CallOptions, closeAll func(), err error) {
	closeAll = func() {}
	if len(args) != 6 {
		return "", opts, closeAll, proto.ErrBadRequest.With("call takes 6 arguments, got %d", len(args))
	}
	d, err := strconv.ParseInt(args[5], 10, 64)
	if err != nil || d < 0 {
		return "", opts, closeAll, proto.ErrBadRequest.With("bad duration %q", args[5])
	}
	src, closeSrc, err := openSource(args[1], args[2], endless)
	if err != nil {
		return "", opts, closeAll, err
	}
	sink, closeSink, err := openSink(args[3], args[4])
	if err != nil {
		closeSrc()
		return "", opts, closeAll, err
	}
	opts = CallOptions{Source: src, Sink: sink, Duration: time.Duration(d) * time.Millisecond}
	return args[0], opts, func() { closeSink(); closeSrc() }, nil
}
