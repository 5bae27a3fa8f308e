package main

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/tsadmin-dev/tsadmin/audit"
	"github.com/tsadmin-dev/tsadmin/config"
	"github.com/tsadmin-dev/tsadmin/sessions"
	"github.com/tsadmin-dev/tsadmin/sessions/host"
	"github.com/tsadmin-dev/tsadmin/sessions/logind"
)

// utmpPath is where the host source reads the login records.
const utmpPath = "/var/run/utmp"

// addHostSources adds the host session sources the config asks for.
// logind is used where the system bus and systemd-logind answer; where
// both run, the host source leaves logind's sessions to it. What the host
// source finds suspicious (a login record that lies about its user) goes
// to the audit log.
func addHostSources(reg *sessions.Registry, cfg *config.Config, log *slog.Logger, auditLog *audit.Log) error {
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
				auditLog.Event("host.suspicious", append(attrs, slog.String("reason", reason))...)
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
