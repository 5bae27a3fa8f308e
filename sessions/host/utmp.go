// Package host is the `host` session source: the machine's real login
// sessions, read from utmp (what `who` shows) and cross-checked against
// /proc, with sessions that have no terminal (ssh -T, scp, cron) found by
// their kernel audit session id. A logoff sends SIGHUP to every process of
// the session, then SIGKILL after the grace period, through pidfds so that
// a PID reused meanwhile is never signalled. It needs no systemd.
package host

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"runtime"
	"time"
)

// utmp record types (utmp.h).
const (
	loginProcess = 6
	userProcess  = 7
	deadProcess  = 8
)

// Record is one utmp entry, with its strings as the file holds them.
type Record struct {
	Type      int16
	PID       int32
	Line      string // device, without /dev/: pts/3, tty1
	ID        string
	User      string
	Host      string
	Session   int64
	Time      time.Time
	AddrV6    [16]byte
	RecordOff int64 // where the record starts in the file
}

// Layouts of struct utmp. glibc keeps 32-bit times in utmp on most 64-bit
// platforms (x86-64, arm64, ppc64le, s390x: 384 bytes); platforms with
// 64-bit time_t and no 32-bit compat (riscv64, loong64) use 400 bytes.
const (
	Size384 = 384
	Size400 = 400
)

// NativeSize is the record size for this architecture.
func NativeSize() int {
	switch runtime.GOARCH {
	case "riscv64", "loong64":
		return Size400
	}
	return Size384
}

// maxUtmpBytes bounds how much of a utmp file is read: 64 Ki records.
const maxUtmpBytes = 64 << 10 * Size400

// ReadFile reads the USER_PROCESS records of a utmp file. A missing file
// means no sessions, not an error.
func ReadFile(path string, size int) ([]Record, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Sized to the file, read in one go: io.ReadAll would grow its
	// buffer a step at a time, several times the file in garbage at
	// every listing.
	var buf bytes.Buffer
	if st, err := f.Stat(); err == nil && st.Size() < maxUtmpBytes {
		buf.Grow(int(st.Size()) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(f, maxUtmpBytes)); err != nil {
		return nil, err
	}
	return Parse(buf.Bytes(), size), nil
}

// Parse decodes utmp records of the given size and returns the
// USER_PROCESS ones. A truncated last record is ignored; nothing in the
// data can make it fail.
func Parse(data []byte, size int) []Record {
	if size != Size384 && size != Size400 {
		size = NativeSize()
	}
	var out []Record
	for off := 0; off+size <= len(data); off += size {
		r := decode(data[off:off+size], size)
		r.RecordOff = int64(off)
		if r.Type == userProcess && r.PID > 0 && r.Line != "" && r.User != "" {
			out = append(out, r)
		}
	}
	return out
}

func decode(b []byte, size int) Record {
	le := binary.LittleEndian
	r := Record{
		Type: int16(le.Uint16(b[0:])),
		PID:  int32(le.Uint32(b[4:])),
		Line: cstring(b[8:40]),
		ID:   cstring(b[40:44]),
		User: cstring(b[44:76]),
		Host: cstring(b[76:332]),
	}
	var sec, usec int64
	var addr []byte
	if size == Size384 {
		r.Session = int64(int32(le.Uint32(b[336:])))
		sec, usec = int64(int32(le.Uint32(b[340:]))), int64(int32(le.Uint32(b[344:])))
		addr = b[348:364]
	} else {
		r.Session = int64(le.Uint64(b[336:]))
		sec, usec = int64(le.Uint64(b[344:])), int64(le.Uint64(b[352:]))
		addr = b[360:376]
	}
	if sec > 0 && usec >= 0 && usec < 1e6 {
		r.Time = time.Unix(sec, usec*1000)
	}
	copy(r.AddrV6[:], addr)
	return r
}

// cstring is a NUL-terminated field; bytes after the NUL are ignored.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// Encode writes a record in the given layout, for fixtures and tests.
func Encode(r Record, size int) []byte {
	b := make([]byte, size)
	le := binary.LittleEndian
	le.PutUint16(b[0:], uint16(r.Type))
	le.PutUint32(b[4:], uint32(r.PID))
	copy(b[8:40], r.Line)
	copy(b[40:44], r.ID)
	copy(b[44:76], r.User)
	copy(b[76:332], r.Host)
	sec, usec := int64(0), int64(0)
	if !r.Time.IsZero() {
		sec, usec = r.Time.Unix(), int64(r.Time.Nanosecond()/1000)
	}
	if size == Size384 {
		le.PutUint32(b[336:], uint32(r.Session))
		le.PutUint32(b[340:], uint32(sec))
		le.PutUint32(b[344:], uint32(usec))
		copy(b[348:364], r.AddrV6[:])
	} else {
		le.PutUint64(b[336:], uint64(r.Session))
		le.PutUint64(b[344:], uint64(sec))
		le.PutUint64(b[352:], uint64(usec))
		copy(b[360:376], r.AddrV6[:])
	}
	return b
}
