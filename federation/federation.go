// Package federation runs commands on peer tsadmin servers: /server:NAME.
// The local server connects to the peer over SSH, verifies the peer's
// pinned host key or its host certificate (trusted_host_ca_keys),
// authenticates with its own host certificate or host key, and asks the peer
// to run the admin's line on the admin's behalf. The peer maps the admin
// with its own admins list and decides with its own roles; its output and
// exit status come back unchanged (but for control characters, which are
// neutralised like any text from outside). Connections are pooled.
package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/sessions"
	"github.com/tsadmin-dev/tsadmin/shell"
)

// RelayUser is the SSH user name a relaying server logs in with. It is
// informational: the peer knows a relay by its host key.
const RelayUser = "tsadmin-relay"

// Request is the exec payload of a relayed command: JSON, so that nothing
// of it can be mistaken for a command line by a server that is not a peer.
type Request struct {
	Relay       int    `json:"tsadmin_relay"` // always 1
	Admin       string `json:"admin"`
	Fingerprint string `json:"fingerprint"`
	// Method, CA and Principal say how the admin authenticated on the
	// relaying server ("key" or "cert"; for a certificate its CA's
	// fingerprint and the principal that named the admin): the peer maps
	// the admin only to a credential it holds itself.
	Method    string `json:"method,omitempty"`
	CA        string `json:"ca,omitempty"`
	Principal string `json:"principal,omitempty"`
	// Certificate is the admin's certificate itself (base64 of its wire
	// form), so that the peer checks it as it would its own admin's:
	// signature, validity, revocation by serial or key ID.
	Certificate string `json:"certificate,omitempty"`
	Via         string `json:"via"`
	Line        string `json:"line"`
}

// Vouched is what the relaying server vouches for about its admin.
func (r Request) Vouched() keys.Vouched {
	return keys.Vouched{Admin: r.Admin, Method: r.Method, Fingerprint: r.Fingerprint, CA: r.CA, Principal: r.Principal,
		Certificate: r.Certificate}
}

// ParseRequest decodes a relayed command's exec payload.
func ParseRequest(payload string) (Request, error) {
	var r Request
	dec := json.NewDecoder(strings.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil || r.Relay != 1 || r.Admin == "" || r.Via == "" {
		return Request{}, errors.New("not a relayed command")
	}
	// One JSON object and nothing after it.
	if _, err := dec.Token(); err != io.EOF {
		return Request{}, errors.New("not a relayed command: data after the request")
	}
	return r, nil
}

// maxOutput bounds what is taken from a peer for one command.
const maxOutput = 4 << 20

// Options configure a Relay.
type Options struct {
	Self           string                // this server's name
	Signer         ssh.Signer            // this server's host key: the client key for peers
	Cert           func() ssh.Signer     // this server's host certificate, or nil; tried before Signer
	Servers        func() *config.Config // the config in force (peers change on reload)
	Policy         func() *keys.Policy   // the policy in force: the trusted host CAs
	ConnectTimeout time.Duration         // TCP connect and SSH handshake
	CommandTimeout time.Duration         // one relayed command, logoff grace not included
	IdleExpiry     time.Duration         // pooled connections unused this long are closed
	Log            *slog.Logger
}

// Relay implements shell.Relayer.
type Relay struct {
	o Options

	mu   sync.Mutex
	pool map[string]*pooled // by upper-cased peer name
}

type pooled struct {
	client *ssh.Client
	addr   string
	trust  string    // what it was verified with (trustOf)
	until  time.Time // the peer's host certificate expires then; zero for a pinned key
	timer  *time.Timer
}

// usable reports whether a pooled connection may serve srv now: same
// address, same trust, and a certificate still valid.
func (p *pooled) usable(srv config.Server, trust string, now time.Time) bool {
	return p.addr == srv.Address && p.trust == trust && (p.until.IsZero() || now.Before(p.until))
}

// trustOf names what a peer's host key is verified with: its pinned key,
// or the host CAs trusted. A reload that changes it retires the pooled
// connection.
func (r *Relay) trustOf(srv config.Server) string {
	if srv.HostKey.Value != "" {
		return srv.HostKey.Value
	}
	return "ca:" + r.o.Policy().Hosts().Fingerprints()
}

// New returns a Relay.
func New(o Options) *Relay {
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = 5 * time.Second
	}
	if o.IdleExpiry == 0 {
		o.IdleExpiry = 60 * time.Second
	}
	return &Relay{o: o, pool: make(map[string]*pooled)}
}

// Names implements shell.Relayer.
func (r *Relay) Names() []string {
	cfg := r.o.Servers()
	names := make([]string, 0, len(cfg.Servers))
	for n := range cfg.Servers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// lookup finds a peer by name, case-insensitively.
func (r *Relay) lookup(name string) (string, config.Server, bool) {
	servers := r.o.Servers().Servers
	if s, ok := servers[name]; ok {
		return name, s, true
	}
	for n, s := range servers {
		if strings.EqualFold(n, name) {
			return n, s, true
		}
	}
	return "", config.Server{}, false
}

// known lists the peers for an error line: the first ten of a fleet.
func known(names []string) string {
	const most = 10
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:most], ", "), len(names)-most)
}

// serverErr is an exit-7 failure with a one-line reason.
func serverErr(format string, args ...any) error {
	return &shell.ServerError{Msg: fmt.Sprintf(format, args...)}
}

// Relay implements shell.Relayer.
func (r *Relay) Relay(ctx context.Context, server string, caller shell.Caller, cmd shell.Command, stdout, stderr io.Writer) error {
	name, _, ok := r.lookup(server)
	if !ok {
		return serverErr("unknown server %q (known: %s)", server, known(r.Names()))
	}
	timeout := r.o.CommandTimeout
	if cmd.Verb == shell.VerbLogoff {
		// A logoff may wait out the peer's grace, and /delay.
		timeout += r.o.Servers().Sessions.LogoffGrace.Duration + time.Duration(cmd.Delay)*time.Second
	}
	out, errOut, status, err := r.run(ctx, name, caller, cmd.Line, timeout)
	if err != nil {
		return fmt.Errorf("server %s: %w", name, err)
	}
	writeClean(stdout, out)
	writeClean(stderr, errOut)
	if status != 0 {
		return &shell.PeerStatus{Server: name, Status: status}
	}
	return nil
}

// writeClean copies a peer's output line by line, neutralising control
// characters and escape sequences: a peer is text from outside.
func writeClean(w io.Writer, data []byte) {
	if len(data) == 0 {
		return
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(shell.Clean(strings.TrimSuffix(l, "\r")))
		b.WriteByte('\n')
	}
	io.WriteString(w, b.String())
}

// QueryAll implements shell.Relayer: the query on every peer, as JSON,
// merged into rows. At most limits.relay_max_concurrent peers are asked
// at once, each within its own deadline (the command timeout, counted
// from its turn); the peers that fail are each one error, and the others'
// rows stand.
func (r *Relay) QueryAll(ctx context.Context, caller shell.Caller, cmd shell.Command) ([]shell.Row, []error) {
	names := r.Names()
	turn := make(chan struct{}, max(1, r.o.Servers().Limits.RelayMaxConcurrent))
	type result struct {
		rows []shell.Row
		err  error
	}
	results := make([]result, len(names))
	var wg sync.WaitGroup
	verb := "query session"
	if cmd.Verb == shell.VerbQueryUser {
		verb = "query user"
	}
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case turn <- struct{}{}:
				defer func() { <-turn }()
			case <-ctx.Done():
				results[i].err = serverErr("server %s: not asked: %v", name, ctx.Err())
				return
			}
			line := verb + " /fo:json /server:" + name
			out, errOut, status, err := r.run(ctx, name, caller, line, r.o.CommandTimeout)
			if err == nil && status != 0 {
				err = serverErr("%s", strings.TrimSpace(shell.Clean(string(errOut))))
			}
			if err != nil {
				results[i].err = fmt.Errorf("server %s: %w", name, err)
				return
			}
			var list []shell.JSONSession
			if err := json.Unmarshal(out, &list); err != nil {
				results[i].err = serverErr("server %s: unreadable answer: %v", name, err)
				return
			}
			for _, j := range list {
				results[i].rows = append(results[i].rows, fromJSON(j, name))
			}
		}()
	}
	wg.Wait()
	var rows []shell.Row
	var errs []error
	for _, res := range results {
		rows = append(rows, res.rows...)
		if res.err != nil {
			errs = append(errs, res.err)
		}
	}
	return rows, errs
}

func fromJSON(j shell.JSONSession, server string) shell.Row {
	var row shell.Row
	row.Server = server
	row.ID, row.Name, row.User, row.Type, row.Source, row.Device = j.ID, j.Name, j.User, j.Type, j.Source, j.Device
	row.State = sessions.State(j.State)
	row.LogonTime, _ = time.Parse(time.RFC3339, j.LogonTime)
	row.IdleTime = time.Duration(j.IdleSeconds) * time.Second
	row.Idle = j.Idle // as the peer's own idle_after decides
	row.CanLogoff = j.CanLogoff
	return row
}

// run sends one line to a peer and collects its output and exit status.
// err is set (a *shell.ServerError) when the peer could not be asked.
func (r *Relay) run(ctx context.Context, name string, caller shell.Caller, line string, timeout time.Duration) (stdout, stderr []byte, status int, err error) {
	req, _ := json.Marshal(Request{
		Relay: 1, Admin: caller.Identity.Name, Fingerprint: caller.Identity.Fingerprint,
		Method: caller.Identity.Method, CA: caller.Identity.CA, Principal: caller.Identity.Principal,
		Certificate: caller.Identity.Certificate, Via: r.o.Self, Line: line,
	})
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A pooled connection may have died since; try a fresh one once.
	for attempt := 0; attempt < 2; attempt++ {
		client, fresh, err := r.client(ctx, name)
		if err != nil {
			return nil, nil, shell.StatusServer, err
		}
		sess, err := openSession(ctx, client)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			// A peer that takes the handshake but never answers the
			// channel: give up on it, and on its connection.
			r.drop(name, client)
			return nil, nil, shell.StatusServer, serverErr("no answer in time (%v)", err)
		}
		if err != nil {
			r.drop(name, client)
			if fresh {
				return nil, nil, shell.StatusServer, serverErr("the peer refused a session: %v", err)
			}
			continue
		}
		stdout, stderr, status, err = r.exec(ctx, sess, string(req))
		if err != nil {
			r.drop(name, client)
		}
		return stdout, stderr, status, err
	}
	return nil, nil, shell.StatusServer, serverErr("no connection")
}

// openSession opens a session channel within ctx. x/crypto's NewSession
// waits for the peer's answer without a deadline; when ctx ends first, the
// caller drops the connection, which ends the wait.
func openSession(ctx context.Context, client *ssh.Client) (*ssh.Session, error) {
	type opened struct {
		sess *ssh.Session
		err  error
	}
	ch := make(chan opened, 1)
	go func() {
		s, err := client.NewSession()
		ch <- opened{s, err}
	}()
	select {
	case o := <-ch:
		return o.sess, o.err
	case <-ctx.Done():
		go func() {
			// Close what arrives late; the dropped connection makes
			// NewSession return.
			if o := <-ch; o.sess != nil {
				o.sess.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func (r *Relay) exec(ctx context.Context, sess *ssh.Session, req string) ([]byte, []byte, int, error) {
	defer sess.Close()
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxOutput, maxOutput
	sess.Stdout, sess.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	go func() { done <- sess.Run(req) }()
	select {
	case err := <-done:
		var exit *ssh.ExitError
		switch {
		case err == nil:
			return stdout.Bytes(), stderr.Bytes(), 0, nil
		case errors.As(err, &exit):
			return stdout.Bytes(), stderr.Bytes(), exit.ExitStatus(), nil
		default:
			return nil, nil, shell.StatusServer, serverErr("the command was cut off: %v", err)
		}
	case <-ctx.Done():
		sess.Close()
		return nil, nil, shell.StatusServer, serverErr("no answer in time (%v)", ctx.Err())
	}
}

type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, errors.New("too much output")
	}
	return b.Buffer.Write(p)
}

// client returns a pooled connection to the peer, or dials one.
func (r *Relay) client(ctx context.Context, name string) (*ssh.Client, bool, error) {
	_, srv, ok := r.lookup(name)
	if !ok {
		return nil, false, serverErr("unknown server %q", name)
	}
	key := strings.ToUpper(name)
	trust := r.trustOf(srv)
	r.mu.Lock()
	if p := r.pool[key]; p != nil && p.usable(srv, trust, time.Now()) {
		p.timer.Reset(r.o.IdleExpiry)
		r.mu.Unlock()
		return p.client, false, nil
	}
	r.mu.Unlock()

	client, until, err := r.dial(ctx, name, srv)
	if err != nil {
		return nil, true, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.pool[key]; old != nil {
		if old.usable(srv, trust, time.Now()) {
			// Another command dialled the same peer meanwhile: share
			// its connection (it may be in use) and drop ours.
			go client.Close()
			old.timer.Reset(r.o.IdleExpiry)
			return old.client, false, nil
		}
		// The peer's address or key changed: the old connection goes.
		old.timer.Stop()
		go old.client.Close()
	}
	p := &pooled{client: client, addr: srv.Address, trust: trust, until: until}
	p.timer = time.AfterFunc(r.o.IdleExpiry, func() { r.drop(name, client) })
	r.pool[key] = p
	return client, true, nil
}

// drop closes a pooled connection, if it is still the pooled one.
func (r *Relay) drop(name string, client *ssh.Client) {
	key := strings.ToUpper(name)
	r.mu.Lock()
	if p := r.pool[key]; p != nil && p.client == client {
		p.timer.Stop()
		delete(r.pool, key)
	}
	r.mu.Unlock()
	client.Close()
}

// Close closes every pooled connection.
func (r *Relay) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, p := range r.pool {
		p.timer.Stop()
		p.client.Close()
		delete(r.pool, k)
	}
}

// dial connects to a peer within the connect timeout, verifying its pinned
// host key, or else its host certificate, and authenticates with this
// server's host certificate (when it has one) and host key.
func (r *Relay) dial(ctx context.Context, name string, srv config.Server) (*ssh.Client, time.Time, error) {
	var until time.Time
	check, algos, err := r.hostCheck(name, srv, &until)
	if err != nil {
		return nil, until, err
	}
	signers := []ssh.Signer{r.o.Signer}
	if r.o.Cert != nil {
		if c := r.o.Cert(); c != nil {
			signers = []ssh.Signer{c, r.o.Signer}
		}
	}
	dctx, cancel := context.WithTimeout(ctx, r.o.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", srv.Address)
	if err != nil {
		return nil, until, serverErr("unreachable: %v", err)
	}
	deadline, _ := dctx.Deadline()
	conn.SetDeadline(deadline)
	cc, chans, reqs, err := ssh.NewClientConn(conn, srv.Address, &ssh.ClientConfig{
		User:              RelayUser,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: algos,
		Config:            ssh.Config{KeyExchanges: keys.KeyExchanges, Ciphers: keys.Ciphers, MACs: keys.MACs},
	})
	if err != nil {
		conn.Close()
		var bad *badHostKey
		if errors.As(err, &bad) {
			return nil, until, serverErr("%s", bad.msg)
		}
		return nil, until, serverErr("refused: %v", err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(cc, chans, reqs), until, nil
}

// badHostKey is a peer whose host key or certificate was refused, with the
// one-line reason.
type badHostKey struct{ msg string }

func (e *badHostKey) Error() string { return e.msg }

// hostCheck is how a peer's host key is verified: the pinned key when
// servers: pins one (small setups), else the host certificate.
// until is set to the certificate's expiry.
func (r *Relay) hostCheck(name string, srv config.Server, until *time.Time) (ssh.HostKeyCallback, []string, error) {
	if srv.HostKey.Value != "" {
		pinned, err := keys.PeerKey(srv.HostKey.Value)
		if err != nil {
			return nil, nil, serverErr("bad pinned host key: %v", err)
		}
		return func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if !bytes.Equal(key.Marshal(), pinned.Marshal()) {
				return &badHostKey{"the peer's host key does not match the pinned one"}
			}
			return nil
		}, []string{ssh.KeyAlgoED25519}, nil
	}
	hosts := r.o.Policy().Hosts()
	if !hosts.Enabled() {
		return nil, nil, serverErr("no pinned host key and no trusted host CA (trusted_host_ca_keys)")
	}
	// The plain key is offered too, so that a peer without a certificate
	// is told apart from one that cannot be reached.
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		if err := hosts.CheckPeer(name, key, time.Now()); err != nil {
			return &badHostKey{err.Error()}
		}
		if c := key.(*ssh.Certificate); c.ValidBefore != ssh.CertTimeInfinity {
			*until = time.Unix(int64(min(c.ValidBefore, 1<<62)), 0)
		}
		return nil
	}, []string{ssh.CertAlgoED25519v01, ssh.KeyAlgoED25519}, nil
}
