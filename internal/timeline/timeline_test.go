package timeline

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRateAndFiles(t *testing.T) {
	start := time.Unix(1000, 0)
	r := New(start)
	for i := 0; i <= 10; i++ {
		r.Add(start.Add(time.Duration(i)*time.Second), map[string]float64{"logins": float64(i * i), "attached": float64(10 * i)})
	}
	r.Mark(start.Add(5*time.Second), "restart")
	s := r.Samples()
	Rate(s, "logins", "logins/s")
	if got := s[4].Values["logins/s"]; got != 7 { // 16 - 9
		t.Fatalf("rate at 4 s = %v, want 7", got)
	}
	dir := t.TempDir()
	if err := WriteTable(filepath.Join(dir, "t.tsv"), s, []string{"attached", "logins/s"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "t.tsv"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 12 || lines[0] != "t_s\tattached\tlogins/s" || lines[5] != "4.0\t40\t7" {
		t.Fatalf("table:\n%s", b)
	}
	path := filepath.Join(dir, "t.png")
	if err := WritePNG(path, "test", s, r.Marks(), []Panel{{Title: "users", Y: "users", Series: []string{"attached"}},
		{Title: "logins", Y: "per s", Series: []string{"logins/s"}}}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if sz := img.Bounds().Size(); sz.X < 800 || sz.Y < 400 {
		t.Fatalf("picture %v", sz)
	}
	if err := WritePNG(path, "empty", nil, nil, []Panel{{Series: []string{"x"}}}); err != ErrNoSamples {
		t.Fatalf("no samples: %v", err)
	}
}
