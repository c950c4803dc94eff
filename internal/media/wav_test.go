package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// buildWAV builds a WAV file with one fmt chunk, any extra chunks, and data.
func buildWAV(tag uint16, ch, rate int, bits uint16, data []byte, extra ...[]byte) []byte {
	var fmtc []byte
	fmtc = binary.LittleEndian.AppendUint16(fmtc, tag)
	fmtc = binary.LittleEndian.AppendUint16(fmtc, uint16(ch))
	fmtc = binary.LittleEndian.AppendUint32(fmtc, uint32(rate))
	fmtc = binary.LittleEndian.AppendUint32(fmtc, uint32(rate*ch*int(bits)/8))
	fmtc = binary.LittleEndian.AppendUint16(fmtc, uint16(ch*int(bits)/8))
	fmtc = binary.LittleEndian.AppendUint16(fmtc, bits)
	if tag == wavFormatExtensible {
		fmtc = binary.LittleEndian.AppendUint16(fmtc, 22)
		fmtc = binary.LittleEndian.AppendUint16(fmtc, bits)
		fmtc = binary.LittleEndian.AppendUint32(fmtc, 0)
		fmtc = append(fmtc, pcmSubFormat...)
	}
	body := []byte("WAVEfmt ")
	body = binary.LittleEndian.AppendUint32(body, uint32(len(fmtc)))
	body = append(body, fmtc...)
	for _, e := range extra {
		body = append(body, e...)
	}
	body = append(body, "data"...)
	body = binary.LittleEndian.AppendUint32(body, uint32(len(data)))
	body = append(body, data...)
	out := []byte("RIFF")
	out = binary.LittleEndian.AppendUint32(out, uint32(len(body)))
	return append(out, body...)
}

func samplesLE(s []int16) []byte {
	var b []byte
	for _, v := range s {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return b
}

// wavBytes is what WAVWriter writes for frames.
func wavBytes(t testing.TB, frames [][]int16) []byte {
	return buildWAV(wavFormatPCM, 1, SampleRate, 16, samplesLE(slices.Concat(frames...)))
}

// streamingWAV has the data size a streaming writer leaves: read until EOF.
func streamingWAV() []byte {
	b := buildWAV(wavFormatPCM, 1, 8000, 16, samplesLE(make([]int16, 400)))
	binary.LittleEndian.PutUint32(b[40:], 0xffffffff)
	return b
}

func readAll(t *testing.T, r FrameSource) [][]int16 {
	t.Helper()
	var out [][]int16
	for {
		pcm := make([]int16, FrameSamples)
		err := r.ReadFrame(pcm)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pcm)
		if len(out) > 100000 {
			t.Fatal("endless source")
		}
	}
}

func TestWAVRoundTrip(t *testing.T) {
	frames := expectedFrames(&Sine{Freq: 300}, 25)
	name := filepath.Join(t.TempDir(), "call.wav")
	w, err := CreateWAV(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WriteFrame(f, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if want := wavBytes(t, frames); !bytes.Equal(b, want) {
		t.Fatalf("file is not the canonical 44-byte-header WAV (%d bytes, want %d)", len(b), len(want))
	}
	r, err := NewWAVReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if f := r.Format(); f != (WAVFormat{Channels: 1, SampleRate: 8000}) {
		t.Errorf("format %+v", f)
	}
	if got := readAll(t, r); !slices.EqualFunc(got, frames, slices.Equal) {
		t.Errorf("read back %d frames, differing from the %d written", len(got), len(frames))
	}
}

func TestWAVReader(t *testing.T) {
	t.Run("stereo_downmix", func(t *testing.T) {
		var s []int16
		for i := range 160 {
			s = append(s, int16(i*10), int16(i*10+4)) // average i*10+2
		}
		got := readAll(t, mustWAV(t, buildWAV(wavFormatPCM, 2, 8000, 16, samplesLE(s))))
		if len(got) != 1 || got[0][0] != 2 || got[0][159] != 1592 {
			t.Errorf("got %d frames starting %v", len(got), got[0][:3])
		}
	})
	t.Run("partial_frame_padded", func(t *testing.T) {
		got := readAll(t, mustWAV(t, buildWAV(wavFormatPCM, 1, 8000, 16, samplesLE(slices.Repeat([]int16{7}, 200)))))
		if len(got) != 2 || got[1][39] != 7 || got[1][40] != 0 {
			t.Errorf("got %d frames", len(got))
		}
	})
	t.Run("list_chunk_and_extensible", func(t *testing.T) {
		data := samplesLE(slices.Repeat([]int16{5}, 160))
		for _, b := range [][]byte{
			buildWAV(wavFormatPCM, 1, 8000, 16, data, []byte("LIST\x03\x00\x00\x00abc\x00")),
			buildWAV(wavFormatExtensible, 1, 8000, 16, data),
		} {
			if got := readAll(t, mustWAV(t, b)); len(got) != 1 || got[0][0] != 5 {
				t.Errorf("got %d frames", len(got))
			}
		}
	})
	t.Run("streaming_size", func(t *testing.T) {
		if got := readAll(t, mustWAV(t, streamingWAV())); len(got) != 3 {
			t.Errorf("got %d frames, want 3 (400 samples)", len(got))
		}
	})
	// Resampling: a 400 Hz tone at other rates comes out as the 8 kHz tone, within
	// linear interpolation's error.
	for _, rate := range []int{16000, 44100, 48000, 11025} {
		t.Run("resample_"+strconv.Itoa(rate), func(t *testing.T) {
			const freq, amp = 400.0, 10000.0
			n := rate / 2 // half a second
			src := make([]int16, n)
			for i := range src {
				src[i] = int16(math.Round(amp * math.Sin(2*math.Pi*freq*float64(i)/float64(rate))))
			}
			got := slices.Concat(readAll(t, mustWAV(t, buildWAV(wavFormatPCM, 1, rate, 16, samplesLE(src))))...)
			if len(got) < 3960 || len(got) > 4160 {
				t.Fatalf("%d samples at 8 kHz from half a second", len(got))
			}
			worst := 0.0
			for k := range 3900 {
				want := amp * math.Sin(2*math.Pi*freq*float64(k)/SampleRate)
				worst = max(worst, math.Abs(float64(got[k])-want))
			}
			if worst > 0.01*amp {
				t.Errorf("worst error %.0f, want below 1%% of %v", worst, amp)
			}
		})
	}
	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"float":      {buildWAV(3, 1, 8000, 32, make([]byte, 64)), ErrUnsupportedWAV},
		"8bit":       {buildWAV(wavFormatPCM, 1, 8000, 8, make([]byte, 64)), ErrUnsupportedWAV},
		"24bit":      {buildWAV(wavFormatPCM, 1, 8000, 24, make([]byte, 64)), ErrUnsupportedWAV},
		"3channels":  {buildWAV(wavFormatPCM, 3, 8000, 16, make([]byte, 64)), ErrUnsupportedWAV},
		"rate_500":   {buildWAV(wavFormatPCM, 1, 500, 16, make([]byte, 64)), ErrUnsupportedWAV},
		"mp3":        {buildWAV(0x55, 1, 8000, 16, make([]byte, 64)), ErrUnsupportedWAV},
		"not_riff":   {[]byte("OggS and then some bytes"), ErrNotWAV},
		"empty":      {nil, ErrNotWAV},
		"no_data":    {buildWAV(wavFormatPCM, 1, 8000, 16, nil)[:36], ErrNotWAV},
		"data_first": {[]byte("RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00"), ErrNotWAV},
	} {
		if _, err := NewWAVReader(bytes.NewReader(tc.b)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func mustWAV(t *testing.T, b []byte) *WAVReader {
	t.Helper()
	r, err := NewWAVReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPCMRaw(t *testing.T) {
	frames := expectedFrames(&Sine{}, 3)
	var buf bytes.Buffer
	w := NewPCMWriter(&buf)
	for _, f := range frames {
		if err := w.WriteFrame(f, false); err != nil {
			t.Fatal(err)
		}
	}
	buf.Write([]byte{1, 0, 2}) // a partial frame: one sample and a half, zero-padded
	got := readAll(t, NewPCMReader(&buf))
	if len(got) != 4 || !slices.EqualFunc(got[:3], frames, slices.Equal) || !slices.Equal(got[3][:3], []int16{1, 2, 0}) {
		t.Errorf("read %d frames back", len(got))
	}
}
