// Command bare is the benchmark's ceiling: a gliderlabs/ssh server that
// accepts one public key and answers any command with a listing's bytes:
// a header and a row per session it holds, its caller's included. It is
// what anything built on the library must pay at least, for the same
// output.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"

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
				held.Add(1)
				defer held.Add(-1)
				io.Copy(io.Discard, s)
				return
			}
			s.Write(listing(int(held.Load()) + 1))
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Addr().String())
	log.Fatal(srv.Serve(l))
}

// held counts the interactive sessions being held.
var held atomic.Int64

// The last listing built, for its row count: the rows change only when
// the held sessions do, and building 10,000 is not the ceiling's cost.
var (
	listingMu   sync.Mutex
	listingRows = -1
	listingText []byte
)

// listing is a header and n rows as wide as tsadmin's `query session`
// rows (78 bytes with a two-digit ID), so that the ceiling moves the bytes tsadmin does.
func listing(n int) []byte {
	listingMu.Lock()
	defer listingMu.Unlock()
	if n != listingRows {
		b := []byte(" SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE\n")
		for i := 1; i <= n; i++ {
			b = fmt.Appendf(b, " %-17s %-24s %2d  %-6s  %-10s  %s\n", fmt.Sprintf("ssh#%d", i), "bench", i, "Active", "tsadmin", "127.0.0.1")
		}
		listingRows, listingText = n, b
	}
	return listingText
}
