// Command bare is the benchmark's ceiling (internal/bare) as a process:
// it accepts the one public key in -key, prints the address it listens on
// (127.0.0.1, a free port) and serves until killed.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/internal/bare"
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Addr().String())
	log.Fatal(bare.New(allowed, hk).Serve(l))
}
