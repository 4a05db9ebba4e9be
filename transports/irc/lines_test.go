package irc

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
)

// pollLines feeds data to a polled connection in reads cut at the given
// sizes, as the poller does, and returns the lines it gives.
func pollLines(t *testing.T, data []byte, cuts []int) ([]string, error) {
	t.Helper()
	c := &conn{polled: true}
	var lines []string
	for len(data) > 0 {
		n := len(data)
		if len(cuts) > 0 {
			n = min(max(cuts[0], 1), n)
			cuts = cuts[1:]
		}
		// The poller's buffer is read into again: nothing may point
		// into it after the read is handled.
		buf := append([]byte(nil), data[:n]...)
		c.src = buf
		data = data[n:]
		for {
			b, err := c.nextLine()
			if errors.Is(err, errWouldBlock) {
				break
			}
			if err != nil {
				return lines, err
			}
			lines = append(lines, string(b))
		}
		for i := range buf {
			buf[i] = 'X'
		}
	}
	return lines, nil
}

// wantLines is how lines are cut: at LF, with a CR before it dropped.
func wantLines(data []byte) []string {
	var out []string
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return out
		}
		out = append(out, strings.TrimSuffix(string(data[:i]), "\r"))
		data = data[i+1:]
	}
}

func TestPolledLinesCutAnywhere(t *testing.T) {
	data := []byte(":irc.test 001 nick :Welcome\r\n@time=2026-01-01T00:00:00Z :a!b@c PRIVMSG #x :hi\r\n\r\nPING :x\nPART #y\r\n:partial")
	want := wantLines(data)
	for cut := 1; cut <= len(data); cut++ {
		got, err := pollLines(t, data, repeatInt(cut, len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("reads of %d bytes: %q, want %q", cut, got, want)
		}
	}
}

func TestPolledConnectionKeepsNoBuffer(t *testing.T) {
	c := &conn{polled: true}
	c.src = []byte("PING :a\r\nPING :b\r\n")
	for range 2 {
		if _, err := c.nextLine(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.nextLine(); !errors.Is(err, errWouldBlock) {
		t.Fatalf("no more lines: %v", err)
	}
	if c.part != nil || c.rbuf != nil {
		t.Errorf("an idle polled connection holds %d + %d bytes", cap(c.part), cap(c.rbuf))
	}
}

func TestLineTooLong(t *testing.T) {
	long := bytes.Repeat([]byte("a"), maxRead+1)
	if _, err := pollLines(t, long, []int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000}); !errors.Is(err, errLineTooLong) {
		t.Errorf("polled: %v, want %v", err, errLineTooLong)
	}
	a, b := net.Pipe()
	defer a.Close()
	go func() { b.Write(long); b.Write([]byte("\r\n")); b.Close() }()
	c := &conn{nc: a}
	if _, err := c.nextLine(); !errors.Is(err, errLineTooLong) {
		t.Errorf("read: %v, want %v", err, errLineTooLong)
	}
}

func TestReadLinesFromConnection(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	data := []byte(strings.Repeat(":srv 372 nick :- message of the day line\r\n", 200) + "PING :end\r\n")
	go func() { b.Write(data); b.Close() }()
	c := &conn{nc: a}
	var got []string
	for {
		l, err := c.nextLine()
		if err != nil {
			break
		}
		got = append(got, string(l))
	}
	if want := wantLines(data); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %d lines, want %d", len(got), len(want))
	}
}

// FuzzLines: however the reads cut the server's bytes, the same lines.
func FuzzLines(f *testing.F) {
	f.Add([]byte("PING :x\r\nPRIVMSG #a :b\n\r\n"), []byte{3, 1, 7})
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		got, err := pollLines(t, data, sizes)
		if err != nil {
			return // longer than maxRead without a newline
		}
		if want := wantLines(data); strings.Join(got, "\x00|") != strings.Join(want, "\x00|") {
			t.Fatalf("%q cut at %v: %q, want %q", data, sizes, got, want)
		}
	})
}

func repeatInt(v, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = v
	}
	return out
}
