package server

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// countingConn counts the reads that reach the connection.
type countingConn struct {
	net.Conn
	reads int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	return c.Conn.Read(p)
}

// The client's version line is read a byte at a time by x/crypto; those
// reads are served from one read ahead, the bytes behind the line reach
// the next reader in order, and nothing stays buffered afterwards.
func TestVersionLineIsReadAheadOnce(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	counted := &countingConn{Conn: server}
	tc := &trackedConn{Conn: counted}
	kexInit := bytes.Repeat([]byte{0x14, 0xab, 0x00}, 300)
	sent := append([]byte("SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n"), kexInit...)
	go client.Write(sent)

	var got []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(got, []byte("\r\n")) {
		if _, err := io.ReadFull(tc, b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b[0])
	}
	if counted.reads != 1 {
		t.Errorf("the version line took %d reads of the connection, want 1", counted.reads)
	}
	rest := make([]byte, 4096)
	n, err := io.ReadAtLeast(tc, rest, len(kexInit))
	if err != nil {
		t.Fatal(err)
	}
	if got = append(got, rest[:n]...); !bytes.Equal(got, sent) {
		t.Fatalf("the bytes came out changed or out of order")
	}
	if tc.ahead != nil {
		t.Errorf("%d bytes stay read ahead after the handshake", len(tc.ahead))
	}
	// Reads of a full buffer go straight to the connection.
	before := counted.reads
	go client.Write([]byte("later"))
	if n, _ := tc.Read(rest); string(rest[:n]) != "later" || counted.reads != before+1 || tc.ahead != nil {
		t.Errorf("a large read: %q, %d reads, %d bytes ahead", rest[:n], counted.reads-before, len(tc.ahead))
	}
}
