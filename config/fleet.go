package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
)

// DefaultPeerPort is the port of a fleet-file address written without one:
// the port of DefaultListen.
const DefaultPeerPort = "2222"

// loadServersFile reads servers_file: one `NAME ADDRESS` a line, `#`
// comments and blank lines skipped, the same file on every server. The
// entry whose name is this server's own is skipped (a server does not
// relay to itself). Its peers join servers:, with no pinned key: they are
// trusted by their host certificates (trusted_host_ca_keys).
func (c *Config) loadServersFile() error {
	if c.ServersFile == "" {
		return nil
	}
	path := c.Resolve(c.ServersFile)
	data, err := c.ReadFile(c.ServersFile)
	if err != nil {
		return fmt.Errorf("servers_file: %v", err)
	}
	if c.Servers == nil {
		c.Servers = make(map[string]Server)
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		where := fmt.Sprintf("%s: line %d", path, n)
		if len(f) != 2 {
			return fmt.Errorf("%s: want NAME ADDRESS, got %d fields", where, len(f))
		}
		name, addr := f[0], f[1]
		if !ValidName(name) {
			return fmt.Errorf("%s: name %q: use letters, digits, '.', '_' and '-' (at most 64)", where, name)
		}
		if first, dup := seen[strings.ToUpper(name)]; dup {
			return fmt.Errorf("%s: %s is listed twice (first at line %d)", where, name, first)
		}
		seen[strings.ToUpper(name)] = n
		if _, _, err := net.SplitHostPort(addr); err != nil {
			if strings.Contains(addr, ":") && !strings.HasPrefix(addr, "[") && net.ParseIP(addr) == nil {
				return fmt.Errorf("%s: address %q: %v", where, addr, err)
			}
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), DefaultPeerPort)
		}
		if strings.EqualFold(name, c.Name) {
			continue
		}
		for other := range c.Servers {
			if strings.EqualFold(other, name) {
				return fmt.Errorf("%s: %s is also under servers: in %s", where, name, c.Path)
			}
		}
		c.Servers[name] = Server{Address: addr, FromFile: true}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}
