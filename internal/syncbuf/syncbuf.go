// Package syncbuf holds Buffer, a bytes.Buffer safe for concurrent use: the sink tests
// give a logger that several goroutines write to while the test reads what was logged.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer whose methods may be called concurrently. The zero value is
// an empty buffer ready to use.
type Buffer struct {
	mu sync.Mutex // mu protects b
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns a copy of what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
