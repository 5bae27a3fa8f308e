package e2e

import (
	"bufio"
	"bytes"
	"context"
	endian "encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The clients admins script tsadmin with, as Debian ships them. Each one
// authenticates with an ed25519 key, lists the sessions, and passes the
// exit status through: a client that cannot connect (no shared algorithm,
// a key it cannot read) fails the test, it is never skipped.

// windowsQwinstaHeader is the header qwinsta prints on Windows, which
// scripts written for Windows parse at fixed offsets.
const windowsQwinstaHeader = " SESSIONNAME       USERNAME                 ID  STATE   TYPE        DEVICE"

// sshClient runs one command on the server through one client program.
type sshClient struct {
	name string
	// prepare converts keys and writes host keys into dir (the client's
	// HOME); it returns the command line that runs command as key.
	prepare func(t *testing.T, dir, port string, hostKey ssh.PublicKey) func(key Key, command string) []string
}

// debianPython is Debian's interpreter, which sees the python3-* packages
// (a python3 first on PATH, such as pyenv's, may not).
const debianPython = "/usr/bin/python3"

const paramikoScript = `
import sys, paramiko
port, keyfile, hostkey, command = sys.argv[1:5]
c = paramiko.SSHClient()
kind, blob = hostkey.split()[:2]
c.get_host_keys().add("[127.0.0.1]:" + port, kind, paramiko.Ed25519Key(data=paramiko.py3compat.decodebytes(blob.encode())))
c.connect("127.0.0.1", port=int(port), username="admin", key_filename=keyfile,
          allow_agent=False, look_for_keys=False, timeout=10)
stdin, stdout, stderr = c.exec_command(command, timeout=20)
out, err = stdout.read(), stderr.read()
status = stdout.channel.recv_exit_status()
sys.stdout.write(out.decode()); sys.stderr.write(err.decode())
c.close()
sys.exit(status)
`

const asyncsshScript = `
import sys, asyncio, asyncssh
port, keyfile, knownhosts, command = sys.argv[1:5]
async def main():
    async with asyncssh.connect("127.0.0.1", port=int(port), username="admin",
                                client_keys=[keyfile], known_hosts=knownhosts,
                                agent_path=None, connect_timeout=10) as c:
        r = await c.run(command)
        sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)
        return r.exit_status
sys.exit(asyncio.run(main()))
`

var sshClients = []sshClient{
	{"openssh", func(t *testing.T, dir, port string, hostKey ssh.PublicKey) func(Key, string) []string {
		known := writeKnownHosts(t, dir, port, hostKey)
		return func(key Key, command string) []string {
			return []string{"ssh", "-p", port, "-i", key.Path, "-o", "IdentitiesOnly=yes",
				"-o", "IdentityAgent=none", "-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=yes",
				"-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "admin@127.0.0.1", command}
		}
	}},
	{"paramiko", func(t *testing.T, dir, port string, hostKey ssh.PublicKey) func(Key, string) []string {
		line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey)))
		return func(key Key, command string) []string {
			return []string{debianPython, "-c", paramikoScript, port, key.Path, line, command}
		}
	}},
	{"asyncssh", func(t *testing.T, dir, port string, hostKey ssh.PublicKey) func(Key, string) []string {
		known := writeKnownHosts(t, dir, port, hostKey)
		return func(key Key, command string) []string {
			return []string{debianPython, "-c", asyncsshScript, port, key.Path, known, command}
		}
	}},
	{"plink", func(t *testing.T, dir, port string, hostKey ssh.PublicKey) func(Key, string) []string {
		fingerprint := ssh.FingerprintSHA256(hostKey)
		return func(key Key, command string) []string {
			ppk := convertKey(t, dir, key, ".ppk", "puttygen", key.Path, "-O", "private", "-o")
			return []string{"plink", "-ssh", "-batch", "-noagent", "-P", port, "-i", ppk,
				"-hostkey", fingerprint, "admin@127.0.0.1", command}
		}
	}},
	{"dbclient", func(t *testing.T, dir, port string, hostKey ssh.PublicKey) func(Key, string) []string {
		// dbclient reads $HOME/.ssh/known_hosts, where it names a server
		// by its host alone, whatever the port.
		if err := os.MkdirAll(filepath.Join(dir, ".ssh"), 0o700); err != nil {
			t.Fatal(err)
		}
		line := "127.0.0.1 " + string(ssh.MarshalAuthorizedKey(hostKey))
		if err := os.WriteFile(filepath.Join(dir, ".ssh", "known_hosts"), []byte(line), 0o600); err != nil {
			t.Fatal(err)
		}
		return func(key Key, command string) []string {
			db := convertKey(t, dir, key, ".dropbear", "dropbearconvert", "openssh", "dropbear", key.Path)
			return []string{"dbclient", "-p", port, "-i", db, "admin@127.0.0.1", command}
		}
	}},
}

// writeKnownHosts writes an OpenSSH known_hosts file pinning the server's
// host key.
func writeKnownHosts(t *testing.T, dir, port string, hostKey ssh.PublicKey) string {
	t.Helper()
	path := filepath.Join(dir, "known_hosts")
	line := "[127.0.0.1]:" + port + " " + string(ssh.MarshalAuthorizedKey(hostKey))
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// convertKey converts key's private key file into another client's format
// (once), with the converter's arguments followed by the output path.
func convertKey(t *testing.T, dir string, key Key, ext string, prog string, args ...string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(key.Path)+ext)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command(prog, append(args, out)...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", prog, err, b)
	}
	return out
}

// serverHostKey fetches the server's host key with a Go client.
func serverHostKey(t *testing.T, addr string, key Key) ssh.PublicKey {
	t.Helper()
	var hostKey ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(key.Signer)}, Timeout: 10 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error { hostKey = k; return nil },
	}
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return hostKey
}

// TestClients runs each client against the server: authentication,
// `query session` with the caller's row marked, and the exit statuses 1
// (no such session) and 5 (access denied) passed through. Each client's
// negotiated key exchange, cipher and MAC are read off the wire and logged.
func TestClients(t *testing.T) {
	for _, prog := range []string{"ssh", "plink", "puttygen", "dbclient", "dropbearconvert", debianPython} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps", prog)
		}
	}
	f := newFleet(t, "")
	hostKey := serverHostKey(t, f.Addr, f.alice)
	// A session of alice's that carol (a viewer) may not log off.
	held := f.Open(f.alice)
	defer held.Close()
	mine := sessionsOf(f.List(f.alice), "alice")
	if len(mine) != 1 {
		t.Fatalf("alice's held session: %+v", mine)
	}
	heldID := strconv.Itoa(mine[0].ID)
	for _, c := range sshClients {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			proxy := startKexProxy(t, f.Addr)
			_, port, _ := net.SplitHostPort(proxy.addr)
			run := c.prepare(t, dir, port, hostKey)
			exec1 := func(key Key, command string) Result {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				argv := run(key, command)
				cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
				cmd.Env = append(os.Environ(), "HOME="+dir)
				cmd.Stdin = strings.NewReader("")
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var exit *exec.ExitError
				status := 0
				if errors.As(err, &exit) {
					status = exit.ExitCode()
				} else if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				return Result{Stdout: stdout.String(), Stderr: stderr.String(), Status: status}
			}

			r := exec1(f.alice, "query session")
			if r.Status != 0 {
				t.Fatalf("query session: status %d\nstdout: %s\nstderr: %s", r.Status, r.Stdout, r.Stderr)
			}
			lines := strings.Split(r.Stdout, "\n")
			if lines[0] != windowsQwinstaHeader {
				t.Errorf("header:\n%q\nwant\n%q", lines[0], windowsQwinstaHeader)
			}
			own := 0
			for _, l := range lines[1:] {
				if fields := strings.Fields(l); strings.HasPrefix(l, ">") && len(fields) > 1 && fields[1] == "alice" {
					own++
				}
			}
			if own != 1 {
				t.Errorf("%d rows marked > for alice, want 1:\n%s", own, r.Stdout)
			}
			if r := exec1(f.alice, "logoff 99999"); r.Status != 1 || !strings.Contains(r.Stderr, "99999") {
				t.Errorf("logoff 99999: status %d (want 1), stderr %q", r.Status, r.Stderr)
			}
			if r := exec1(f.carol, "logoff "+heldID); r.Status != 5 {
				t.Errorf("carol's logoff %s: status %d (want 5), stderr %q", heldID, r.Status, r.Stderr)
			}
			n := proxy.negotiated(t)
			t.Logf("%s (%s): kex %s, cipher %s, mac %s", c.name, n.client, n.kex, n.cipher, n.mac)
		})
	}
}

// kexProxy forwards connections to the server and keeps the first
// KEXINIT each side sent on the last one, to tell what was negotiated.
type kexProxy struct {
	addr             string
	mu               sync.Mutex
	version          string
	client, server   [][]string
	clientOK, servOK bool
}

func startKexProxy(t *testing.T, target string) *kexProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &kexProxy{addr: l.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 10*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); p.pipe(in, out, true) }()
			go func() { defer wg.Done(); p.pipe(out, in, false) }()
		}
	}()
	return p
}

// pipe copies src to dst, reading the version line and the first binary
// packet (the KEXINIT) on the way.
func (p *kexProxy) pipe(src, dst net.Conn, fromClient bool) {
	defer dst.Close()
	defer src.Close()
	src.SetReadDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(src)
	for i := 0; i < 50; i++ { // lines before the version line are allowed
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := io.WriteString(dst, line); err != nil {
			return
		}
		if strings.HasPrefix(line, "SSH-") {
			if fromClient {
				p.mu.Lock()
				p.version = strings.TrimSpace(line)
				p.mu.Unlock()
			}
			break
		}
	}
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return
	}
	length := endian.BigEndian.Uint32(hdr[:4])
	if length < 2 || length > 256*1024 {
		return
	}
	body := make([]byte, length-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return
	}
	if _, err := dst.Write(append(hdr[:], body...)); err != nil {
		return
	}
	if lists, ok := parseKexInit(body[:len(body)-int(hdr[4])]); ok {
		p.mu.Lock()
		if fromClient {
			p.client, p.clientOK = lists, true
		} else {
			p.server, p.servOK = lists, true
		}
		p.mu.Unlock()
	}
	io.Copy(dst, r)
}

// parseKexInit returns the name-lists of a KEXINIT payload.
func parseKexInit(payload []byte) ([][]string, bool) {
	if len(payload) < 17 || payload[0] != 20 { // SSH_MSG_KEXINIT, cookie
		return nil, false
	}
	b := payload[17:]
	var lists [][]string
	for range 10 {
		if len(b) < 4 {
			return nil, false
		}
		n := endian.BigEndian.Uint32(b)
		if uint32(len(b)-4) < n {
			return nil, false
		}
		lists = append(lists, strings.Split(string(b[4:4+n]), ","))
		b = b[4+n:]
	}
	return lists, true
}

// negotiation is what a client and the server agreed (client to server).
type negotiation struct{ client, kex, cipher, mac string }

// negotiated applies RFC 4253's rule (the client's first choice that the
// server also offers) to the last connection's KEXINITs.
func (p *kexProxy) negotiated(t *testing.T) negotiation {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.clientOK || !p.servOK {
		t.Fatal("the proxy saw no KEXINIT")
	}
	first := func(c, s []string) string {
		for _, a := range c {
			if slices.Contains(s, a) {
				return a
			}
		}
		t.Errorf("no common algorithm: client %v, server %v", c, s)
		return ""
	}
	n := negotiation{client: p.version, kex: first(p.client[0], p.server[0]), cipher: first(p.client[2], p.server[2])}
	if strings.Contains(n.cipher, "gcm") || strings.Contains(n.cipher, "poly1305") {
		n.mac = "(implicit: AEAD)"
	} else {
		n.mac = first(p.client[4], p.server[4])
	}
	return n
}
