package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/metrics"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(burst int) (*slog.Logger, *bytes.Buffer, *clock, *metrics.Set) {
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	m := new(metrics.Set)
	h := New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), Options{Burst: burst, Interval: time.Second, Counter: m, Now: c.now})
	return slog.New(h), &buf, c, m
}

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestBurstPerMessage(t *testing.T) {
	log, buf, c, m := newTest(3)
	for i := range 1000 {
		log.Info("bad credential", "n", i)
		log.Info("other")
	}
	got := lines(buf)
	if len(got) != 6 {
		t.Fatalf("%d lines passed, want 3 of each message:\n%s", len(got), buf)
	}
	if n := m.Get("log_suppressed"); n != 2*997 {
		t.Fatalf("log_suppressed = %d, want %d", n, 2*997)
	}
	buf.Reset()
	c.t = c.t.Add(time.Second)
	log.Info("bad credential", "n", 1000)
	got = lines(buf)
	if len(got) != 2 || !strings.Contains(got[0], `msg="log lines suppressed"`) || !strings.Contains(got[0], "count=997") || !strings.Contains(got[0], `msg="bad credential"`) {
		t.Fatalf("after the window, want a summary then the line:\n%s", buf)
	}
	if !strings.Contains(got[1], "n=1000") {
		t.Fatalf("the line after the summary is %q", got[1])
	}
}

func TestOncePerSource(t *testing.T) {
	log, buf, c, m := newTest(100)
	for port := range 50 {
		log.Warn("handshake failed", "remote", "192.0.2.7:"+string(rune('0'+port%10))+"1")
		log.Warn("handshake failed", "remote", "198.51.100.9:4000")
	}
	if got := lines(buf); len(got) != 2 {
		t.Fatalf("%d lines for two sources, want 2:\n%s", len(got), buf)
	}
	if n := m.Get("log_suppressed"); n != 98 {
		t.Fatalf("log_suppressed = %d, want 98", n)
	}
	buf.Reset()
	c.t = c.t.Add(2 * time.Second)
	log.Warn("handshake failed", "remote", "192.0.2.7:1")
	got := lines(buf)
	if len(got) != 2 || !strings.Contains(got[0], "count=98") || !strings.Contains(got[0], "level=WARN") {
		t.Fatalf("next window: want summary at WARN and the line:\n%s", buf)
	}
}

func TestDerivedLoggersShareTheLimit(t *testing.T) {
	log, buf, _, _ := newTest(2)
	a, b := log.With("role", "a"), log.WithGroup("g")
	a.Info("x")
	b.Info("x")
	log.Info("x")
	if got := lines(buf); len(got) != 2 {
		t.Fatalf("%d lines, want 2 across derived loggers:\n%s", len(got), buf)
	}
}

func TestWrapOnce(t *testing.T) {
	l := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	w := Wrap(l, nil)
	if Wrap(w, nil) != w {
		t.Fatal("Wrap of a wrapped logger wrapped it again")
	}
	if Wrap(nil, nil) != nil {
		t.Fatal("Wrap(nil) is not nil")
	}
}

func TestMessagesFormattedAtRunTimeStayBounded(t *testing.T) {
	log, buf, _, m := newTest(5)
	for i := range 3 * maxMessages {
		log.Debug(fmt.Sprintf("pion: packet %d dropped", i))
	}
	got := len(lines(buf))
	if got > maxMessages+5 {
		t.Fatalf("%d lines passed for %d distinct messages, bound %d", got, 3*maxMessages, maxMessages+5)
	}
	if m.Get("log_suppressed") == 0 {
		t.Fatal("nothing counted as suppressed")
	}
}
