package server

// growStack grows the calling goroutine's stack to stackAhead in one step.
// A goroutine starts with a small stack, and the runtime doubles it each
// time a call would overflow it, copying every frame on it each time. A
// connection's handshake (handleConn) and a command's run both reach
// stackAhead, so each paid three or four copies of an ever deeper stack:
// in a CPU profile of 10,000 one-shot connections (tsadmin -cpuprofile),
// about 35 µs of each connection's 1.4 ms of CPU was runtime.copystack
// under those two goroutines. Called first, with a frame or two on the
// stack, the one growth copies next to nothing.
//
// Only goroutines that end with their task call it: the handshake's hands
// the connection on to a fresh one, and a command's ends with it (one may
// wait, as logoff /delay does; a collection then shrinks its stack). An
// interactive session's goroutine, which idles, never calls it. A client
// that connects and sends nothing now holds 16 KB of stack more until the
// login grace time ends it; max_startups bounds how many (100 by default:
// under 2 MB).
//
//go:noinline
func growStack() byte {
	var pad [stackAhead - stackAheadSlack]byte
	// Reading at an index the compiler cannot know keeps pad, and the
	// frame, from being optimised away.
	return pad[growIndex]
}

const (
	stackAhead      = 16 << 10
	stackAheadSlack = 4 << 10 // room for the frames under it and the guard, so that it is 16 KB and not 32
)

// growIndex is 0; a variable so that growStack's read is not constant.
var growIndex = 0
