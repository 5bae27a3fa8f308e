package shell

import (
	"bytes"
	"encoding/binary"
	"io"
)

// EscapeWriter returns the one printer through which everything a session
// shows reaches the client: each line is written through Clean, so that no
// control character or escape sequence from outside (a process or user
// name in /v, a peer's output, an error quoting input) can move the
// admin's cursor or retitle their terminal. Newlines separate lines and
// are kept. Tables and JSON are clean already and pass unchanged.
func EscapeWriter(w io.Writer) io.Writer { return escapeWriter{w} }

type escapeWriter struct{ w io.Writer }

func (e escapeWriter) Write(p []byte) (int, error) {
	if clean(p) {
		if _, err := e.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	var b bytes.Buffer
	for rest := p; len(rest) > 0; {
		line, tail, nl := bytes.Cut(rest, []byte{'\n'})
		b.WriteString(Clean(string(line)))
		if nl {
			b.WriteByte('\n')
		}
		rest = tail
	}
	if _, err := e.w.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeChecked writes p, which the caller has checked with clean, to w.
// When w is the escaping printer, p goes past its scan to the writer
// beneath: the printer would have written p unchanged, so the bytes are
// the same, and a table of thousands of lines kept from earlier listings
// is not read again.
func writeChecked(w io.Writer, p []byte) (int, error) {
	if e, ok := w.(escapeWriter); ok {
		if _, err := e.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return w.Write(p)
}

// clean reports whether p is printable ASCII, spaces and newlines only:
// the common case, written as it is. It looks at eight bytes at a time
// (a listing of thousands of sessions is most of a megabyte), and byte by
// byte only at a word that holds a byte below a space: a newline, or
// something to escape.
func clean(p []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(p) >= 8 {
		w := binary.LittleEndian.Uint64(p)
		if w&highs != 0 { // a byte of 0x80 or above
			return false
		}
		if del := w ^ (0x7f * ones); (del-ones)&^del&highs != 0 { // a DEL
			return false
		}
		if (w-' '*ones)&^w&highs != 0 && !cleanBytes(p[:8]) { // below a space
			return false
		}
		p = p[8:]
	}
	return cleanBytes(p)
}

func cleanBytes(p []byte) bool {
	for _, c := range p {
		if (c < ' ' && c != '\n') || c >= 0x7f {
			return false
		}
	}
	return true
}
