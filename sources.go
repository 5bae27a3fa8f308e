package main

import (
	"log/slog"

	"tsadmin/config"
	"tsadmin/sessions"
	"tsadmin/sessions/host"
)

// utmpPath is where the host source reads the login records.
const utmpPath = "/var/run/utmp"

// addHostSources adds the host session sources the config asks for.
func addHostSources(reg *sessions.Registry, cfg *config.Config, log *slog.Logger) error {
	for _, name := range cfg.Sessions.Sources {
		switch name {
		case "host":
			reg.AddSource(host.New(utmpPath, cfg.Sessions.LogoffGrace.Duration))
		case "logind":
			log.Warn("session source not built yet", "source", name)
		}
	}
	return nil
}
