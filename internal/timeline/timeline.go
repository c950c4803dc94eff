// Package timeline records figures sampled over a run (users attached, logins per second,
// supernode load) and writes them as a table and as a plot of stacked panels, so that a
// storm can be read at a glance and checked figure by figure.
package timeline

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Sample is the figures of one moment, by name.
type Sample struct {
	At     time.Duration // since the recording started
	Values map[string]float64
}

// Recorder collects samples. It is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu      sync.Mutex // mu protects samples and marks
	samples []Sample
	marks   []Mark
}

// Mark is an event on the time axis (a kill, a restart).
type Mark struct {
	At   time.Duration
	Name string
}

// New starts a recording at start.
func New(start time.Time) *Recorder { return &Recorder{start: start} }

// Start is when the recording started.
func (r *Recorder) Start() time.Time { return r.start }

// Add records values taken at at.
func (r *Recorder) Add(at time.Time, values map[string]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, Sample{At: at.Sub(r.start), Values: values})
}

// Mark records an event at at.
func (r *Recorder) Mark(at time.Time, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, Mark{At: at.Sub(r.start), Name: name})
}

// Samples returns a copy of the samples so far, in order.
func (r *Recorder) Samples() []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.samples)
}

// Marks returns a copy of the marks so far.
func (r *Recorder) Marks() []Mark {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.marks)
}

// Rate turns a counter (a running total) into a per-second rate between samples:
// sample i gets (v[i]-v[i-1]) / (t[i]-t[i-1]) under the name to.
func Rate(samples []Sample, from, to string) {
	for i := range samples {
		if i == 0 {
			samples[i].Values[to] = 0
			continue
		}
		dt := (samples[i].At - samples[i-1].At).Seconds()
		if dt <= 0 {
			samples[i].Values[to] = 0
			continue
		}
		samples[i].Values[to] = (samples[i].Values[from] - samples[i-1].Values[from]) / dt
	}
}

// Panel is one plot of the stack: the named series over time.
type Panel struct {
	Title  string
	Y      string   // the vertical axis's label
	Series []string // names of values in the samples
}

// WriteTable writes the samples as tab-separated text: a header of the keys, then a line
// per sample, the time in seconds first.
func WriteTable(path string, samples []Sample, keys []string) error {
	var b strings.Builder
	b.WriteString("t_s")
	for _, k := range keys {
		b.WriteString("\t" + k)
	}
	b.WriteString("\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%.1f", s.At.Seconds())
		for _, k := range keys {
			fmt.Fprintf(&b, "\t%g", s.Values[k])
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// ErrNoSamples: nothing to plot.
var ErrNoSamples = errors.New("timeline: no samples")

// WritePNG plots the panels one above the other against time, with the marks as
// vertical lines, and writes the picture to path.
func WritePNG(path, title string, samples []Sample, marks []Mark, panels []Panel) error {
	if len(samples) == 0 {
		return ErrNoSamples
	}
	if len(panels) == 0 {
		return errors.New("timeline: no panels")
	}
	plots := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.Title
		if i == 0 && title != "" {
			p.Title.Text = title + "\n" + pn.Title
		}
		p.Y.Label.Text = pn.Y
		if i == len(panels)-1 {
			p.X.Label.Text = "seconds"
		}
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		p.Legend.Left = true
		ymax := 0.0
		for j, name := range pn.Series {
			pts := make(plotter.XYs, 0, len(samples))
			for _, s := range samples {
				v, ok := s.Values[name]
				if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
					continue
				}
				pts = append(pts, plotter.XY{X: s.At.Seconds(), Y: v})
				ymax = max(ymax, v)
			}
			if len(pts) == 0 {
				continue
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return fmt.Errorf("timeline: %s: %w", name, err)
			}
			l.Color = plotutil.Color(j)
			l.Width = vg.Points(1.5)
			p.Add(l)
			p.Legend.Add(name, l)
		}
		p.Y.Min = 0
		p.Y.Max = max(ymax*1.15, 1)
		for _, m := range marks {
			l, err := plotter.NewLine(plotter.XYs{{X: m.At.Seconds(), Y: 0}, {X: m.At.Seconds(), Y: p.Y.Max}})
			if err != nil {
				return err
			}
			l.Color = color.Gray{Y: 96}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(l)
			if i == 0 {
				p.Legend.Add(fmt.Sprintf("%s (%.0f s)", m.Name, m.At.Seconds()), l)
			}
		}
		p.X.Min = 0
		p.X.Max = samples[len(samples)-1].At.Seconds()
		plots[i] = []*plot.Plot{p}
	}
	const width, panelHeight = 900, 230
	img := vgimg.New(vg.Points(width), vg.Points(float64(panelHeight*len(panels))))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6),
		PadLeft: vg.Points(6), PadRight: vg.Points(12), PadY: vg.Points(10)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
