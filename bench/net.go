package main

import (
	"net"
	"strconv"
	"time"
)

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func dialTCP(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
