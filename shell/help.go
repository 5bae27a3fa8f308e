package shell

// The help texts follow the shape of the original Terminal Server articles
// (Q186477 for LOGOFF): a summary, the syntax, the parameters, notes and
// examples.

const helpGeneral = `tsadmin: see and end login sessions, without a shell.

  query session [sessionname | username | sessionID] [/server:name] [/fo:json]
  query user [username | sessionname | sessionID] [/server:name] [/fo:json]
  query process [* | processID | username | sessionname | /id:nn | programname]
                [/server:name] [/fo:json]
  logoff [sessionID | sessionname] [/server:name] [/v] [/msg:"text"] [/delay:s] [/now]
  logoff /user:username [/server:name | /server:*] [/v] [/msg:"text"] [/delay:s] [/now]
  help [logoff | query | query session | query user | query process]
  exit

Aliases: qwinsta = query session, quser = query user.
Options start with / (or -) and are case-insensitive. Words are split as a
POSIX shell splits them, so quote names with spaces: logoff "TERM 04".
Through ssh, quote once more for the remote side:
  ssh -p 2222 admin@host 'logoff "TERM 04"'
Type COMMAND /? for the syntax of one command.
`

const helpLogoff = `LOGOFF terminates a session.

Syntax
  logoff [sessionID] [/server:servername] [/v] [/msg:"text"] [/delay:seconds] [/now] [/?]
  logoff [sessionname] [/server:servername] [/v] [/msg:"text"] [/delay:seconds] [/now] [/?]
  logoff /user:username [/server:servername | /server:*] [/v] [/msg:"text"] [/delay:seconds] [/now] [/?]

Parameters
  sessionID            The ID of the session, as query session shows it.
  sessionname          The name of the session (ssh#4, pts/3, tty1). It must
                       identify exactly one active session.
  /user:username       Every session of this user (USERNAME in query
                       session) that you may log off, in one command.
  /server:servername   The tsadmin server holding the session. Otherwise the
                       current server is used. With /user: only, /server:*
                       asks every configured server, each deciding with its
                       own roles.
  /v                   Displays information about the actions being performed.
  /msg:"text"          Writes text to the session's terminal before it ends.
  /delay:seconds       Waits this many seconds (0-3600) after the message,
                       so the user can save their work (once, for all the
                       sessions of /user:).
  /now                 Ends the session at once, as reset session does:
                       SIGKILL with no SIGHUP and no grace period. Unsaved
                       work is lost.
  /?                   Displays this help.

Security restrictions
  You can always log off the session where you are logged on, and your other
  tsadmin sessions. You must have logoff access permission (a role selector
  that matches the session) to log off other sessions.

Notes
  It is recommended that users end their programs normally first, so that no
  data is lost; /msg and /delay give them the chance.
  If no ID or name is given, logoff terminates the current session.
  Host sessions get SIGHUP, then SIGKILL after the grace period; with /now,
  SIGKILL at once. The audit log records /now (now=true).
  /user: takes the user's sessions from one listing made when the command
  starts: a session that starts later is not touched. Each session is
  checked, audited and ended as a single logoff would be; those you may
  not log off are named on stderr and left alone.
  Exit status of /user: 0 when every session ended; otherwise the first of
  3 (a session did not end), 7 (a /server:* peer could not be asked),
  5 (a session was refused), and 1 only when no server found a session.

Examples
  To terminate the current session, type:     logoff
  To terminate session 12, type:               logoff 12
  To terminate session TERM04 on server WF12:  logoff TERM04 /server:WF12
  To reset session 12 at once, type:           logoff 12 /now
  To log student42 off everywhere, type:       logoff /user:student42 /server:*
`

const helpQuery = `QUERY displays information about sessions.

Syntax
  query session [sessionname | username | sessionID] [/server:servername] [/fo:table|json] [/?]
  query user [username | sessionname | sessionID] [/server:servername] [/fo:table|json] [/?]
  query process [* | processID | username | sessionname | /id:nn | programname] [/server:servername] [/fo:table|json] [/?]

Aliases: qwinsta = query session, quser = query user.
Type query session /?, query user /? or query process /? for details.
`

const helpQueryProcess = `QUERY PROCESS displays information about the processes of sessions.

Syntax
  query process [* | processID | username | sessionname | /id:nn | programname]
                [/server:servername] [/fo:table|json] [/?]

Parameters
  *                    Lists the processes of every session (the default).
  processID            Lists the process with this PID.
  username             Lists the processes of this user (the process's user
                       or the session's).
  sessionname          Lists the processes of the session with this name.
  /id:nn               Lists the processes of the session with this ID.
  programname          Lists the processes with this name (IMAGE).
  /server:servername   The tsadmin server to query (one server; not *).
  /fo:table|json       The output format: the table (default) or JSON, one
                       object per process, with its start time and CPU time.
  /?                   Displays this help.

Notes
  The processes of a session are those a logoff of it would signal now.
  tsadmin's own sessions run no program and list none.
  IMAGE is the name a process gave itself; anything unprintable in it is
  shown escaped ().

Examples
  query process
  query process /id:12
  query process bash /fo:json
`

const helpQuerySession = `QUERY SESSION displays information about sessions on a tsadmin server.

Syntax
  query session [sessionname | username | sessionID] [/server:servername] [/fo:table|json] [/?]
  qwinsta ...

Parameters
  sessionname          Lists the session with this name.
  username             Lists the sessions of this user.
  sessionID            Lists the session with this ID.
  /server:servername   The tsadmin server to query; /server:* asks every
                       configured server and adds a SERVER column.
  /fo:table|json       The output format: the table (default) or JSON, one
                       object per session.
  /?                   Displays this help.

Notes
  A > marks the session you are typing in.
  STATE is Active or Disc (the terminal is gone); IDLE TIME (query user)
  shows how long a session has gone without input. TYPE says where the session comes from: tsadmin for
  this server's own sessions, sshd or login for host logins.

Examples
  query session
  query session bob
  qwinsta /server:*
`

const helpQueryUser = `QUERY USER displays information about the users logged on.

Syntax
  query user [username | sessionname | sessionID] [/server:servername] [/fo:table|json] [/?]
  quser ...

Parameters
  username             Lists the sessions of this user.
  sessionname          Lists the session with this name.
  sessionID            Lists the session with this ID.
  /server:servername   The tsadmin server to query; /server:* asks them all.
  /fo:table|json       The output format: the table (default) or JSON.
  /?                   Displays this help.

Notes
  IDLE TIME is minutes, hours:minutes or days+hours:minutes; . means none.

Examples
  query user
  quser alice
`

const helpHelp = `HELP shows the commands, or one command's help.

Syntax
  help [logoff | query | query session | query user | query process]
`

const helpExit = `EXIT ends the interactive shell (so does QUIT, and Ctrl-D).
In a script on stdin it ends the script.
`

var helpTopics = map[string]string{
	"":              helpGeneral,
	"logoff":        helpLogoff,
	"query":         helpQuery,
	"query session": helpQuerySession,
	"qwinsta":       helpQuerySession,
	"query user":    helpQueryUser,
	"quser":         helpQueryUser,
	"query process": helpQueryProcess,
	"help":          helpHelp,
	"exit":          helpExit,
	"quit":          helpExit,
}

// helpFor returns the help text of a command.
func helpFor(cmd Command) string {
	if cmd.Verb == VerbHelp {
		return helpTopics[cmd.Topic]
	}
	return helpTopics[cmd.Verb]
}
