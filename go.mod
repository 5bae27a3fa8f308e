module github.com/tsadmin-dev/tsadmin

go 1.26.8

require (
	github.com/gliderlabs/ssh v0.3.8
	github.com/godbus/dbus/v5 v5.2.4
	github.com/google/shlex v0.0.0-20191202100458-e7afc7fbc510
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/crypto v0.58.0
	golang.org/x/sys v0.49.0
	golang.org/x/term v0.47.0
)

require github.com/anmitsu/go-shlex v0.0.0-20200514113438-38f4b401e2be // indirect
