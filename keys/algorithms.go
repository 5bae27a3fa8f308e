package keys

import "golang.org/x/crypto/ssh"

// The algorithms tsadmin negotiates, as a server and as a relaying client,
// and nothing else: ssh-audit fails x/crypto's defaults (SHA-1 kex and
// MACs, the NIST curves for kex). A misspelled name would be dropped
// silently by x/crypto, so they are x/crypto's own constants, and the
// server's tests check each one is negotiated.
//
// aes256-ctr and aes128-ctr come after the AEAD ciphers, with the
// encrypt-then-MAC MACs, as OpenSSH's defaults have them: Paramiko before
// 3.x (Debian 12 ships 2.12) knows no AEAD cipher and could not connect.
// A client that knows both picks the AEAD one, since it is listed first.
var (
	KeyExchanges = []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519}
	Ciphers      = []string{ssh.CipherAES256GCM, ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305, ssh.CipherAES256CTR, ssh.CipherAES128CTR}
	MACs         = []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM}
	// UserSignatureAlgorithms are accepted from clients: no ssh-rsa
	// (SHA-1), no ssh-dss.
	UserSignatureAlgorithms = []string{
		ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512,
	}
	// UserKeyTypes are the key types of UserSignatureAlgorithms: an RSA
	// key is of type ssh-rsa whichever hash signs with it.
	UserKeyTypes = []string{
		ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoRSA,
	}
)
