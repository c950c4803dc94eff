package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// WAV files: RIFF/WAVE with a "fmt " chunk and a "data" chunk, as written by arecord,
// sox and most editors. The reader takes 16-bit PCM (format 1, or WAVE_FORMAT_EXTENSIBLE
// with the PCM sub-format), mono or stereo, at any rate from 1 kHz to 192 kHz; it
// downmixes stereo by averaging and resamples to 8 kHz by linear interpolation (no
// low-pass filter: fine for voice from 16 kHz, audibly aliased from music at 44.1 kHz).
// A data chunk of size 0 or 0xffffffff, which streaming writers leave, means "until
// the end of the input". The writer writes 8 kHz mono 16-bit PCM.

const (
	wavFormatPCM        = 1
	wavFormatExtensible = 0xfffe
	wavMinRate          = 1000
	wavMaxRate          = 192000
	wavHeaderLen        = 44
)

// pcmSubFormat is KSDATAFORMAT_SUBTYPE_PCM, 00000001-0000-0010-8000-00aa00389b71, in
// its on-disk byte order.
var pcmSubFormat = []byte{1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71}

// WAVFormat describes a WAV file's audio.
type WAVFormat struct {
	Channels   int // 1 or 2
	SampleRate int // Hz
}

// WAVReader is a FrameSource reading a WAV file.
type WAVReader struct {
	r      io.Reader // the data chunk's bytes
	format WAVFormat

	raw    []byte  // read buffer
	left   int     // bytes of a partial sample frame at the start of raw
	src    []int16 // mono samples at the file's rate, src[0] is absolute index base
	base   int64
	srcEOF bool
	k      int64 // next output sample (at 8 kHz)
	done   bool
}

var _ FrameSource = (*WAVReader)(nil)

// NewWAVReader parses the WAV header from r and leaves r at the first sample. Errors
// wrap ErrNotWAV or ErrUnsupportedWAV, or are r's.
func NewWAVReader(r io.Reader) (*WAVReader, error) {
	var riff [12]byte
	if _, err := io.ReadFull(r, riff[:]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotWAV, noEOF(err))
	}
	if string(riff[0:4]) != "RIFF" || string(riff[8:12]) != "WAVE" {
		return nil, fmt.Errorf("%w: no RIFF/WAVE signature", ErrNotWAV)
	}
	var f WAVFormat
	haveFmt := false
	for {
		var ch [8]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			return nil, fmt.Errorf("%w: no data chunk: %w", ErrNotWAV, noEOF(err))
		}
		id, size := string(ch[0:4]), binary.LittleEndian.Uint32(ch[4:8])
		switch id {
		case "fmt ":
			if size < 16 || size > 64 {
				return nil, fmt.Errorf("%w: fmt chunk of %d bytes", ErrNotWAV, size)
			}
			b := make([]byte, size+size&1)
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, fmt.Errorf("%w: fmt chunk: %w", ErrNotWAV, noEOF(err))
			}
			var err error
			if f, err = parseWAVFormat(b[:size]); err != nil {
				return nil, err
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return nil, fmt.Errorf("%w: data chunk before fmt chunk", ErrNotWAV)
			}
			var data io.Reader = r
			if size != 0 && size != 0xffffffff {
				data = io.LimitReader(r, int64(size))
			}
			return &WAVReader{r: data, format: f, raw: make([]byte, 4096)}, nil
		default:
			// LIST, fact, cue...: skip, with the RIFF pad byte.
			if _, err := io.CopyN(io.Discard, r, int64(size)+int64(size&1)); err != nil {
				return nil, fmt.Errorf("%w: chunk %q: %w", ErrNotWAV, id, noEOF(err))
			}
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func parseWAVFormat(b []byte) (WAVFormat, error) {
	tag := binary.LittleEndian.Uint16(b[0:2])
	f := WAVFormat{
		Channels:   int(binary.LittleEndian.Uint16(b[2:4])),
		SampleRate: int(binary.LittleEndian.Uint32(b[4:8])),
	}
	align := binary.LittleEndian.Uint16(b[12:14])
	bits := binary.LittleEndian.Uint16(b[14:16])
	if tag == wavFormatExtensible {
		if len(b) < 40 || !bytes.Equal(b[24:40], pcmSubFormat) {
			return WAVFormat{}, fmt.Errorf("%w: extensible format with a non-PCM sub-format", ErrUnsupportedWAV)
		}
		tag = wavFormatPCM
	}
	switch {
	case tag != wavFormatPCM:
		return WAVFormat{}, fmt.Errorf("%w: format tag %#x (compressed or floating point)", ErrUnsupportedWAV, tag)
	case bits != 16:
		return WAVFormat{}, fmt.Errorf("%w: %d bits per sample", ErrUnsupportedWAV, bits)
	case f.Channels != 1 && f.Channels != 2:
		return WAVFormat{}, fmt.Errorf("%w: %d channels", ErrUnsupportedWAV, f.Channels)
	case f.SampleRate < wavMinRate || f.SampleRate > wavMaxRate:
		return WAVFormat{}, fmt.Errorf("%w: sample rate %d Hz (want %d..%d)", ErrUnsupportedWAV, f.SampleRate, wavMinRate, wavMaxRate)
	case int(align) != 2*f.Channels:
		return WAVFormat{}, fmt.Errorf("%w: block align %d for %d channels of 16 bits", ErrNotWAV, align, f.Channels)
	}
	return f, nil
}

// Format returns the file's format (before downmixing and resampling).
func (w *WAVReader) Format() WAVFormat { return w.format }

// fill reads more source samples, downmixed, until at least need samples from base are
// buffered or the data ends.
func (w *WAVReader) fill(need int) error {
	frame := 2 * w.format.Channels
	for len(w.src) < need && !w.srcEOF {
		n, err := w.r.Read(w.raw[w.left:])
		n += w.left
		if errors.Is(err, io.EOF) {
			w.srcEOF = true // a truncated last sample frame is dropped
		} else if err != nil {
			return err
		}
		whole := n - n%frame
		for i := 0; i < whole; i += frame {
			s := int32(int16(binary.LittleEndian.Uint16(w.raw[i:])))
			if w.format.Channels == 2 {
				s = (s + int32(int16(binary.LittleEndian.Uint16(w.raw[i+2:])))) / 2
			}
			w.src = append(w.src, int16(s))
		}
		w.left = copy(w.raw, w.raw[whole:n])
	}
	return nil
}

// ReadFrame returns the next 20 ms at 8 kHz.
func (w *WAVReader) ReadFrame(pcm []int16) error {
	if len(pcm) != FrameSamples {
		return ErrFrameSize
	}
	if w.done {
		return io.EOF
	}
	rate := int64(w.format.SampleRate)
	for i := range pcm {
		pos := w.k * rate // in units of 1/SampleRate of a source sample
		idx, frac := pos/SampleRate, pos%SampleRate
		// Drop samples behind idx, which are never needed again, in batches.
		if drop := idx - w.base; drop >= 4096 && int(drop) <= len(w.src) {
			w.src = w.src[:copy(w.src, w.src[drop:])]
			w.base = idx
		}
		if err := w.fill(int(idx-w.base) + 2); err != nil {
			return err
		}
		at := int(idx - w.base)
		if at >= len(w.src) {
			w.done = true
			if i == 0 {
				return io.EOF
			}
			clear(pcm[i:])
			return nil
		}
		a := int64(w.src[at])
		if frac != 0 && at+1 < len(w.src) {
			b := int64(w.src[at+1])
			a += (b - a) * frac / SampleRate
		}
		pcm[i] = int16(a)
		w.k++
	}
	return nil
}

// WAVWriter is a FrameSink writing an 8 kHz mono 16-bit PCM WAV file. The header's
// sizes are fixed at Close; a file not closed reads as empty or streaming.
type WAVWriter struct {
	ws     io.WriteSeeker
	owned  io.Closer // the file CreateWAV opened, closed by Close
	n      int64     // data bytes written
	buf    [2 * FrameSamples]byte
	closed bool
}

var _ FrameSink = (*WAVWriter)(nil)

// maxWAVData is the largest data chunk a RIFF size field can describe.
const maxWAVData = 1<<32 - 1 - (wavHeaderLen - 8)

// NewWAVWriter writes a header to ws and returns a writer for the samples. Close fixes
// the header but does not close ws.
func NewWAVWriter(ws io.WriteSeeker) (*WAVWriter, error) {
	w := &WAVWriter{ws: ws}
	if _, err := ws.Write(wavHeader(0)); err != nil {
		return nil, err
	}
	return w, nil
}

// CreateWAV creates (or truncates) the file name and returns a writer that closes it at
// Close.
func CreateWAV(name string) (*WAVWriter, error) {
	f, err := os.Create(name)
	if err != nil {
		return nil, err
	}
	w, err := NewWAVWriter(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	w.owned = f
	return w, nil
}

func wavHeader(data uint32) []byte {
	h := make([]byte, 0, wavHeaderLen)
	h = append(h, "RIFF"...)
	h = binary.LittleEndian.AppendUint32(h, data+wavHeaderLen-8)
	h = append(h, "WAVEfmt "...)
	h = binary.LittleEndian.AppendUint32(h, 16)
	h = binary.LittleEndian.AppendUint16(h, wavFormatPCM)
	h = binary.LittleEndian.AppendUint16(h, 1)
	h = binary.LittleEndian.AppendUint32(h, SampleRate)
	h = binary.LittleEndian.AppendUint32(h, 2*SampleRate)
	h = binary.LittleEndian.AppendUint16(h, 2)
	h = binary.LittleEndian.AppendUint16(h, 16)
	h = append(h, "data"...)
	return binary.LittleEndian.AppendUint32(h, data)
}

// WriteFrame appends pcm to the file.
func (w *WAVWriter) WriteFrame(pcm []int16, _ bool) error {
	if w.closed {
		return os.ErrClosed
	}
	if len(pcm) > FrameSamples {
		return ErrFrameSize
	}
	if w.n+int64(2*len(pcm)) > maxWAVData {
		return fmt.Errorf("media: WAV file full (4 GiB); start a new file")
	}
	for i, s := range pcm {
		binary.LittleEndian.PutUint16(w.buf[2*i:], uint16(s))
	}
	n, err := w.ws.Write(w.buf[:2*len(pcm)])
	w.n += int64(n)
	return err
}

// Close writes the final sizes into the header and, for CreateWAV, closes the file. It
// is idempotent.
func (w *WAVWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.fixHeader()
	if w.owned != nil {
		if cerr := w.owned.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

func (w *WAVWriter) fixHeader() error {
	if _, err := w.ws.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := w.ws.Write(wavHeader(uint32(w.n))); err != nil {
		return err
	}
	_, err := w.ws.Seek(0, io.SeekEnd)
	return err
}
