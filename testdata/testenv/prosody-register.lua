-- Bulk `prosodyctl register` for the test environment (scripts/testenv.sh).
--
--   lua5.4 prosody-register.lua --config FILE PASSWORD USER HOST [USER HOST]...
--
-- Run as the prosody user. It boots exactly like Debian's /usr/bin/prosodyctl
-- (Prosody 0.12) and calls the same util.prosodyctl.adduser that
-- `prosodyctl register USER HOST PASSWORD` calls, once per account, but in one
-- process: one prosodyctl call costs a fraction of a second of start-up, which
-- adds up over 61 accounts. Existing accounts get their password reset.

CFG_SOURCEDIR = '/usr/lib/prosody'
CFG_CONFIGDIR = '/etc/prosody'
CFG_PLUGINDIR = '/usr/lib/prosody/modules/'
CFG_DATADIR = '/var/lib/prosody'

package.path = CFG_SOURCEDIR .. "/?.lua;" .. package.path
package.cpath = CFG_SOURCEDIR .. "/?.so;" .. package.cpath

local startup = require "util.startup"
startup.prosodyctl() -- parses (and removes) --config FILE from arg

local prosodyctl = require "util.prosodyctl"

local password = table.remove(arg, 1)
if not password or #arg == 0 or #arg % 2 ~= 0 then
	io.stderr:write("usage: prosody-register.lua --config FILE PASSWORD USER HOST [USER HOST]...\n")
	os.exit(2)
end

local failed = 0
for i = 1, #arg, 2 do
	local user, host = arg[i], arg[i + 1]
	local ok, err = prosodyctl.adduser { user = user, host = host, password = password }
	if not ok then
		io.stderr:write(("cannot register %s@%s: %s\n"):format(user, host,
			tostring(prosodyctl.error_messages[err] or err)))
		failed = failed + 1
	end
end
os.exit(failed == 0 and 0 or 1)
