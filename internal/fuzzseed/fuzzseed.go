// Package fuzzseed reads and writes the seed files of a `go test -fuzz` corpus
// (testdata/fuzz/FuzzName/*) for fuzz targets that take one []byte, so that tests can
// check that checked-in seeds still give their outcome and rewrite them when a format
// changes.
package fuzzseed

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const header = "go test fuzz v1"

// Encode returns the seed file for b.
func Encode(b []byte) []byte {
	return fmt.Appendf(nil, "%s\n[]byte(%q)\n", header, b)
}

// Decode parses a seed file holding one []byte.
func Decode(data []byte) ([]byte, error) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 || lines[0] != header || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		return nil, fmt.Errorf("fuzzseed: not a one-[]byte %q file", header)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		return nil, fmt.Errorf("fuzzseed: %w", err)
	}
	return []byte(s), nil
}

// Read reads the seed file at path.
func Read(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// Write writes b as the seed file at path.
func Write(path string, b []byte) error { return os.WriteFile(path, Encode(b), 0o644) }

// Sync holds the corpus in dir (testdata/fuzz/FuzzName) to seeds, by file name: with
// update it first rewrites dir from them; then every seed must be on disk as built here,
// and check, if not nil, sees each one as read. A test's TestFuzzCorpus calls it for
// each target, with update from its -update-corpus flag.
func Sync(t testing.TB, dir string, seeds map[string][]byte, update bool, check func(t testing.TB, name string, b []byte)) {
	t.Helper()
	if update {
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			if err := Write(filepath.Join(dir, name), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range seeds {
		got, err := Read(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s seed %s differs from the one built here; run go test -run TestFuzzCorpus -update-corpus", filepath.Base(dir), name)
		}
		if check != nil {
			check(t, name, got)
		}
	}
}
