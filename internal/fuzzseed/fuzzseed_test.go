package fuzzseed

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed")
	in := []byte("a\x00\xff\"quoted\"\n")
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := Read(path)
	if err != nil || !bytes.Equal(in, out) {
		t.Fatalf("read back %q, %v", out, err)
	}
	for _, bad := range []string{"", "go test fuzz v1\n", "go test fuzz v1\nstring(\"x\")\n", "go test fuzz v1\n[]byte(\"x)\n", "v2\n[]byte(\"x\")\n"} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
