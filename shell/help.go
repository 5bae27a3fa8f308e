package shell

// The help texts follow the shape of the original Terminal Server articles
// (Q186477 for LOGOFF): a summary, the syntax, the parameters, notes and
// examples.

const helpGeneral = `tsadmin: see and end login sessions, without a shell.

  query session [sessionname | username | sessionID] [/server:name] [/fo:json]
  query user [username | sessionname | sessionID] [/server:name] [/fo:json]
  logoff [sessionID | sessionname] [/server:name] [/v] [/msg:"text"] [/delay:s]
  help [logoff | query | query session | query user]
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
  logoff [sessionID] [/server:servername] [/v] [/msg:"text"] [/delay:seconds] [/?]
  logoff [sessionname] [/server:servername] [/v] [/msg:"text"] [/delay:seconds] [/?]

Parameters
  sessionID            The ID of the session, as query session shows it.
  sessionname          The name of the session (ssh#4, pts/3, tty1). It must
                       identify exactly one active session.
  /server:servername   The tsadmin server holding the session. Otherwise the
                       current server is used.
  /v                   Displays information about the actions being performed.
  /msg:"text"          Writes text to the session's terminal before it ends.
  /delay:seconds       Waits this many seconds (0-3600) after the message,
                       so the user can save their work.
  /?                   Displays this help.

Security restrictions
  You can always log off the session where you are logged on, and your other
  tsadmin sessions. You must have logoff access permission (a role selector
  that matches the session) to log off other sessions.

Notes
  It is recommended that users end their programs normally first, so that no
  data is lost; /msg and /delay give them the chance.
  If no ID or name is given, logoff terminates the current session.
  Host sessions get SIGHUP, then SIGKILL after the grace period.

Examples
  To terminate the current session, type:     logoff
  To terminate session 12, type:               logoff 12
  To terminate session TERM04 on server WF12:  logoff TERM04 /server:WF12
`

const helpQuery = `QUERY displays information about sessions.

Syntax
  query session [sessionname | username | sessionID] [/server:servername] [/fo:table|json] [/?]
  query user [username | sessionname | sessionID] [/server:servername] [/fo:table|json] [/?]

Aliases: qwinsta = query session, quser = query user.
Type query session /? or query user /? for details.
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
  help [logoff | query | query session | query user]
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
