// Command bare is the benchmark's ceiling: a gliderlabs/ssh server that
// accepts one public key and answers any command with one fixed line. It
// is what anything built on the library must pay at least.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
)

func main() {
	keyFile := flag.String("key", "", "authorized public key file")
	hostKeyFile := flag.String("hostkey", "", "host private key file")
	flag.Parse()
	pubData, err := os.ReadFile(*keyFile)
	if err != nil {
		log.Fatal(err)
	}
	allowed, _, _, _, err := gossh.ParseAuthorizedKey(pubData)
	if err != nil {
		log.Fatal(err)
	}
	hkData, err := os.ReadFile(*hostKeyFile)
	if err != nil {
		log.Fatal(err)
	}
	hk, err := gossh.ParsePrivateKey(hkData)
	if err != nil {
		log.Fatal(err)
	}
	srv := &gliderssh.Server{
		HostSigners: []gliderssh.Signer{hk},
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			return gliderssh.KeysEqual(key, allowed)
		},
		Handler: func(s gliderssh.Session) {
			if _, _, isPty := s.Pty(); isPty {
				// An idle interactive session: hold it until the client goes.
				io.Copy(io.Discard, s)
				return
			}
			io.WriteString(s, "SESSIONNAME USERNAME ID STATE\n")
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Addr().String())
	log.Fatal(srv.Serve(l))
}
