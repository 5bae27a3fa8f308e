package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hostCA = "trusted_host_ca_keys: [\"" + key + "\"]\n"

func parseWithFleet(t *testing.T, head, fleet string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "fleet"), []byte(fleet), 0o644); err != nil {
		t.Fatal(err)
	}
	return Parse([]byte(head+"servers_file: fleet\n"), filepath.Join(dir, "config.yaml"))
}

func TestServersFile(t *testing.T) {
	c, err := parseWithFleet(t, "name: wf02\n"+hostCA,
		"# the fleet\n\nWF01 10.0.0.1:2222\nWF02 10.0.0.2:2222   # me\nwf03 lab3.example.org\nWF04 [::1]:22\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Servers) != 3 {
		t.Fatalf("peers: %v", c.Servers)
	}
	if _, me := c.Servers["WF02"]; me {
		t.Error("the server's own entry is a peer")
	}
	if a := c.Servers["wf03"].Address; a != "lab3.example.org:2222" {
		t.Errorf("an address without a port: %q", a)
	}
	if a := c.Servers["WF04"].Address; a != "[::1]:22" {
		t.Errorf("an IPv6 address: %q", a)
	}
}

func TestServersFileRefusesWithLineAndReason(t *testing.T) {
	for _, c := range []struct{ head, fleet, reason string }{
		{hostCA, "WF01\n", "line 1: want NAME ADDRESS, got 1 fields"},
		{hostCA, "WF01 a:1\n\nwf01 b:1\n", "line 3: wf01 is listed twice (first at line 1)"},
		{hostCA, "W F 1\n", "line 1: want NAME ADDRESS, got 3 fields"},
		{hostCA, "-x a:1\n", `line 1: name "-x"`},
		{hostCA, "WF01 a:b:c\n", `line 1: address "a:b:c"`},
		{hostCA + "servers: { WF01: { address: \"a:1\", host_key: \"" + key + "\" } }\n", "wf01 b:1\n", "also under servers:"},
		{"", "WF01 a:1\n", "needs trusted_host_ca_keys"},
	} {
		_, err := parseWithFleet(t, "name: ME\n"+c.head, c.fleet)
		if err == nil || !strings.Contains(err.Error(), c.reason) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: want one line with %q, got %v", c.fleet, c.reason, err)
		}
	}
	if _, err := Parse([]byte("servers_file: /nonexistent/fleet\n"), "config.yaml"); err == nil || !strings.Contains(err.Error(), "servers_file") {
		t.Errorf("a missing fleet file: %v", err)
	}
}
