// Command tsadmin is an SSH server that lets administrators see and end the
// login sessions of a machine, with the classic Terminal Server `logoff` and
// `query session` commands, and nothing else: no shell.
//
// main.go is wiring only: flags, config, signals, start and stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/federation"
	"github.com/tsadmin-dev/tsadmin/keys"
	"github.com/tsadmin-dev/tsadmin/server"
	"github.com/tsadmin-dev/tsadmin/sessions"
	"github.com/tsadmin-dev/tsadmin/sessions/host"
	"github.com/tsadmin-dev/tsadmin/sessions/logind"
	"github.com/tsadmin-dev/tsadmin/sessions/timelimit"
	"github.com/tsadmin-dev/tsadmin/shell"
)

const usage = `Usage: tsadmin [-config FILE] [-check]

tsadmin serves logoff, query session and query user over SSH.

Flags:
  -config FILE   the configuration (default ./config.yaml)
  -check         check the configuration and the keys it names, then exit
  -version       print the version and exit
  -cpuprofile F  write a CPU profile (pprof) to F until the server stops
  -memprofile F  write an allocation profile (pprof) to F when the server stops

Files:
  config.yaml            the configuration; see the annotated sample
  ssh_host_ed25519_key   the host key (host_key:), created mode 0600 if missing
  audit.log              the audit log, when audit.file is set (else stderr)
  ssh_host_ed25519_key-cert.pub
                         the host certificate, when host_certificate is set
  the fleet file         NAME ADDRESS lines, when servers_file is set

Signals:
  SIGHUP          reload the configuration, the fleet file and the host
                  certificate (a broken file is refused and the old one
                  stays in force)
  SIGTERM, SIGINT stop: connected admins are told, sessions are closed

Exit status: 0 after a clean stop; 1 when the configuration or the listener
fails.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	flags := flag.NewFlagSet("tsadmin", flag.ContinueOnError)
	flags.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	configPath := flags.String("config", "config.yaml", "")
	check := flags.Bool("check", false, "")
	showVersion := flags.Bool("version", false, "")
	cpuProfile := flags.String("cpuprofile", "", "")
	memProfile := flags.String("memprofile", "", "")
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println("tsadmin", version)
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Error(err.Error())
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *memProfile != "" {
		// Every allocation of a connection, not one in 512 KB: a
		// connection allocates less than that.
		runtime.MemProfileRate = 1
		defer writeHeapProfile(log, *memProfile)
	}
	if err := run(log, *configPath, *check); err != nil {
		pprof.StopCPUProfile()
		log.Error(err.Error())
		os.Exit(1)
	}
}

// writeHeapProfile writes the allocation profile to path.
func writeHeapProfile(log *slog.Logger, path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		log.Error("writing the allocation profile", "err", err)
	}
}

// load reads the config and compiles its policy.
func load(path string) (*config.Config, *keys.Policy, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	policy, err := keys.NewPolicy(cfg)
	if err != nil {
		return nil, nil, err
	}
	return cfg, policy, nil
}

func run(log *slog.Logger, configPath string, check bool) error {
	// Catch the signals first: a SIGHUP that arrives while the server
	// starts must reload, not kill it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	cfg, policy, err := load(configPath)
	if err != nil {
		return err
	}
	if check {
		fmt.Printf("%s: ok: server %s, %d admins, %d keys\n", configPath, cfg.Name, len(policy.Admins), policy.KeyCount())
		return nil
	}
	listen := cfg.Listen
	if policy.Default {
		// The first-run default trusts the running user's keys as
		// operators: never on anything but loopback.
		_, port, _ := net.SplitHostPort(cfg.Listen)
		listen = net.JoinHostPort("127.0.0.1", port)
		log.Warn("no admins are configured: trusting the running user's own keys as operators, on 127.0.0.1 only",
			"keys_from", strings.Join(policy.DefaultKeyFiles, ", "), "keys", policy.KeyCount())
		logSkipped(log, policy)
		if policy.KeyCount() == 0 {
			log.Warn("no keys found in ~/.ssh/authorized_keys or ~/.ssh/id_*.pub: nobody can log in; make one with ssh-keygen -t ed25519")
		}
	}
	hostKey, created, err := keys.LoadOrCreateHostKey(cfg.Resolve(cfg.HostKey))
	if err != nil {
		return err
	}
	if created {
		log.Info("created a new host key", "file", cfg.Resolve(cfg.HostKey))
	}
	var hostCert atomic.Pointer[ssh.Signer]
	if err := loadHostCert(log, cfg, hostKey, &hostCert); err != nil {
		return err
	}
	auditLog, err := audit.Open(auditPath(cfg))
	if err != nil {
		return err
	}
	defer auditLog.Close()
	auditLog.OnFailure = func(err error) {
		log.Error("audit record lost; logoffs are refused until the audit log can be written", "err", err.Error())
	}

	registry := sessions.NewRegistry()
	shells := sessions.NewShellSource(registry)
	registry.AddSource(shells)
	if err := addHostSources(registry, cfg, log, auditLog); err != nil {
		return err
	}

	var srv *server.Server
	relay := federation.New(federation.Options{
		Self: cfg.Name, Signer: hostKey, Cert: func() ssh.Signer { return deref(hostCert.Load()) },
		Servers:        func() *config.Config { return srv.Config() },
		Policy:         func() *keys.Policy { return srv.Policy() },
		ConnectTimeout: cfg.Limits.RelayConnectTimeout.Duration,
		CommandTimeout: cfg.Limits.RelayCommandTimeout.Duration,
		Log:            log,
	})
	defer relay.Close()
	env := &shell.Env{
		Server: cfg.Name, Registry: registry, Shells: shells, Audit: auditLog, Log: log, Peers: relay,
		Policy:    func() *keys.Policy { return srv.Policy() },
		Grace:     cfg.Sessions.LogoffGrace.Duration,
		Idle:      func() time.Duration { return srv.Config().Limits.IdleTimeout.Duration },
		IdleAfter: func() time.Duration { return srv.Config().Sessions.IdleAfter.Duration },
	}
	srv = server.New(server.Options{
		Config: cfg, Policy: policy, HostKey: hostKey, Audit: auditLog, Log: log,
		HostCert: func() ssh.Signer { return deref(hostCert.Load()) },
		Env:      env, Relayed: &federation.Receiver{Env: env},
	})
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// The time limits run beside the server and stop before it does, so
	// that no policy logoff starts while the server shuts down.
	limits := timelimit.Start(timelimit.Options{Server: cfg.Name, Registry: registry, Audit: auditLog, Log: log},
		timelimit.FromConfig(cfg))
	defer limits.Stop()
	log.Info("tsadmin listening", "server", cfg.Name, "addr", l.Addr().String(),
		"host_key", keys.Fingerprint(hostKey.PublicKey()), "sources", strings.Join(registry.Sources(), ","),
		"admins", len(policy.Admins), "version", version)
	auditLog.Event("start", slog.String("server", cfg.Name), slog.String("addr", l.Addr().String()))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	for {
		select {
		case err := <-served:
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if c := reload(log, auditLog, srv, configPath, cfg, l.Addr().String(), hostKey, &hostCert); c != nil {
					limits.Replace(timelimit.FromConfig(c))
				}
				continue
			}
			log.Info("stopping", "signal", sig.String())
			auditLog.Event("stop", slog.String("signal", sig.String()))
			limits.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			srv.Shutdown(ctx)
			cancel()
			return nil
		}
	}
}

// reload applies a changed config on SIGHUP. What cannot change while
// running (listen address, host key, sources, audit file) is kept, with a
// warning. A config with no admins would turn the first-run default on:
// refused unless the server listens (listening) on loopback. It returns
// the config now in force, or nil if the file was refused.
func reload(log *slog.Logger, auditLog *audit.Log, srv *server.Server, path string, running *config.Config, listening string,
	hostKey ssh.Signer, hostCert *atomic.Pointer[ssh.Signer]) *config.Config {
	cfg, policy, err := load(path)
	if err == nil && policy.Default {
		err = keys.CheckDefaultListener(listening)
	}
	if err == nil {
		// A renewed host certificate is taken at reload, so that
		// certificates can be short-lived.
		err = loadHostCert(log, cfg, hostKey, hostCert)
	}
	if err != nil {
		log.Error("reload refused; the old configuration stays in force", "err", err.Error())
		auditLog.Event("reload.refused", slog.String("err", err.Error()))
		return nil
	}
	if cfg.Listen != running.Listen || cfg.HostKey != running.HostKey || cfg.Audit.File != running.Audit.File ||
		strings.Join(cfg.Sessions.Sources, ",") != strings.Join(running.Sessions.Sources, ",") || cfg.Name != running.Name {
		log.Warn("reload: name, listen, host_key, audit.file and sessions.sources take effect only at restart")
		cfg.Listen, cfg.HostKey, cfg.Audit, cfg.Sessions.Sources, cfg.Name =
			running.Listen, running.HostKey, running.Audit, running.Sessions.Sources, running.Name
	}
	srv.Reload(cfg, policy)
	logSkipped(log, policy)
	log.Info("configuration reloaded", "admins", len(policy.Admins), "keys", policy.KeyCount())
	auditLog.Event("reload", slog.Int("admins", len(policy.Admins)), slog.Int("policy_rules", len(cfg.Sessions.Policy)))
	return cfg
}

// logSkipped says which of the running user's keys the first-run default
// does not trust, and why.
func logSkipped(log *slog.Logger, policy *keys.Policy) {
	if n := len(policy.DefaultSkipped); n > 0 {
		log.Warn(fmt.Sprintf("%d of the running user's keys are not trusted: an option tsadmin cannot honour, or not a key it accepts", n),
			"skipped", strings.Join(policy.DefaultSkipped, "; "))
	}
}

// loadHostCert puts the host certificate (host_certificate:) in force, or
// none when the config names none.
func loadHostCert(log *slog.Logger, cfg *config.Config, hostKey ssh.Signer, into *atomic.Pointer[ssh.Signer]) error {
	if cfg.HostCertificate == "" {
		into.Store(nil)
		return nil
	}
	signer, warning, err := keys.LoadHostCertificate(cfg, hostKey, time.Now())
	if err != nil {
		return err
	}
	if warning != "" {
		log.Warn(warning+"; peers and clients that trust the host CA refuse it", "file", cfg.Resolve(cfg.HostCertificate))
	}
	into.Store(&signer)
	return nil
}

func deref(s *ssh.Signer) ssh.Signer {
	if s == nil {
		return nil
	}
	return *s
}

func auditPath(cfg *config.Config) string {
	if cfg.Audit.File == "" {
		return ""
	}
	return cfg.Resolve(cfg.Audit.File)
}

// utmpPath is where the host source reads the login records.
const utmpPath = "/var/run/utmp"

// addHostSources adds the host session sources the config asks for.
// logind is used where the system bus and systemd-logind answer; where
// both run, the host source leaves logind's sessions to it. What the host
// source finds suspicious (a login record that lies about its user) goes
// to the audit log.
func addHostSources(reg *sessions.Registry, cfg *config.Config, log *slog.Logger, auditLog *audit.Log) error {
	// A local user can forge as many suspicious records as there are
	// terminals: at most 20 a minute are written, the rest counted.
	suspicious := &audit.Throttle{Log: auditLog, Event: "host.suspicious", Burst: 20, Interval: time.Minute}
	grace := cfg.Sessions.LogoffGrace.Duration
	var ld *logind.Source
	if slices.Contains(cfg.Sessions.Sources, "logind") {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var err error
		ld, err = logind.ConnectSystem(ctx, grace)
		cancel()
		if err != nil {
			log.Warn("systemd-logind is not available; its sessions are not listed", "err", err.Error())
			ld = nil
		}
	}
	for _, name := range cfg.Sessions.Sources {
		switch name {
		case "host":
			h := host.New(utmpPath, grace)
			h.OnSuspicious = func(reason string, attrs ...slog.Attr) {
				suspicious.Write(append(attrs, slog.String("reason", reason))...)
			}
			if ld != nil {
				h.DeferTo(ld.Claims)
			}
			reg.AddSource(h)
		case "logind":
			if ld != nil {
				reg.AddSource(ld)
			}
		}
	}
	return nil
}
