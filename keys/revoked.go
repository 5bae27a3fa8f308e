package keys

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Revocations is a revoked_keys file, as OpenSSH's RevokedKeys: either a
// plain list of public keys (authorized_keys format, one per line) or an
// OpenSSH KRL (PROTOCOL.krl). It is consulted for every key presented,
// every certificate, and every CA that signed one.
//
// A KRL's own signature sections are skipped, not verified: the file is
// read from the local disk, where whoever could forge it could also edit
// the config (OpenSSH 9.4 and later refuse signed KRLs altogether).
type Revocations struct {
	sha1   map[[sha1.Size]byte]bool
	sha256 map[[sha256.Size]byte]bool // of key blobs, and of whole certificates listed in a plain file
	certs  []certRevocation
}

// certRevocation is one KRL certificate section: certificates of one CA
// (or of any CA, when ca is nil) revoked by serial or key ID.
type certRevocation struct {
	ca      []byte
	serials map[uint64]bool
	ranges  [][2]uint64
	bitmaps []serialBitmap
	ids     map[string]bool
}

type serialBitmap struct {
	offset uint64
	bits   *big.Int
}

// krlMagic starts every KRL: "SSHKRL\n\0".
const krlMagic = "SSHKRL\n\x00"

// KRL section types, from PROTOCOL.krl.
const (
	krlCertificates    = 1
	krlExplicitKey     = 2
	krlFingerprintSHA1 = 3
	krlSignature       = 4
	krlFingerprintSHA2 = 5
	krlExtension       = 255

	krlCertSerialList   = 0x20
	krlCertSerialRange  = 0x21
	krlCertSerialBitmap = 0x22
	krlCertKeyID        = 0x23
	krlCertExtension    = 0x39
)

// ParseRevocations reads a revoked_keys file: a KRL when it starts with
// the KRL magic, else a list of public keys. Anything it cannot read is
// an error, never skipped: a revocation that is silently dropped would
// let the revoked key in.
func ParseRevocations(data []byte) (*Revocations, error) {
	r := &Revocations{sha1: map[[sha1.Size]byte]bool{}, sha256: map[[sha256.Size]byte]bool{}}
	if bytes.HasPrefix(data, []byte(krlMagic)) {
		return r, r.parseKRL(data[len(krlMagic):])
	}
	for i, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not a public key: %v", i+1, err)
		}
		r.sha256[sha256.Sum256(k.Marshal())] = true
	}
	return r, nil
}

// krlReader reads the SSH wire types of a KRL; the first error sticks.
type krlReader struct {
	b   []byte
	err error
}

func (r *krlReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *krlReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("truncated")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *krlReader) byte() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *krlReader) uint32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *krlReader) uint64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *krlReader) string() []byte {
	n := r.uint32()
	if n > uint32(len(r.b)) {
		r.fail("truncated")
		return nil
	}
	return r.take(int(n))
}

// hashes reads a fingerprint section: strings of size bytes each.
func (r *krlReader) hashes(size int, add func([]byte)) {
	for !r.done() {
		h := r.string()
		if r.err == nil && len(h) != size {
			r.fail("a fingerprint of %d bytes, not %d", len(h), size)
		}
		if r.err == nil {
			add(h)
		}
	}
}

// plainKey parses a KRL's key blob (an explicit key, a CA). Keys are then
// compared in x/crypto's own encoding, as the keys presented are.
func plainKey(blob []byte) (ssh.PublicKey, error) {
	k, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return nil, err
	}
	if _, isCert := k.(*ssh.Certificate); isCert {
		return nil, errors.New("a certificate where a plain key belongs")
	}
	return k, nil
}

func (r *krlReader) done() bool { return r.err != nil || len(r.b) == 0 }

func (rv *Revocations) parseKRL(data []byte) error {
	r := &krlReader{b: data}
	if v := r.uint32(); r.err == nil && v != 1 {
		return fmt.Errorf("KRL format version %d (only 1 is known)", v)
	}
	r.uint64() // krl_version
	r.uint64() // generated_date
	r.uint64() // flags: none are defined
	r.string() // reserved
	r.string() // comment
	for !r.done() {
		typ := r.byte()
		if typ == krlSignature {
			// signature_key and signature: skipped (see Revocations).
			r.string()
			r.string()
			continue
		}
		sec := &krlReader{b: r.string()}
		if r.err != nil {
			break
		}
		switch typ {
		case krlCertificates:
			rv.parseCertSection(sec)
		case krlExplicitKey:
			for !sec.done() {
				blob := sec.string()
				if sec.err != nil {
					break
				}
				k, err := plainKey(blob)
				if err != nil {
					sec.fail("explicit key: %v", err)
					break
				}
				rv.sha256[sha256.Sum256(k.Marshal())] = true
			}
		case krlFingerprintSHA1:
			sec.hashes(sha1.Size, func(h []byte) { rv.sha1[[sha1.Size]byte(h)] = true })
		case krlFingerprintSHA2:
			sec.hashes(sha256.Size, func(h []byte) { rv.sha256[[sha256.Size]byte(h)] = true })
		case krlExtension:
			parseKRLExtension(sec)
		default:
			return fmt.Errorf("KRL section type %d is not known", typ)
		}
		if sec.err != nil {
			return fmt.Errorf("KRL section type %d: %v", typ, sec.err)
		}
	}
	if r.err != nil {
		return fmt.Errorf("KRL: %v", r.err)
	}
	return nil
}

// parseKRLExtension skips an extension that is not critical and refuses
// one that is: tsadmin knows none.
func parseKRLExtension(r *krlReader) {
	name := r.string()
	critical := r.byte()
	r.string()
	if r.err == nil && critical != 0 {
		r.fail("critical extension %q is not supported", clip(name))
	}
	if !r.done() {
		r.fail("trailing data after an extension")
	}
}

func clip(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return fmt.Sprintf("%q", b)
}

func (rv *Revocations) parseCertSection(r *krlReader) {
	cr := certRevocation{serials: map[uint64]bool{}, ids: map[string]bool{}}
	// An empty CA key: the section applies to every CA.
	if blob := r.string(); len(blob) > 0 {
		k, err := plainKey(blob)
		if err != nil {
			r.fail("CA key: %v", err)
			return
		}
		cr.ca = k.Marshal()
	}
	r.string() // reserved
	for !r.done() {
		typ := r.byte()
		sub := &krlReader{b: r.string()}
		if r.err != nil {
			return
		}
		switch typ {
		case krlCertSerialList:
			for !sub.done() {
				cr.serials[sub.uint64()] = true
			}
		case krlCertSerialRange:
			lo, hi := sub.uint64(), sub.uint64()
			if sub.err == nil && lo > hi {
				sub.fail("serial range %d-%d is empty", lo, hi)
			}
			cr.ranges = append(cr.ranges, [2]uint64{lo, hi})
		case krlCertSerialBitmap:
			off := sub.uint64()
			mp := sub.string()
			if len(mp) > 0 && mp[0]&0x80 != 0 {
				sub.fail("negative serial bitmap")
			}
			cr.bitmaps = append(cr.bitmaps, serialBitmap{offset: off, bits: new(big.Int).SetBytes(mp)})
		case krlCertKeyID:
			for !sub.done() {
				cr.ids[string(sub.string())] = true
			}
		case krlCertExtension:
			parseKRLExtension(sub)
		default:
			r.fail("certificate subsection type %#x is not known", typ)
			return
		}
		if sub.err == nil && !sub.done() {
			sub.fail("trailing data")
		}
		if sub.err != nil {
			r.fail("certificate subsection type %#x: %v", typ, sub.err)
			return
		}
	}
	rv.certs = append(rv.certs, cr)
}

// ErrRevoked is returned for a key, certificate or CA listed in
// revoked_keys.
var ErrRevoked = errors.New("revoked")

// Check refuses a revoked key; for a certificate also its key, the
// certificate itself (by serial or key ID under its CA, or listed whole),
// and the CA that signed it.
func (rv *Revocations) Check(key ssh.PublicKey) error {
	if rv == nil {
		return nil
	}
	cert, isCert := key.(*ssh.Certificate)
	if !isCert {
		return rv.checkBlob(key.Marshal())
	}
	switch {
	case rv.blobRevoked(cert.Key.Marshal()):
		return fmt.Errorf("the certificate's key is %w (revoked_keys)", ErrRevoked)
	case rv.blobRevoked(cert.Marshal()):
		return fmt.Errorf("the certificate is %w (revoked_keys)", ErrRevoked)
	case rv.blobRevoked(cert.SignatureKey.Marshal()):
		return fmt.Errorf("the certificate's CA is %w (revoked_keys)", ErrRevoked)
	}
	ca := cert.SignatureKey.Marshal()
	for _, cr := range rv.certs {
		if cr.ca != nil && !bytes.Equal(cr.ca, ca) {
			continue
		}
		if cr.ids[cert.KeyId] {
			return fmt.Errorf("the certificate's key ID is %w (revoked_keys)", ErrRevoked)
		}
		if cr.serialRevoked(cert.Serial) {
			return fmt.Errorf("the certificate's serial %d is %w (revoked_keys)", cert.Serial, ErrRevoked)
		}
	}
	return nil
}

// checkBlob refuses a plain key, given by its wire form, that is
// revoked.
func (rv *Revocations) checkBlob(blob []byte) error {
	if rv != nil && rv.blobRevoked(blob) {
		return fmt.Errorf("the key is %w (revoked_keys)", ErrRevoked)
	}
	return nil
}

// CheckFingerprint refuses a key known only by its SHA256 fingerprint (as
// a relaying peer names it) when revoked_keys lists that key.
func (rv *Revocations) CheckFingerprint(fp string) error {
	if rv == nil {
		return nil
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(fp, "SHA256:"))
	if err != nil || len(raw) != sha256.Size {
		return fmt.Errorf("%s is not a SHA256 fingerprint", clip([]byte(fp)))
	}
	if rv.sha256[[sha256.Size]byte(raw)] {
		return fmt.Errorf("the key is %w (revoked_keys)", ErrRevoked)
	}
	return nil
}

func (rv *Revocations) blobRevoked(blob []byte) bool {
	return rv.sha256[sha256.Sum256(blob)] || rv.sha1[sha1.Sum(blob)]
}

// serialRevoked follows OpenSSH: serial 0 is what a CA writes when it
// gives none, so it is never revoked by serial.
func (cr certRevocation) serialRevoked(serial uint64) bool {
	if serial == 0 {
		return false
	}
	if cr.serials[serial] {
		return true
	}
	for _, r := range cr.ranges {
		if serial >= r[0] && serial <= r[1] {
			return true
		}
	}
	for _, b := range cr.bitmaps {
		if serial >= b.offset && serial-b.offset < uint64(b.bits.BitLen()) && b.bits.Bit(int(serial-b.offset)) == 1 {
			return true
		}
	}
	return false
}
