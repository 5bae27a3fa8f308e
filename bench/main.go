// Command bench measures tsadmin against the bare gliderlabs/ssh library
// (the ceiling) and against OpenSSH with a ForceCommand script (what an
// admin would build instead), on 127.0.0.1, with one load generator, and
// prints one table. Run it from the repository root:
//
//	go run ./bench            # the full run (a few minutes)
//	go run ./bench -quick     # a short run
//
// It installs what it needs (scripts/install-deps), builds tsadmin and the
// bare server, starts the three servers, and ends every process it started
// by its own PID.
package main

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

var (
	concurrency = flag.Int("concurrency", 16, "concurrent clients")
	count       = flag.Int("count", 600, "connections per server per round")
	rounds      = flag.Int("rounds", 3, "rounds; the servers alternate within each")
	idle        = flag.Int("idle", 1000, "idle interactive sessions held for the memory figure")
	capacity    = flag.Int("capacity", 10000, "idle sessions to try to hold on one tsadmin")
	quick       = flag.Bool("quick", false, "a short run: fewer connections and sessions")
	sources     = flag.String("sources", "shell, host", "tsadmin's session sources")
)

// server is one server under test.
type server struct {
	name string
	addr string
	user string
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	tmp     string
	started []*server
	mu      sync.Mutex
)

func main() {
	flag.Parse()
	if *quick {
		*count, *rounds, *idle, *capacity = 150, 2, 300, 2000
	}
	var err error
	tmp, err = os.MkdirTemp("", "tsadmin-bench-")
	check(err)
	// Output piped into head must not kill the run before it cleans up.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; cleanup(); os.Exit(1) }()
	defer cleanup()
	raiseFileLimit()

	step("installing what the benchmark needs")
	run("./scripts/install-deps")
	step("building tsadmin and the bare server")
	run("go", "build", "-o", filepath.Join(tmp, "tsadmin"), ".")
	run("go", "build", "-o", filepath.Join(tmp, "bare"), "./bench/bare")

	signer, pub := clientKey()
	hostKey := filepath.Join(tmp, "host_key")
	writeHostKey(hostKey)

	ts := startTsadmin(pub)
	bare := startBare(pub, hostKey)
	openssh := startOpenSSH(pub, hostKey)
	servers := []*server{ts, bare, openssh}

	step(fmt.Sprintf("load: %d rounds of %d connections per server, %d at a time, one `query session` each", *rounds, *count, *concurrency))
	results := map[string]*result{}
	for _, s := range servers {
		results[s.name] = &result{}
	}
	for r := 0; r < *rounds; r++ {
		// Rotate the order so that machine noise hits all alike.
		for i := range servers {
			s := servers[(i+r)%len(servers)]
			load(s, signer, *count, *concurrency, results[s.name])
		}
	}
	fmt.Println()
	fmt.Printf("%-22s %10s %10s %10s %14s %8s\n", "server", "conn/s", "median", "p99", "CPU/conn", "fails")
	for _, s := range servers {
		res := results[s.name]
		fmt.Printf("%-22s %10.0f %10s %10s %14s %8d\n", s.name, res.rate(), res.pct(50), res.pct(99), res.cpuPerConn(), res.fails)
	}
	tb, to := results[ts.name].rate()/results[bare.name].rate(), results[ts.name].rate()/results[openssh.name].rate()
	fmt.Printf("\ntsadmin/bare conn/s: %.2fx (target >= 0.9x: %s)\n", tb, verdict(tb >= 0.9))
	fmt.Printf("tsadmin/OpenSSH conn/s: %.1fx (target >= 10x: %s)\n", to, verdict(to >= 10))

	step(fmt.Sprintf("memory: %d idle interactive sessions held", *idle))
	perTs, queryTook := idleMemory(ts, signer, *idle, true)
	perBare, _ := idleMemory(bare, signer, *idle, false)
	fmt.Printf("memory per idle interactive session: tsadmin %.1f KiB (target <= 100 KiB: %s), bare %.1f KiB\n",
		perTs, verdict(perTs <= 100), perBare)
	fmt.Printf("query session with %d sessions present, on the server: median %s (target <= 20ms: %s)\n",
		*idle, queryTook, verdict(queryTook <= 20*time.Millisecond))

	step(fmt.Sprintf("capacity: holding up to %d idle sessions on one tsadmin", *capacity))
	held := hold(ts, signer, *capacity)
	fmt.Printf("idle sessions held before anything failed: %d of %d tried (target 10000: %s)\n", held, *capacity, verdict(held >= 10000))
	fmt.Printf("\nmachine: %d cores, %s; Go %s; %s\n", runtime.NumCPU(), cpuModel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func step(s string) { fmt.Fprintf(os.Stderr, "bench: %s\n", s) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		cleanup()
		os.Exit(1)
	}
}

func run(name string, args ...string) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	check(cmd.Run())
}

func raiseFileLimit() {
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func clientKey() (ssh.Signer, string) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(priv)
	check(err)
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
	check(os.WriteFile(filepath.Join(tmp, "client.pub"), []byte(pub+"\n"), 0o644))
	return s, pub
}

func writeHostKey(path string) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "bench")
	check(err)
	check(os.WriteFile(path, pem.EncodeToMemory(block), 0o600))
}

// start runs a server process and waits for the line that gives its
// address.
func start(name, user string, addrRE *regexp.Regexp, cmd *exec.Cmd, fromStderr bool) *server {
	var pipe io.ReadCloser
	var err error
	if fromStderr {
		pipe, err = cmd.StderrPipe()
	} else {
		pipe, err = cmd.StdoutPipe()
	}
	check(err)
	check(cmd.Start())
	s := &server{name: name, user: user, cmd: cmd, done: make(chan struct{})}
	mu.Lock()
	started = append(started, s)
	mu.Unlock()
	go func() { cmd.Wait(); close(s.done) }()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s.addr = <-found:
	case <-time.After(15 * time.Second):
		check(fmt.Errorf("%s did not start", name))
	}
	return s
}

func startTsadmin(pub string) *server {
	dir := filepath.Join(tmp, "tsadmin-run")
	os.MkdirAll(dir, 0o700)
	cfg := fmt.Sprintf(`name: BENCH
listen: 127.0.0.1:0
sessions: { sources: [%s] }
roles: { operator: { logoff: ["*"] } }
admins:
  - { name: bench, role: operator, keys: [%q] }
limits: { max_startups: 200, max_startups_per_source: 200 }
audit: { file: audit.log }
`, *sources, pub)
	check(os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600))
	cmd := exec.Command(filepath.Join(tmp, "tsadmin"), "-config", filepath.Join(dir, "config.yaml"))
	cmd.Dir = dir
	return start("tsadmin", "bench", regexp.MustCompile(`msg="tsadmin listening".* addr=(127\.0\.0\.1:\d+)`), cmd, true)
}

func startBare(pub, hostKey string) *server {
	cmd := exec.Command(filepath.Join(tmp, "bare"), "-key", filepath.Join(tmp, "client.pub"), "-hostkey", hostKey)
	return start("bare gliderlabs/ssh", "bench", regexp.MustCompile(`^(127\.0\.0\.1:\d+)$`), cmd, false)
}

// startOpenSSH runs sshd with a ForceCommand script that lists sessions:
// what an admin would build instead of tsadmin.
func startOpenSSH(pub, hostKey string) *server {
	dir := filepath.Join(tmp, "sshd")
	os.MkdirAll(dir, 0o755)
	os.Chmod(tmp, 0o755)
	os.MkdirAll("/run/sshd", 0o755)
	script := filepath.Join(dir, "list-sessions")
	check(os.WriteFile(script, []byte("#!/bin/sh\necho 'USER TTY LOGIN@ FROM'\nwho\n"), 0o755))
	check(os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(pub+"\n"), 0o644))
	port := freePort()
	cfg := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
PidFile none
UsePAM yes
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile %s/authorized_keys
StrictModes no
ForceCommand %s
MaxStartups 200
MaxSessions 100
LogLevel ERROR
`, port, hostKey, dir, script)
	check(os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o644))
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	s := &server{name: "OpenSSH+ForceCommand", user: "root", cmd: cmd, done: make(chan struct{}), addr: "127.0.0.1:" + port}
	check(cmd.Start())
	mu.Lock()
	started = append(started, s)
	mu.Unlock()
	go func() { cmd.Wait(); close(s.done) }()
	for i := 0; i < 100; i++ {
		if c, err := dialTCP(s.addr); err == nil {
			c.Close()
			return s
		}
		time.Sleep(50 * time.Millisecond)
	}
	check(fmt.Errorf("sshd did not start"))
	return nil
}

func cleanup() {
	mu.Lock()
	defer mu.Unlock()
	for _, s := range started {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
		}
	}
	started = nil
	if tmp != "" {
		os.RemoveAll(tmp)
	}
}

// result is what the load generator measured on one server.
type result struct {
	mu    sync.Mutex
	lat   []time.Duration
	total time.Duration
	conns int
	fails int
	cpu   time.Duration
}

func (r *result) rate() float64 {
	if r.total == 0 {
		return 0
	}
	return float64(r.conns) / r.total.Seconds()
}

func (r *result) pct(p int) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	s := slices.Clone(r.lat)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

func (r *result) cpuPerConn() time.Duration {
	if r.conns == 0 {
		return 0
	}
	return (r.cpu / time.Duration(r.conns)).Round(time.Microsecond)
}

// cpuTime is a process's CPU time, with its reaped children's (sshd forks
// a process per connection).
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

func rss(pid int) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

func clientConfig(s *server, signer ssh.Signer) *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User: s.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 30 * time.Second,
	}
}

// load runs n connections, c at a time, each running query session once.
func load(s *server, signer ssh.Signer, n, c int, res *result) {
	cfg := clientConfig(s, signer)
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	var fails atomic.Int64
	lat := make([]time.Duration, 0, n)
	var latMu sync.Mutex
	cpu0 := cpuTime(s.cmd.Process.Pid)
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				t0 := time.Now()
				if err := oneCommand(s.addr, cfg, "query session"); err != nil {
					fails.Add(1)
					continue
				}
				d := time.Since(t0)
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	cpu := cpuTime(s.cmd.Process.Pid) - cpu0
	res.mu.Lock()
	res.lat = append(res.lat, lat...)
	res.total += took
	res.conns += len(lat)
	res.fails += int(fails.Load())
	res.cpu += cpu
	res.mu.Unlock()
}

func oneCommand(addr string, cfg *ssh.ClientConfig, cmd string) error {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	out, err := sess.Output(cmd)
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("no output")
	}
	return err
}

// openIdle opens one interactive session (PTY and shell, input held open).
func openIdle(addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	sess, err := c.NewSession()
	if err == nil {
		err = sess.RequestPty("xterm", 24, 80, ssh.TerminalModes{})
	}
	if err == nil {
		_, err = sess.StdinPipe()
	}
	if err == nil {
		err = sess.Shell()
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// idleMemory holds n idle sessions and returns the RSS growth per session;
// on tsadmin it also times query session with them present, on the server.
func idleMemory(s *server, signer ssh.Signer, n int, measureQuery bool) (float64, time.Duration) {
	cfg := clientConfig(s, signer)
	runtime.GC()
	time.Sleep(500 * time.Millisecond)
	before := rss(s.cmd.Process.Pid)
	clients := openMany(s.addr, cfg, n)
	time.Sleep(time.Second)
	after := rss(s.cmd.Process.Pid)
	var took time.Duration
	if measureQuery {
		for i := 0; i < 20; i++ {
			oneCommand(s.addr, cfg, "query session")
		}
		took = serverQueryTime(filepath.Join(tmp, "tsadmin-run", "audit.log"), len(clients))
	}
	for _, c := range clients {
		c.Close()
	}
	time.Sleep(time.Second)
	if len(clients) == 0 {
		return 0, took
	}
	return float64(after-before) / float64(len(clients)), took
}

func openMany(addr string, cfg *ssh.ClientConfig, n int) []*ssh.Client {
	var mu sync.Mutex
	var clients []*ssh.Client
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if c, err := openIdle(addr, cfg); err == nil {
				mu.Lock()
				clients = append(clients, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return clients
}

// serverQueryTime reads the server-side time of the last query session
// commands from tsadmin's audit log.
func serverQueryTime(auditPath string, _ int) time.Duration {
	data, _ := os.ReadFile(auditPath)
	var d []time.Duration
	for _, l := range strings.Split(string(data), "\n") {
		var rec struct {
			Msg    string   `json:"msg"`
			Words  []string `json:"words"`
			TookUS int64    `json:"took_us"`
		}
		if json.Unmarshal([]byte(l), &rec) != nil || rec.Msg != "command" || len(rec.Words) < 2 || rec.Words[0] != "query" {
			continue
		}
		d = append(d, time.Duration(rec.TookUS)*time.Microsecond)
	}
	if len(d) > 20 {
		d = d[len(d)-20:]
	}
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// hold opens idle sessions until one fails or n are held, and returns how
// many were held at once.
func hold(s *server, signer ssh.Signer, n int) int {
	cfg := clientConfig(s, signer)
	var clients []*ssh.Client
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	const batch = 500
	for len(clients) < n {
		got := openMany(s.addr, cfg, min(batch, n-len(clients)))
		clients = append(clients, got...)
		if len(got) < min(batch, n-len(clients)+len(got)) {
			break
		}
		select {
		case <-s.done:
			return len(clients)
		default:
		}
	}
	// The server still answers with all of them held.
	if err := oneCommand(s.addr, cfg, "query user"); err != nil {
		fmt.Fprintf(os.Stderr, "bench: with %d held, query user failed: %v\n", len(clients), err)
	}
	return len(clients)
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}
