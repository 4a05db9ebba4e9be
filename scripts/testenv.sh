#!/usr/bin/env bash
# scripts/testenv.sh — the real servers transportd's tests run against, on loopback.
#
#   scripts/testenv.sh up [SERVICE...]       start (default: prosody) and what they
#                                            need; a no-op for what is already up
#   scripts/testenv.sh down [SERVICE...]     stop (default: all); keeps the data
#   scripts/testenv.sh restart [SERVICE...]  stop + start, same data (default: prosody)
#   scripts/testenv.sh status [SERVICE...]   exit 0 only if all named (default: all) are up
#   scripts/testenv.sh env                   print `export` lines for the tests
#   scripts/testenv.sh check [SERVICE...]    prove they work with real clients
#                                            (scripts/testenv-check.py)
#
#   eval "$(scripts/testenv.sh env)"   or   . "${TESTENV_DIR:-.testenv}/env"
#
# SERVICEs (ports on 127.0.0.1):
#   prosody  Prosody 0.12: c2s 25222 (no TLS; SCRAM-SHA-1 and PLAIN), XEP-0114
#            components 25347 (secret testsecret; NAME.a.test and NAME.b.test for
#            NAME in echo echo2..echo6 email sms irc bench), HTTP 25280
#            (upload.a.test, XEP-0363), MUC conference.a.test / conference.b.test;
#            accounts user1..user30@a.test/b.test and admin@a.test, password pw.
#   dovecot  Dovecot 2.3: IMAP 25143 (IDLE, METADATA; no TLS), LMTP 25024, SMTP
#            submission 25587 (AUTH PLAIN/LOGIN without TLS, same users; relays
#            to the smtpd port below, so submitted mail needs smtpd up);
#            mailboxes user1..user20@a.test/b.test, password pw; Maildir in the
#            run directory. New mail in INBOX is announced by the push_notification
#            plugin's OX driver (HTTP PUT, Basic auth with the secret in
#            TRANSPORTD_TEST_PUSH_SECRET_FILE) to http://127.0.0.1:25081/email/DOMAIN/push
#            (TRANSPORTD_TEST_PUSH_ADDR: where a test gateway listens to get it), for
#            the mailboxes whose /private/vendor/vendor.dovecot/http-notify METADATA
#            is set; a refused connection there only logs an error.
#   smtpd    OpenSMTPD: SMTP 25025 (no TLS, no auth) for those mailboxes,
#            delivering over LMTP into the Dovecot (so it brings up dovecot).
#            Its queue and control socket are fixed paths: one per machine.
#   inspircd InspIRCd 3 with its IRCv3 modules: IRC 26667, IRC over TLS 26697
#            (self-signed certificate for 127.0.0.1, TRANSPORTD_TEST_IRC_TLS_CERT);
#            no services (no SASL). OPER root test. IRC 26670 takes only
#            clients that send the server password "letmein" (PASS), as a
#            bouncer or a closed server does (TRANSPORTD_TEST_IRC_PASS_ADDR).
#   ngircd   ngIRCd 26, the plainer second IRC server: IRC 26668 (no IRCv3 tags).
#   atheme   SASL on a real IRC server: a second InspIRCd 3 (IRC 26669, server
#            link 26900) with Atheme 7.2 services linked (NickServ REGISTER
#            without e-mail verification, SaslServ PLAIN).
#   ejabberd ejabberd 23.01, the second XMPP server, for its own domain e.test:
#            c2s 25322 (no TLS; PLAIN and SCRAM-SHA-1/256), XEP-0114 components
#            25447 (secret testsecret; NAME.e.test for NAME in echo echo2 email
#            sms irc bench), MUC conference.e.test; accounts user1..user10@e.test,
#            password pw. Erlang distribution (for ejabberdctl) on 25369, no epmd.
#
# Everything (rendered configs, data, logs, pid files) lives in the run directory
# ${TESTENV_DIR:-<repo>/.testenv}; config templates live in testdata/testenv/.
# Missing Debian packages are installed with apt-get (needs root); a system
# instance that the install starts is stopped again, since we run our own.
#
# Overrides (environment): TESTENV_DIR, TESTENV_WAIT_SECS (default 30),
#   TESTENV_PROSODY_C2S_PORT, TESTENV_PROSODY_COMPONENT_PORT,
#   TESTENV_PROSODY_HTTP_PORT, TESTENV_PROSODY_LOG_LEVEL (info),
#   TESTENV_DOVECOT_IMAP_PORT, TESTENV_DOVECOT_LMTP_PORT,
#   TESTENV_DOVECOT_SUBMISSION_PORT, TESTENV_DOVECOT_PUSH_PORT, TESTENV_SMTPD_PORT,
#   TESTENV_INSPIRCD_PORT, TESTENV_INSPIRCD_TLS_PORT,
#   TESTENV_INSPIRCD_PASS_PORT, TESTENV_INSPIRCD_IDENT_PORT, TESTENV_NGIRCD_PORT,
#   TESTENV_ATHEME_IRC_PORT, TESTENV_ATHEME_LINK_PORT,
#   TESTENV_USER_COUNT (Prosody accounts per domain, default 30; the env
#   output reports the count of the shell that runs it),
#   TESTENV_EJABBERD_C2S_PORT, TESTENV_EJABBERD_COMPONENT_PORT,
#   TESTENV_EJABBERD_DIST_PORT, TESTENV_EJABBERD_LOG_LEVEL (info).
# Overridden ports are remembered in the run directory, so a later `restart` or
# `env` without the overrides keeps using them.
#
# Adding a service FOO: append it to SERVICES and define
#   pkgs_FOO          Debian packages it needs (one per line)
#   deps_FOO          (optional) services it needs up first
#   stop_system_FOO   stop the instance the package install may have started
#   settings_FOO      set its variables (ports, paths), honouring overrides
#   up_FOO / down_FOO / running_FOO / status_FOO / env_FOO
# and, for `check`, a --service FOO in scripts/testenv-check.py.
set -euo pipefail

SERVICES=(prosody dovecot smtpd inspircd ngircd atheme ejabberd) # start order; `down` goes in reverse
DEFAULT_UP=(prosody)

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
SELF=$REPO/scripts/testenv.sh
TEMPLATES=$REPO/testdata/testenv
RUN=${TESTENV_DIR:-$REPO/.testenv}
[[ $RUN == /* ]] || RUN=$(pwd -P)/$RUN
BIND=127.0.0.1
WAIT_SECS=${TESTENV_WAIT_SECS:-30}
SYS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Test fixtures shared by the services.
DOMAINS=(a.test b.test)
PASSWORD=pw
COMPONENT_SECRET=testsecret
USER_COUNT=${TESTENV_USER_COUNT:-30}
ADMIN_JID=admin@a.test
# One XEP-0114 component JID per name and domain (NAME.DOMAIN): Prosody accepts
# one connection per component JID, so parallel test packages each take their own.
COMPONENTS=(echo echo2 echo3 echo4 echo5 echo6 email sms irc bench)
# Mailboxes user1..userN@DOMAIN (password $PASSWORD), all stored as this system user.
MAIL_USER_COUNT=20
MAIL_USER=mail

log() { printf 'testenv: %s\n' "$*" >&2; }
die() {
	printf 'testenv: error: %s\n' "$*" >&2
	exit 1
}

# q VALUE: VALUE single-quoted for the shell.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

is_root() { [[ $(id -u) == 0 ]]; }

# port_open PORT: something accepts TCP connections on $BIND:PORT.
port_open() { (exec 3<>"/dev/tcp/$BIND/$1") 2>/dev/null; }

# pid_alive PID: the process exists and is not a zombie (an exited daemon
# stays a zombie until the init process here gets round to reaping it).
pid_alive() {
	local stat
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ -n $stat && ${stat%% *} != [ZX] ]]
}

# kill_wait PID [SECONDS]: SIGTERM, wait, then SIGKILL.
kill_wait() {
	local pid=$1 secs=${2:-15} i
	pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < secs * 10; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	log "pid $pid ignored SIGTERM for ${secs}s; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	die "could not stop pid $pid"
}

# render TEMPLATE OUT KEY=VALUE...: copy TEMPLATE to OUT replacing @KEY@ with VALUE.
render() {
	local tmpl=$1 out=$2 kv key val script=
	shift 2
	[[ -r $tmpl ]] || die "missing template $tmpl"
	for kv; do
		key=${kv%%=*} val=${kv#*=}
		val=${val//\\/\\\\} val=${val//|/\\|} val=${val//&/\\&}
		script+="s|@${key}@|${val}|g;"
	done
	sed -e "$script" "$tmpl" >"$out.tmp"
	if grep -n '@[A-Z_][A-Z0-9_]*@' "$out.tmp" >&2; then
		die "unreplaced placeholders in $out (from $tmpl)"
	fi
	mv -f "$out.tmp" "$out"
}

# as_user USER CMD...: run CMD as USER with a clean environment.
as_user() {
	local user=$1 home
	shift
	home=$(getent passwd "$user" | cut -d: -f6)
	setpriv --reuid="$user" --regid="$user" --init-groups -- \
		env -i PATH="$SYS_PATH" HOME="${home:-/}" LANG=C.UTF-8 "$@" 9>&-
}

# wait_ports NAME PID PORT...: wait until every PORT accepts connections while
# PID stays alive; on failure stop PID, show the logs named in LOGS and exit 1.
LOGS=()
wait_ports() {
	local name=$1 pid=$2 p ok i
	shift 2
	for ((i = 0; i < WAIT_SECS * 10; i++)); do
		if ! pid_alive "$pid"; then
			log "$name (pid $pid) exited during startup"
			show_log "${LOGS[@]}"
			die "$name did not start"
		fi
		ok=1
		for p; do port_open "$p" || {
			ok=0
			break
		}; done
		((ok)) && return 0
		sleep 0.1
	done
	log "$name did not open ports $* on $BIND within ${WAIT_SECS}s"
	kill_wait "$pid" 5 || true
	show_log "${LOGS[@]}"
	die "$name did not start"
}

# check_ports NAME PORT...: each PORT is a valid port number.
check_ports() {
	local name=$1 p
	shift
	for p; do
		if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad $name port '$p'"; fi
	done
}

# ports_free NAME VAR_PREFIX PORT...: none of PORT is taken by another process.
ports_free() {
	local name=$1 prefix=$2 p
	shift 2
	for p; do
		if port_open "$p"; then
			die "$name: port $BIND:$p is already in use by another process (another test environment? set ${prefix}*_PORT)"
		fi
	done
}

# save_settings FILE VAR=VALUE...: remember the effective settings of a service.
save_settings() {
	local f=$1
	shift
	printf '%s\n' "$@" >"$f"
	chmod 0644 "$f"
}

# exe_pid PIDFILE EXE: the pid in PIDFILE if that process is alive and runs EXE
# (or ran it: after a package upgrade the link reads "EXE (deleted)").
exe_pid() {
	local pid exe
	[[ -s $1 ]] || return 0
	pid=$(tr -dc 0-9 <"$1" 2>/dev/null) || return 0
	pid_alive "$pid" || return 0
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 0
	[[ ${exe% (deleted)} == "$2" ]] && echo "$pid"
	return 0
}

# ensure_traversable USER PATH...: USER can reach (and read) every PATH.
ensure_traversable() {
	local user=$1 p
	shift
	for p; do
		as_user "$user" test -r "$p" ||
			die "the $user user cannot read $p: every parent directory of $RUN must be searchable by it (chmod o+x)"
	done
}

show_log() {
	local f
	for f; do
		[[ -s $f ]] || continue
		printf -- '----- last 50 lines of %s -----\n' "$f" >&2
		tail -n 50 "$f" >&2
		printf -- '-----\n' >&2
	done
}

# ---------------------------------------------------------------------------
# Debian packages

APT_UPDATED=0
NEWLY_INSTALLED=()

# ensure_packages PKG...: install those not installed yet.
ensure_packages() {
	local p missing=()
	for p; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
			missing+=("$p")
	done
	((${#missing[@]})) || return 0
	is_root || die "missing Debian packages: ${missing[*]} (run as root, or apt-get install them)"
	command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get here"
	mkdir -p "$RUN"
	if ((!APT_UPDATED)); then
		log "apt-get update"
		apt-get update -q -o DPkg::Lock::Timeout=300 >"$RUN/apt.log" 2>&1 || {
			show_log "$RUN/apt.log"
			die "apt-get update failed"
		}
		APT_UPDATED=1
	fi
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" >>"$RUN/apt.log" 2>&1 || {
		show_log "$RUN/apt.log"
		die "apt-get install ${missing[*]} failed"
	}
	NEWLY_INSTALLED+=("${missing[@]}")
}

# stop_system_daemon NAME PIDFILE...: stop the distribution's own instance of a
# daemon (started by the package install) via its service script, then via its
# pid file if the script did not do it.
stop_system_daemon() {
	local name=$1 pf pid
	shift
	if command -v service >/dev/null; then
		service "$name" stop >/dev/null 2>&1 || true
	fi
	for pf; do
		[[ -s $pf ]] || continue
		pid=$(tr -dc 0-9 <"$pf")
		if pid_alive "$pid"; then
			log "stopping system $name (pid $pid from $pf)"
			kill_wait "$pid" 15
		fi
	done
}

# ---------------------------------------------------------------------------
# Prosody (XMPP server): c2s, external components (XEP-0114), MUC, HTTP upload.

pkgs_prosody() { printf '%s\n' prosody prosody-modules; } # prosody-modules: mod_privilege (XEP-0356)

stop_system_prosody() {
	# Debian 12's /etc/init.d/prosody matches the process name "lua5.2" while the
	# daemon runs under lua5.4, so `service prosody stop` (without systemd) does
	# not stop it: the pid file is the fallback.
	stop_system_daemon prosody /run/prosody/prosody.pid
}

settings_prosody() {
	P_DIR=$RUN/prosody
	P_CFG=$P_DIR/prosody.cfg.lua
	P_HOSTS=$P_DIR/hosts.cfg.lua
	P_DATA=$P_DIR/data
	P_LOG=$P_DIR/prosody.log
	P_CONSOLE=$P_DIR/console.log
	P_PIDFILE=$P_DIR/prosody.pid
	local SAVED_C2S_PORT='' SAVED_COMPONENT_PORT='' SAVED_HTTP_PORT=''
	# shellcheck disable=SC1091
	[[ -f $P_DIR/settings ]] && . "$P_DIR/settings"
	P_C2S_PORT=${TESTENV_PROSODY_C2S_PORT:-${SAVED_C2S_PORT:-25222}}
	P_COMPONENT_PORT=${TESTENV_PROSODY_COMPONENT_PORT:-${SAVED_COMPONENT_PORT:-25347}}
	P_HTTP_PORT=${TESTENV_PROSODY_HTTP_PORT:-${SAVED_HTTP_PORT:-25280}}
	P_LOG_LEVEL=${TESTENV_PROSODY_LOG_LEVEL:-info}
	check_ports prosody "$P_C2S_PORT" "$P_COMPONENT_PORT" "$P_HTTP_PORT"
}

# prosody_pids: pids of the Prosody processes running our config file.
prosody_pids() {
	local f pid
	grep -lszxF -- "$P_CFG" /proc/[0-9]*/cmdline | while read -r f; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		# The interpreter is lua5.x, the script /usr/bin/prosody (not prosodyctl, not grep).
		{ tr '\0' '\n' <"$f"; } 2>/dev/null | sed -n 2p | grep -qx '/usr/bin/prosody' && echo "$pid"
	done
	return 0
}

running_prosody() {
	settings_prosody
	[[ -n $(prosody_pids) ]]
}

# The account file Prosody's internal_hashed storage keeps for USER@HOST.
prosody_account_file() {
	local host=$1 user=$2
	echo "$P_DATA/${host//./%2e}/accounts/$user.dat"
}

# prosody_users: USER HOST lines, every account the tests expect.
prosody_users() {
	local d i
	for d in "${DOMAINS[@]}"; do
		for ((i = 1; i <= USER_COUNT; i++)); do echo "user$i $d"; done
	done
	echo "${ADMIN_JID%@*} ${ADMIN_JID#*@}"
}

# Create the missing accounts (password $PASSWORD). Prosody's file storage is
# read on each login, so this works whether or not the server is running.
prosody_create_users() {
	local user host d args n=0
	for d in "${DOMAINS[@]}"; do
		args=()
		while read -r user host; do
			[[ $host == "$d" && ! -e $(prosody_account_file "$host" "$user") ]] && args+=("$user" "$host")
		done < <(prosody_users)
		((${#args[@]})) || continue
		n=$((n + ${#args[@]} / 2))
		# One Lua process per host instead of one `prosodyctl register` per account
		# (0.05-0.4s each here, 61 accounts). One per host, because in a single
		# prosodyctl-style process, accounts of a host initialised earlier end up
		# in the storage of the host initialised last.
		as_user prosody lua5.4 "$TEMPLATES/prosody-register.lua" --config "$P_CFG" \
			"$PASSWORD" "${args[@]}" >>"$P_CONSOLE" 2>&1 || {
			show_log "$P_CONSOLE"
			die "creating Prosody accounts on $d failed"
		}
	done
	((n)) || return 0
	while read -r user host; do
		[[ -e $(prosody_account_file "$host" "$user") ]] ||
			die "account $user@$host was not created (see $P_CONSOLE)"
	done < <(prosody_users)
	log "created $n Prosody accounts"
}

prosody_write_config() {
	local d c
	mkdir -p "$P_DATA" "$P_DIR/certs" # certs: empty, keeps certmanager quiet
	save_settings "$P_DIR/settings" SAVED_C2S_PORT="$P_C2S_PORT" \
		SAVED_COMPONENT_PORT="$P_COMPONENT_PORT" SAVED_HTTP_PORT="$P_HTTP_PORT"
	render "$TEMPLATES/prosody.cfg.lua.in" "$P_CFG" \
		BIND="$BIND" C2S_PORT="$P_C2S_PORT" COMPONENT_PORT="$P_COMPONENT_PORT" \
		HTTP_PORT="$P_HTTP_PORT" PIDFILE="$P_PIDFILE" DATA_DIR="$P_DATA" \
		LOG_FILE="$P_LOG" LOG_LEVEL="$P_LOG_LEVEL" ADMIN_JID="$ADMIN_JID" \
		UPLOAD_HOST="upload.${DOMAINS[0]}" HOSTS_FILE="$P_HOSTS"
	{
		echo "-- Generated by scripts/testenv.sh; included by prosody.cfg.lua."
		for d in "${DOMAINS[@]}"; do
			printf '\nVirtualHost "%s"\n' "$d"
		done
		# a.test grants its transports' components the roster and message
		# privileges (XEP-0356, prosody-modules' mod_privilege); b.test grants
		# nothing, so tests see both kinds of server.
		printf '\nVirtualHost "%s"\n\tmodules_enabled = { "privilege" }\n\tprivileged_entities = {\n' "${DOMAINS[0]}"
		for c in echo6 email sms irc; do
			printf '\t\t["%s.%s"] = { roster = "both", message = "outgoing" },\n' "$c" "${DOMAINS[0]}"
		done
		printf '\t}\n'
		printf '\nVirtualHost "%s"\n' "${DOMAINS[1]}"
		for d in "${DOMAINS[@]}"; do
			printf '\nComponent "conference.%s" "muc"\n' "$d"
			printf '\tmuc_room_locking = false\n'
			printf '\trestrict_room_creation = false\n'
		done
		# XEP-0363 upload service; its URLs point at the loopback HTTP port.
		printf '\nComponent "upload.%s" "http_file_share"\n' "${DOMAINS[0]}"
		printf '\thttp_external_url = "http://%s:%s/"\n' "$BIND" "$P_HTTP_PORT"
		printf '\thttp_file_share_size_limit = 16*1024*1024\n'
		echo
		echo "-- External components (XEP-0114), one connection per JID."
		echo "-- check.DOMAIN is for scripts/testenv-check.py, not for tests."
		for d in "${DOMAINS[@]}"; do
			for c in "${COMPONENTS[@]}" check; do
				printf 'Component "%s.%s"\n\tcomponent_secret = "%s"\n' "$c" "$d" "$COMPONENT_SECRET"
				# mod_privilege must run on the component host too: it
				# advertises the grants when the component authenticates.
				if [ "$d" = "${DOMAINS[0]}" ]; then printf '\tmodules_enabled = { "privilege" }\n'; fi
			done
		done
	} >"$P_HOSTS"
	chmod 0644 "$P_CFG" "$P_HOSTS"
	chown -R prosody:prosody "$P_DIR"
	if ! as_user prosody test -r "$P_CFG" -a -w "$P_DATA"; then
		die "the prosody user cannot read $P_CFG or write $P_DATA: every parent directory of $RUN must be searchable by it (chmod o+x)"
	fi
}

up_prosody() {
	settings_prosody
	local pid
	pid=$(prosody_pids | head -n1)
	LOGS=("$P_LOG" "$P_CONSOLE")
	if [[ -n $pid ]]; then
		wait_ports prosody "$pid" "$P_C2S_PORT" "$P_COMPONENT_PORT" "$P_HTTP_PORT"
		log "prosody already up (pid $pid)"
		return 0
	fi
	command -v prosody >/dev/null || die "prosody is not installed"
	ports_free prosody TESTENV_PROSODY_ "$P_C2S_PORT" "$P_COMPONENT_PORT" "$P_HTTP_PORT"

	mkdir -p "$P_DIR"
	prosody_write_config
	prosody_create_users
	rm -f "$P_PIDFILE"

	# setsid: own session, so a Ctrl-C aimed at the caller does not reach it;
	# setpriv execs, so $! is Prosody's pid. -F: stay in the foreground (no fork).
	# 9>&-: the daemon must not inherit (and so hold) our lock.
	setsid setpriv --reuid=prosody --regid=prosody --init-groups -- \
		env -i PATH="$SYS_PATH" HOME="$P_DATA" LANG=C.UTF-8 \
		prosody --config "$P_CFG" -F </dev/null >>"$P_CONSOLE" 2>&1 9>&- &
	pid=$!
	wait_ports prosody "$pid" "$P_C2S_PORT" "$P_COMPONENT_PORT" "$P_HTTP_PORT"
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $P_PIDFILE ]] && break
		sleep 0.1
	done
	[[ $(tr -dc 0-9 <"$P_PIDFILE" 2>/dev/null) == "$pid" ]] ||
		die "prosody is up (pid $pid) but its pid file $P_PIDFILE does not say so"
	log "prosody up (pid $pid): c2s $BIND:$P_C2S_PORT, components $BIND:$P_COMPONENT_PORT, http $BIND:$P_HTTP_PORT"
}

down_prosody() {
	settings_prosody
	local pids pid
	pids=$(
		{
			[[ -s $P_PIDFILE ]] && tr -dc 0-9 <"$P_PIDFILE" && echo
			prosody_pids
		} | sort -u
	)
	local stopped=0
	for pid in $pids; do
		# Only our Prosody: the pid file may be stale and its pid reused.
		grep -qszxF -- "$P_CFG" "/proc/$pid/cmdline" || continue
		kill_wait "$pid" 15
		stopped=1
	done
	rm -f "$P_PIDFILE"
	((stopped)) && log "prosody stopped"
	return 0
}

status_prosody() {
	settings_prosody
	local pid
	pid=$(prosody_pids | head -n1)
	if [[ -z $pid ]]; then
		echo "prosody: down"
		return 1
	fi
	local p state=""
	for p in "$P_C2S_PORT" "$P_COMPONENT_PORT" "$P_HTTP_PORT"; do
		port_open "$p" || state+=" (port $p closed)"
	done
	echo "prosody: up, pid $pid, c2s $BIND:$P_C2S_PORT, components $BIND:$P_COMPONENT_PORT, http $BIND:$P_HTTP_PORT, log $P_LOG$state"
	[[ -z $state ]]
}

env_prosody() {
	settings_prosody
	local muc=() d
	for d in "${DOMAINS[@]}"; do muc+=("conference.$d"); done
	cat <<-EOF
		export TRANSPORTD_TEST_XMPP_C2S=$BIND:$P_C2S_PORT
		export TRANSPORTD_TEST_XMPP_COMPONENT=$BIND:$P_COMPONENT_PORT
		export TRANSPORTD_TEST_XMPP_HTTP=$BIND:$P_HTTP_PORT
		export TRANSPORTD_TEST_COMPONENT_SECRET=$(q "$COMPONENT_SECRET")
		export TRANSPORTD_TEST_COMPONENTS=$(q "${COMPONENTS[*]}")
		export TRANSPORTD_TEST_USER_PASSWORD=$(q "$PASSWORD")
		export TRANSPORTD_TEST_USER_COUNT=$USER_COUNT
		export TRANSPORTD_TEST_ADMIN_JID=$(q "$ADMIN_JID")
		export TRANSPORTD_TEST_MUC_DOMAINS=$(q "${muc[*]}")
		export TRANSPORTD_TEST_UPLOAD_JID=$(q "upload.${DOMAINS[0]}")
		export TRANSPORTD_TEST_PROSODY_PIDFILE=$(q "$P_PIDFILE")
		export TRANSPORTD_TEST_PROSODY_LOG=$(q "$P_LOG")
		export TRANSPORTD_TEST_PROSODY_RESTART=$(q "$(q "$SELF") restart prosody")
	EOF
}

# ---------------------------------------------------------------------------
# Dovecot (IMAP with IDLE, and LMTP for the MTA): passwd-file users, Maildir.

pkgs_dovecot() { printf '%s\n' dovecot-imapd dovecot-lmtpd dovecot-submissiond; }

stop_system_dovecot() { stop_system_daemon dovecot /run/dovecot/master.pid; }

settings_dovecot() {
	D_DIR=$RUN/dovecot
	D_CONF=$D_DIR/dovecot.conf
	D_USERS=$D_DIR/users
	D_BASE=$D_DIR/run # sockets: keep the path short (AF_UNIX limit ~108 bytes)
	D_STATE=$D_DIR/state
	D_MAIL=$D_DIR/mail # Maildir of USER@DOMAIN: $D_MAIL/DOMAIN/USER/Maildir
	D_LOG=$D_DIR/dovecot.log
	D_CONSOLE=$D_DIR/console.log
	D_PIDFILE=$D_BASE/master.pid
	D_PUSH_SECRET_FILE=$D_DIR/push-secret
	local SAVED_IMAP_PORT='' SAVED_LMTP_PORT='' SAVED_SUBMISSION_PORT='' SAVED_PUSH_PORT=''
	# shellcheck disable=SC1091
	[[ -f $D_DIR/settings ]] && . "$D_DIR/settings"
	D_IMAP_PORT=${TESTENV_DOVECOT_IMAP_PORT:-${SAVED_IMAP_PORT:-25143}}
	D_LMTP_PORT=${TESTENV_DOVECOT_LMTP_PORT:-${SAVED_LMTP_PORT:-25024}}
	D_SUBMISSION_PORT=${TESTENV_DOVECOT_SUBMISSION_PORT:-${SAVED_SUBMISSION_PORT:-25587}}
	# Not Dovecot's: where the test gateway that wants push notifications listens.
	D_PUSH_PORT=${TESTENV_DOVECOT_PUSH_PORT:-${SAVED_PUSH_PORT:-25081}}
	check_ports dovecot "$D_IMAP_PORT" "$D_LMTP_PORT" "$D_SUBMISSION_PORT" "$D_PUSH_PORT"
}

# mail_addresses: every mailbox address, one per line.
mail_addresses() {
	local d i
	for d in "${DOMAINS[@]}"; do
		for ((i = 1; i <= MAIL_USER_COUNT; i++)); do echo "user$i@$d"; done
	done
}

# dovecot_pid: the pid of our dovecot, if running (settings_dovecot first).
dovecot_pid() {
	exe_pid "$D_PIDFILE" /usr/sbin/dovecot
}

running_dovecot() {
	settings_dovecot
	[[ -n $(dovecot_pid) ]]
}

up_dovecot() {
	settings_dovecot
	local pid a
	pid=$(dovecot_pid)
	LOGS=("$D_LOG" "$D_CONSOLE")
	if [[ -n $pid ]]; then
		wait_ports dovecot "$pid" "$D_IMAP_PORT" "$D_LMTP_PORT" "$D_SUBMISSION_PORT"
		log "dovecot already up (pid $pid)"
		return 0
	fi
	[[ -x /usr/sbin/dovecot ]] || die "dovecot is not installed"
	[[ -x /usr/lib/dovecot/submission ]] || die "dovecot's submission service is not installed (dovecot-submissiond)"
	ports_free dovecot TESTENV_DOVECOT_ "$D_IMAP_PORT" "$D_LMTP_PORT" "$D_SUBMISSION_PORT"
	settings_smtpd # the port submission relays to

	mkdir -p "$D_DIR" "$D_STATE" "$D_MAIL"
	chmod 0755 "$D_DIR"
	save_settings "$D_DIR/settings" SAVED_IMAP_PORT="$D_IMAP_PORT" SAVED_LMTP_PORT="$D_LMTP_PORT" \
		SAVED_SUBMISSION_PORT="$D_SUBMISSION_PORT" SAVED_PUSH_PORT="$D_PUSH_PORT"
	if [[ ! -s $D_PUSH_SECRET_FILE ]]; then
		(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -dc 0-9a-f >"$D_PUSH_SECRET_FILE")
	fi
	# user:{PLAIN}password:uid:gid:gecos:home:shell (uid, gid, home: default_fields)
	while read -r a; do
		printf '%s:{PLAIN}%s::::::\n' "$a" "$PASSWORD"
	done < <(mail_addresses) >"$D_USERS"
	chmod 0644 "$D_USERS"
	# %d: the mailbox's domain, which is also the XMPP domain of the
	# gateway that serves it here.
	render "$TEMPLATES/dovecot.conf.in" "$D_CONF" \
		BIND="$BIND" IMAP_PORT="$D_IMAP_PORT" LMTP_PORT="$D_LMTP_PORT" \
		SUBMISSION_PORT="$D_SUBMISSION_PORT" RELAY_PORT="$S_PORT" \
		PUSH_URL="http://dovecot:$(cat "$D_PUSH_SECRET_FILE")@$BIND:$D_PUSH_PORT/email/%d/push" \
		BASE_DIR="$D_BASE" STATE_DIR="$D_STATE" LOG_FILE="$D_LOG" USERS_FILE="$D_USERS" \
		MAIL_DIR="$D_MAIL" MAIL_USER="$MAIL_USER" MAIL_GROUP="$MAIL_USER" \
		MAIL_UID="$(id -u "$MAIL_USER")" MAIL_GID="$(id -g "$MAIL_USER")"
	chmod 0640 "$D_CONF" # the push secret
	chown "root:$MAIL_USER" "$D_CONF" # (read by the mail user's processes)
	chown "$MAIL_USER:$MAIL_USER" "$D_MAIL"
	chmod 0755 "$D_MAIL"
	ensure_traversable "$MAIL_USER" "$D_MAIL"
	ensure_traversable dovecot "$D_USERS"
	if ! /usr/bin/doveconf -c "$D_CONF" -n >/dev/null 2>"$D_CONSOLE.tmp"; then
		cat "$D_CONSOLE.tmp" >&2
		die "dovecot rejects $D_CONF"
	fi
	rm -f "$D_CONSOLE.tmp" "$D_PIDFILE"

	# Dovecot's master runs as root and drops privileges per process.
	setsid /usr/sbin/dovecot -F -c "$D_CONF" </dev/null >>"$D_CONSOLE" 2>&1 9>&- &
	pid=$!
	wait_ports dovecot "$pid" "$D_IMAP_PORT" "$D_LMTP_PORT" "$D_SUBMISSION_PORT"
	log "dovecot up (pid $pid): imap $BIND:$D_IMAP_PORT, lmtp $BIND:$D_LMTP_PORT, submission $BIND:$D_SUBMISSION_PORT (relay to $BIND:$S_PORT), mail in $D_MAIL"
}

down_dovecot() {
	settings_dovecot
	local pid
	pid=$(dovecot_pid)
	[[ -n $pid ]] || return 0
	# Its imap processes outlive a SIGTERMed master and would keep serving
	# open connections: a restart must be a real outage, so end them too.
	local children
	children=$(pgrep -P "$pid" || true)
	kill_wait "$pid" 15
	if [[ -n $children ]]; then
		# shellcheck disable=SC2086
		kill -TERM $children 2>/dev/null || true
	fi
	rm -f "$D_PIDFILE"
	log "dovecot stopped"
}

status_dovecot() {
	settings_dovecot
	local pid p state=""
	pid=$(dovecot_pid)
	if [[ -z $pid ]]; then
		echo "dovecot: down"
		return 1
	fi
	for p in "$D_IMAP_PORT" "$D_LMTP_PORT" "$D_SUBMISSION_PORT"; do
		port_open "$p" || state+=" (port $p closed)"
	done
	echo "dovecot: up, pid $pid, imap $BIND:$D_IMAP_PORT, lmtp $BIND:$D_LMTP_PORT, submission $BIND:$D_SUBMISSION_PORT, log $D_LOG$state"
	[[ -z $state ]]
}

env_dovecot() {
	settings_dovecot
	cat <<-EOF
		export TRANSPORTD_TEST_IMAP=$BIND:$D_IMAP_PORT
		export TRANSPORTD_TEST_LMTP=$BIND:$D_LMTP_PORT
		export TRANSPORTD_TEST_MAIL_USER_COUNT=$MAIL_USER_COUNT
		export TRANSPORTD_TEST_MAIL_PASSWORD=$(q "$PASSWORD")
		export TRANSPORTD_TEST_MAILDIRS=$(q "$D_MAIL")
		export TRANSPORTD_TEST_DOVECOT_LOG=$(q "$D_LOG")
		export TRANSPORTD_TEST_SUBMISSION=$BIND:$D_SUBMISSION_PORT
		export TRANSPORTD_TEST_PUSH_ADDR=$BIND:$D_PUSH_PORT
		export TRANSPORTD_TEST_PUSH_SECRET_FILE=$(q "$D_PUSH_SECRET_FILE")
	EOF
}

# ---------------------------------------------------------------------------
# OpenSMTPD: SMTP on loopback for the test domains, delivering over LMTP into
# the Dovecot above. Its queue (/var/spool/smtpd) and control socket
# (/run/smtpd.sock) are compiled in, so only one smtpd can run on the machine.

pkgs_smtpd() { echo opensmtpd; }
deps_smtpd() { echo dovecot; }

stop_system_smtpd() { stop_system_daemon opensmtpd /run/smtpd.pid; }

settings_smtpd() {
	S_DIR=$RUN/smtpd
	S_CONF=$S_DIR/smtpd.conf
	S_ADDRESSES=$S_DIR/addresses
	S_VIRTUALS=$S_DIR/virtuals
	S_LOG=$S_DIR/smtpd.log
	S_PIDFILE=$S_DIR/smtpd.pid # written by this script: smtpd -d writes none
	local SAVED_SMTP_PORT=''
	# shellcheck disable=SC1091
	[[ -f $S_DIR/settings ]] && . "$S_DIR/settings"
	S_PORT=${TESTENV_SMTPD_PORT:-${SAVED_SMTP_PORT:-25025}}
	check_ports smtpd "$S_PORT"
}

# smtpd_pid: the pid of our smtpd, if running (settings_smtpd first).
smtpd_pid() {
	exe_pid "$S_PIDFILE" /usr/sbin/smtpd
}

running_smtpd() {
	settings_smtpd
	[[ -n $(smtpd_pid) ]]
}

up_smtpd() {
	settings_smtpd
	local pid a
	pid=$(smtpd_pid)
	settings_dovecot # the LMTP port to deliver to
	LOGS=("$S_LOG")
	if [[ -n $pid ]]; then
		wait_ports smtpd "$pid" "$S_PORT"
		log "smtpd already up (pid $pid)"
		return 0
	fi
	[[ -x /usr/sbin/smtpd ]] || die "opensmtpd is not installed"
	ports_free smtpd TESTENV_SMTPD_ "$S_PORT"
	pid=$(pidof -s smtpd || true)
	[[ -z $pid ]] || die "another OpenSMTPD is running (pid $pid, $(readlink "/proc/$pid/exe" 2>/dev/null)); only one smtpd can run per machine (fixed spool and control socket): stop it first"
	running_dovecot || log "warning: dovecot is not up; mail will wait in the queue"

	mkdir -p "$S_DIR"
	chmod 0755 "$S_DIR"
	save_settings "$S_DIR/settings" SAVED_SMTP_PORT="$S_PORT"
	mail_addresses >"$S_ADDRESSES"
	while read -r a; do printf '%s %s\n' "$a" "$MAIL_USER"; done <"$S_ADDRESSES" >"$S_VIRTUALS"
	render "$TEMPLATES/smtpd.conf.in" "$S_CONF" \
		BIND="$BIND" SMTP_PORT="$S_PORT" LMTP_PORT="$D_LMTP_PORT" HOSTNAME=mx.testenv.test \
		ADDRESSES_FILE="$S_ADDRESSES" VIRTUALS_FILE="$S_VIRTUALS" MAIL_USER="$MAIL_USER"
	chmod 0644 "$S_CONF" "$S_ADDRESSES" "$S_VIRTUALS"
	if ! /usr/sbin/smtpd -n -f "$S_CONF" >"$S_LOG.tmp" 2>&1; then
		cat "$S_LOG.tmp" >&2
		die "smtpd rejects $S_CONF"
	fi
	rm -f "$S_LOG.tmp" "$S_PIDFILE"

	# -d: foreground, log to stderr.
	setsid /usr/sbin/smtpd -d -f "$S_CONF" </dev/null >>"$S_LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$S_PIDFILE"
	wait_ports smtpd "$pid" "$S_PORT"
	log "smtpd up (pid $pid): smtp $BIND:$S_PORT, for ${DOMAINS[*]}, delivering to lmtp $BIND:$D_LMTP_PORT"
}

down_smtpd() {
	settings_smtpd
	local pid
	pid=$(smtpd_pid)
	if [[ -n $pid ]]; then
		kill_wait "$pid" 15
		log "smtpd stopped"
	fi
	rm -f "$S_PIDFILE"
}

status_smtpd() {
	settings_smtpd
	local pid state=""
	pid=$(smtpd_pid)
	if [[ -z $pid ]]; then
		echo "smtpd: down"
		return 1
	fi
	port_open "$S_PORT" || state=" (port $S_PORT closed)"
	echo "smtpd: up, pid $pid, smtp $BIND:$S_PORT, log $S_LOG$state"
	[[ -z $state ]]
}

env_smtpd() {
	settings_smtpd
	echo "export TRANSPORTD_TEST_SMTP=$BIND:$S_PORT"
}

# ---------------------------------------------------------------------------
# InspIRCd 3 (IRC with its IRCv3 modules: echo-message, labeled-response,
# server-time, message-tags, batch, away-notify, account-notify...): a plain
# and a TLS client port (self-signed certificate for 127.0.0.1). No services,
# so no SASL. It finishes a client's registration on a one-second tick.

pkgs_inspircd() { printf '%s\n' inspircd openssl; }

stop_system_inspircd() {
	stop_system_daemon inspircd /run/inspircd/inspircd.pid /var/run/inspircd/inspircd.pid
}

settings_inspircd() {
	I_DIR=$RUN/inspircd
	I_CONF=$I_DIR/inspircd.conf
	I_MOTD=$I_DIR/motd.txt
	I_CERT=$I_DIR/cert.pem
	I_KEY=$I_DIR/key.pem
	I_LOG=$I_DIR/inspircd.log
	I_CONSOLE=$I_DIR/console.log
	I_PIDFILE=$I_DIR/inspircd.pid
	local SAVED_PORT='' SAVED_TLS_PORT='' SAVED_PASS_PORT='' SAVED_IDENT_PORT=''
	# shellcheck disable=SC1091
	[[ -f $I_DIR/settings ]] && . "$I_DIR/settings"
	I_PORT=${TESTENV_INSPIRCD_PORT:-${SAVED_PORT:-26667}}
	I_TLS_PORT=${TESTENV_INSPIRCD_TLS_PORT:-${SAVED_TLS_PORT:-26697}}
	I_PASS_PORT=${TESTENV_INSPIRCD_PASS_PORT:-${SAVED_PASS_PORT:-26670}}
	I_IDENT_PORT=${TESTENV_INSPIRCD_IDENT_PORT:-${SAVED_IDENT_PORT:-26671}}
	check_ports inspircd "$I_PORT" "$I_TLS_PORT" "$I_PASS_PORT" "$I_IDENT_PORT"
}

inspircd_pid() { exe_pid "$I_PIDFILE" /usr/sbin/inspircd; }

running_inspircd() {
	settings_inspircd
	[[ -n $(inspircd_pid) ]]
}

up_inspircd() {
	settings_inspircd
	local pid
	pid=$(inspircd_pid)
	LOGS=("$I_LOG" "$I_CONSOLE")
	if [[ -n $pid ]]; then
		wait_ports inspircd "$pid" "$I_PORT" "$I_TLS_PORT" "$I_PASS_PORT" "$I_IDENT_PORT"
		log "inspircd already up (pid $pid)"
		return 0
	fi
	[[ -x /usr/sbin/inspircd ]] || die "inspircd is not installed"
	# Debian's AppArmor profile keeps InspIRCd's files under /etc: with it
	# enforced, a config in the run directory cannot be read.
	if grep -qs '^/usr/sbin/inspircd (enforce)' /sys/kernel/security/apparmor/profiles; then
		die "AppArmor enforces /usr/sbin/inspircd's profile, which blocks a config outside /etc: run 'aa-complain /usr/sbin/inspircd' (apparmor-utils) first"
	fi
	ports_free inspircd TESTENV_INSPIRCD_ "$I_PORT" "$I_TLS_PORT" "$I_PASS_PORT" "$I_IDENT_PORT"

	mkdir -p "$I_DIR"
	chmod 0755 "$I_DIR"
	save_settings "$I_DIR/settings" SAVED_PORT="$I_PORT" SAVED_TLS_PORT="$I_TLS_PORT" SAVED_PASS_PORT="$I_PASS_PORT" SAVED_IDENT_PORT="$I_IDENT_PORT"
	if [[ ! -s $I_CERT || ! -s $I_KEY ]]; then
		openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$BIND" \
			-addext "subjectAltName=IP:$BIND,DNS:localhost" \
			-keyout "$I_KEY" -out "$I_CERT" >"$I_CONSOLE.tmp" 2>&1 || {
			cat "$I_CONSOLE.tmp" >&2
			die "cannot create the InspIRCd test certificate"
		}
		rm -f "$I_CONSOLE.tmp"
	fi
	echo "transportd test server" >"$I_MOTD"
	render "$TEMPLATES/inspircd.conf.in" "$I_CONF" \
		BIND="$BIND" PORT="$I_PORT" TLS_PORT="$I_TLS_PORT" PASS_PORT="$I_PASS_PORT" IDENT_PORT="$I_IDENT_PORT" PIDFILE="$I_PIDFILE" \
		MOTD="$I_MOTD" LOG_FILE="$I_LOG" CERT_FILE="$I_CERT" KEY_FILE="$I_KEY"
	chown -R irc:irc "$I_DIR"
	chmod 0644 "$I_CONF" "$I_MOTD" "$I_CERT"
	chmod 0600 "$I_KEY"
	ensure_traversable irc "$I_CONF" "$I_KEY"
	rm -f "$I_PIDFILE"

	# --nofork keeps it in the foreground; setpriv execs, so $! is its pid.
	# ulimit -c 0: InspIRCd 3.15 may dump core on SIGTERM.
	(
		ulimit -c 0
		exec setsid setpriv --reuid=irc --regid=irc --init-groups -- \
			env -i PATH="$SYS_PATH" HOME="$I_DIR" LANG=C.UTF-8 LD_LIBRARY_PATH=/usr/lib/inspircd \
			/usr/sbin/inspircd --config "$I_CONF" --nofork </dev/null >>"$I_CONSOLE" 2>&1 9>&-
	) &
	pid=$!
	wait_ports inspircd "$pid" "$I_PORT" "$I_TLS_PORT" "$I_PASS_PORT" "$I_IDENT_PORT"
	log "inspircd up (pid $pid): irc $BIND:$I_PORT, irc+tls $BIND:$I_TLS_PORT, irc with a server password $BIND:$I_PASS_PORT, irc with ident lookups $BIND:$I_IDENT_PORT"
}

down_inspircd() {
	settings_inspircd
	local pid
	pid=$(inspircd_pid)
	[[ -n $pid ]] || return 0
	kill_wait "$pid" 15
	rm -f "$I_PIDFILE"
	log "inspircd stopped"
}

status_inspircd() {
	settings_inspircd
	local pid p state=""
	pid=$(inspircd_pid)
	if [[ -z $pid ]]; then
		echo "inspircd: down"
		return 1
	fi
	for p in "$I_PORT" "$I_TLS_PORT" "$I_PASS_PORT" "$I_IDENT_PORT"; do
		port_open "$p" || state+=" (port $p closed)"
	done
	echo "inspircd: up, pid $pid, irc $BIND:$I_PORT, irc+tls $BIND:$I_TLS_PORT, irc with a server password $BIND:$I_PASS_PORT, irc with ident lookups $BIND:$I_IDENT_PORT, log $I_LOG$state"
	[[ -z $state ]]
}

env_inspircd() {
	settings_inspircd
	cat <<-EOF2
		export TRANSPORTD_TEST_IRC_ADDR=$BIND:$I_PORT
		export TRANSPORTD_TEST_IRC_TLS_ADDR=$BIND:$I_TLS_PORT
		export TRANSPORTD_TEST_IRC_PASS_ADDR=$BIND:$I_PASS_PORT
		export TRANSPORTD_TEST_IRC_IDENT_ADDR=$BIND:$I_IDENT_PORT
		export TRANSPORTD_TEST_IRC_TLS_CERT=$(q "$I_CERT")
		export TRANSPORTD_TEST_IRC_LOG=$(q "$I_LOG")
	EOF2
}

# ---------------------------------------------------------------------------
# ngIRCd: a second, plainer IRC server (CAP with multi-prefix and
# userhost-in-names only: no echo-message, no server-time, no tags).

pkgs_ngircd() { echo ngircd; }

stop_system_ngircd() {
	stop_system_daemon ngircd /run/ngircd/ngircd.pid /var/run/ngircd/ngircd.pid
}

settings_ngircd() {
	N_DIR=$RUN/ngircd
	N_CONF=$N_DIR/ngircd.conf
	N_CONSOLE=$N_DIR/ngircd.log
	N_PIDFILE=$N_DIR/ngircd.pid
	local SAVED_PORT=''
	# shellcheck disable=SC1091
	[[ -f $N_DIR/settings ]] && . "$N_DIR/settings"
	N_PORT=${TESTENV_NGIRCD_PORT:-${SAVED_PORT:-26668}}
	check_ports ngircd "$N_PORT"
}

ngircd_pid() { exe_pid "$N_PIDFILE" /usr/sbin/ngircd; }

running_ngircd() {
	settings_ngircd
	[[ -n $(ngircd_pid) ]]
}

up_ngircd() {
	settings_ngircd
	local pid i
	pid=$(ngircd_pid)
	LOGS=("$N_CONSOLE")
	if [[ -n $pid ]]; then
		wait_ports ngircd "$pid" "$N_PORT"
		log "ngircd already up (pid $pid)"
		return 0
	fi
	[[ -x /usr/sbin/ngircd ]] || die "ngircd is not installed"
	ports_free ngircd TESTENV_NGIRCD_ "$N_PORT"

	mkdir -p "$N_DIR"
	chmod 0755 "$N_DIR"
	save_settings "$N_DIR/settings" SAVED_PORT="$N_PORT"
	render "$TEMPLATES/ngircd.conf.in" "$N_CONF" BIND="$BIND" PORT="$N_PORT" PIDFILE="$N_PIDFILE"
	chmod 0644 "$N_CONF"
	chown irc:irc "$N_DIR"
	if ! /usr/sbin/ngircd --configtest --config "$N_CONF" >"$N_CONSOLE.tmp" 2>&1; then
		cat "$N_CONSOLE.tmp" >&2
		die "ngircd rejects $N_CONF"
	fi
	rm -f "$N_CONSOLE.tmp" "$N_PIDFILE"

	# Started as root, it switches to ServerUID/ServerGID (irc) by itself;
	# --nodaemon logs to stderr and stays in the foreground.
	setsid /usr/sbin/ngircd --nodaemon --config "$N_CONF" </dev/null >>"$N_CONSOLE" 2>&1 9>&- &
	pid=$!
	wait_ports ngircd "$pid" "$N_PORT"
	for ((i = 0; i < 50; i++)); do
		[[ -s $N_PIDFILE ]] && break
		sleep 0.1
	done
	log "ngircd up (pid $pid): irc $BIND:$N_PORT"
}

down_ngircd() {
	settings_ngircd
	local pid
	pid=$(ngircd_pid)
	[[ -n $pid ]] || return 0
	kill_wait "$pid" 15
	rm -f "$N_PIDFILE"
	log "ngircd stopped"
}

status_ngircd() {
	settings_ngircd
	local pid state=""
	pid=$(ngircd_pid)
	if [[ -z $pid ]]; then
		echo "ngircd: down"
		return 1
	fi
	port_open "$N_PORT" || state=" (port $N_PORT closed)"
	echo "ngircd: up, pid $pid, irc $BIND:$N_PORT, log $N_CONSOLE$state"
	[[ -z $state ]]
}

env_ngircd() {
	settings_ngircd
	echo "export TRANSPORTD_TEST_NGIRCD_ADDR=$BIND:$N_PORT"
}

# ---------------------------------------------------------------------------
# Atheme: SASL on a real IRC server. InspIRCd relays SASL to services, so
# this is a second InspIRCd (its own config, ports and run directory: the
# plain one stays without services) with Atheme linked to it over the
# spanning-tree protocol. Both run as the irc user; `up` waits until
# Atheme has linked (InspIRCd offers "sasl" only from then on).

pkgs_atheme() { printf '%s\n' inspircd atheme-services; }

stop_system_atheme() {
	stop_system_daemon atheme-services /run/atheme/atheme.pid /var/run/atheme/atheme.pid
}

settings_atheme() {
	A_DIR=$RUN/atheme
	A_IRC_CONF=$A_DIR/inspircd.conf
	A_IRC_LOG=$A_DIR/inspircd.log
	A_IRC_CONSOLE=$A_DIR/inspircd.console
	A_IRC_PIDFILE=$A_DIR/inspircd.pid
	A_MOTD=$A_DIR/motd.txt
	A_CONF=$A_DIR/atheme.conf
	A_LOG=$A_DIR/atheme.log
	A_CONSOLE=$A_DIR/atheme.console
	A_PIDFILE=$A_DIR/atheme.pid
	A_DATA=$A_DIR/data
	local SAVED_PORT='' SAVED_LINK_PORT=''
	# shellcheck disable=SC1091
	[[ -f $A_DIR/settings ]] && . "$A_DIR/settings"
	A_PORT=${TESTENV_ATHEME_IRC_PORT:-${SAVED_PORT:-26669}}
	A_LINK_PORT=${TESTENV_ATHEME_LINK_PORT:-${SAVED_LINK_PORT:-26900}}
	check_ports atheme "$A_PORT" "$A_LINK_PORT"
}

atheme_irc_pid() { exe_pid "$A_IRC_PIDFILE" /usr/sbin/inspircd; }
atheme_pid() { exe_pid "$A_PIDFILE" /usr/bin/atheme-services; }

running_atheme() {
	settings_atheme
	[[ -n $(atheme_irc_pid) && -n $(atheme_pid) ]]
}

# atheme_linked: Atheme has linked and synched with its uplink (its log says so).
atheme_linked() { grep -qs 'finished synching with uplink' "$A_LOG" "$A_CONSOLE"; }

up_atheme() {
	settings_atheme
	local pid apid i
	pid=$(atheme_irc_pid)
	apid=$(atheme_pid)
	LOGS=("$A_IRC_LOG" "$A_IRC_CONSOLE" "$A_LOG" "$A_CONSOLE")
	if [[ -n $pid && -n $apid ]]; then
		wait_ports atheme "$pid" "$A_PORT" "$A_LINK_PORT"
		log "atheme already up (inspircd pid $pid, atheme pid $apid)"
		return 0
	fi
	[[ -n $pid ]] && kill_wait "$pid" 15
	[[ -n $apid ]] && kill_wait "$apid" 15
	[[ -x /usr/sbin/inspircd ]] || die "inspircd is not installed"
	[[ -x /usr/bin/atheme-services ]] || die "atheme-services is not installed"
	if grep -qs '^/usr/sbin/inspircd (enforce)' /sys/kernel/security/apparmor/profiles; then
		die "AppArmor enforces /usr/sbin/inspircd's profile, which blocks a config outside /etc: run 'aa-complain /usr/sbin/inspircd' (apparmor-utils) first"
	fi
	ports_free atheme TESTENV_ATHEME_ "$A_PORT" "$A_LINK_PORT"

	mkdir -p "$A_DIR" "$A_DATA"
	chmod 0755 "$A_DIR"
	save_settings "$A_DIR/settings" SAVED_PORT="$A_PORT" SAVED_LINK_PORT="$A_LINK_PORT"
	echo "transportd SASL test server" >"$A_MOTD"
	render "$TEMPLATES/inspircd-sasl.conf.in" "$A_IRC_CONF" \
		BIND="$BIND" PORT="$A_PORT" LINK_PORT="$A_LINK_PORT" LINK_PASSWORD="$COMPONENT_SECRET" \
		PIDFILE="$A_IRC_PIDFILE" MOTD="$A_MOTD" LOG_FILE="$A_IRC_LOG"
	render "$TEMPLATES/atheme.conf.in" "$A_CONF" \
		BIND="$BIND" LINK_PORT="$A_LINK_PORT" LINK_PASSWORD="$COMPONENT_SECRET"
	rm -f "$A_LOG" "$A_CONSOLE" "$A_IRC_PIDFILE" "$A_PIDFILE"
	chown -R irc:irc "$A_DIR"
	chmod 0644 "$A_IRC_CONF" "$A_MOTD"
	chmod 0600 "$A_CONF"
	ensure_traversable irc "$A_IRC_CONF" "$A_CONF"

	(
		ulimit -c 0
		exec setsid setpriv --reuid=irc --regid=irc --init-groups -- \
			env -i PATH="$SYS_PATH" HOME="$A_DIR" LANG=C.UTF-8 LD_LIBRARY_PATH=/usr/lib/inspircd \
			/usr/sbin/inspircd --config "$A_IRC_CONF" --nofork </dev/null >>"$A_IRC_CONSOLE" 2>&1 9>&-
	) &
	pid=$!
	wait_ports atheme "$pid" "$A_PORT" "$A_LINK_PORT"
	# -n: foreground; it writes its pid file itself.
	setsid setpriv --reuid=irc --regid=irc --init-groups -- \
		env -i PATH="$SYS_PATH" HOME="$A_DIR" LANG=C.UTF-8 \
		/usr/bin/atheme-services -n -c "$A_CONF" -D "$A_DATA" -l "$A_LOG" -p "$A_PIDFILE" \
		</dev/null >>"$A_CONSOLE" 2>&1 9>&- &
	apid=$!
	for ((i = 0; i < WAIT_SECS * 10; i++)); do
		atheme_linked && break
		if ! pid_alive "$apid" || ! pid_alive "$pid"; then
			break
		fi
		sleep 0.1
	done
	if ! atheme_linked; then
		kill_wait "$apid" 5 || true
		kill_wait "$pid" 5 || true
		show_log "${LOGS[@]}"
		die "atheme did not link to its InspIRCd"
	fi
	for ((i = 0; i < 50; i++)); do
		[[ -s $A_PIDFILE ]] && break
		sleep 0.1
	done
	log "atheme up (inspircd pid $pid, atheme pid $apid): irc with SASL $BIND:$A_PORT"
}

down_atheme() {
	settings_atheme
	local pid
	pid=$(atheme_pid)
	[[ -n $pid ]] && kill_wait "$pid" 15
	pid=$(atheme_irc_pid)
	[[ -n $pid ]] && kill_wait "$pid" 15
	rm -f "$A_PIDFILE" "$A_IRC_PIDFILE"
	log "atheme stopped"
}

status_atheme() {
	settings_atheme
	local pid apid state=""
	pid=$(atheme_irc_pid)
	apid=$(atheme_pid)
	if [[ -z $pid || -z $apid ]]; then
		echo "atheme: down"
		return 1
	fi
	port_open "$A_PORT" || state=" (port $A_PORT closed)"
	echo "atheme: up, inspircd pid $pid, atheme pid $apid, irc with SASL $BIND:$A_PORT, logs $A_IRC_LOG $A_LOG$state"
	[[ -z $state ]]
}

env_atheme() {
	settings_atheme
	echo "export TRANSPORTD_TEST_IRC_SASL_ADDR=$BIND:$A_PORT"
}

# ---------------------------------------------------------------------------
# ejabberd 23.01: the second XMPP server. c2s (no TLS) and XEP-0114
# components for its own domain, e.test; accounts created with one
# `ejabberdctl import_piefxis` (XEP-0227 file) on a fresh spool.
#
# It is an Erlang node: its node name, cookie ($E_DIR/.erlang.cookie, read
# through HOME), Mnesia spool and logs all live in the run directory, and its
# Erlang distribution listens on a fixed loopback port ($E_DIST_PORT) instead
# of registering with epmd, so no epmd is started and ejabberdctl finds the
# node by that port. Started as the ejabberd user with `ejabberdctl
# foreground` (a shell that stays the parent of beam.smp); stopped with
# SIGTERM, which the Erlang VM turns into an orderly shutdown.

EJABBERD_DOMAIN=e.test
EJABBERD_USER_COUNT=10
EJABBERD_COMPONENTS=(echo echo2 email sms irc bench) # NAME.e.test, secret $COMPONENT_SECRET

pkgs_ejabberd() { echo ejabberd; }

# ejabberd_beam_pids SPOOL: pids of the beam.smp processes whose Mnesia
# directory is SPOOL (the argument `-mnesia dir "SPOOL"` names a node).
ejabberd_beam_pids() {
	local f pid exe
	grep -lszxF -- "\"$1\"" /proc/[0-9]*/cmdline | while read -r f; do
		pid=${f#/proc/}
		pid=${pid%/cmdline}
		exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
		exe=${exe% (deleted)}
		[[ ${exe##*/} == beam.smp ]] && pid_alive "$pid" && echo "$pid"
	done
	return 0
}

stop_system_ejabberd() {
	# Debian's package starts the system node (ejabberd@localhost, Mnesia in
	# /var/lib/ejabberd, ports 5222/5269/5280/5443 on all interfaces) unless
	# policy-rc.d forbids it. Its init script stops it with `ejabberdctl stop`;
	# that node also started epmd (port 4369, all interfaces), which outlives
	# it. The init script is only called when the node runs: its status check
	# would itself start epmd.
	local pid pids
	pids=$(ejabberd_beam_pids /var/lib/ejabberd)
	[[ -n $pids ]] || return 0
	if command -v service >/dev/null; then
		timeout 60 service ejabberd stop >/dev/null 2>&1 || true
	fi
	for pid in $(ejabberd_beam_pids /var/lib/ejabberd); do
		log "stopping system ejabberd (pid $pid)"
		kill_wait "$pid" 30
	done
	if [[ -x /usr/bin/epmd ]] && ! /usr/bin/epmd -names 2>/dev/null | grep -q '^name '; then
		/usr/bin/epmd -kill >/dev/null 2>&1 || true
	fi
}

settings_ejabberd() {
	E_DIR=$RUN/ejabberd
	E_CFG=$E_DIR/ejabberd.yml
	E_CTL_CFG=$E_DIR/ejabberdctl.cfg
	E_SPOOL=$E_DIR/spool
	E_LOGS=$E_DIR/logs
	E_LOG=$E_LOGS/ejabberd.log
	E_ERROR_LOG=$E_LOGS/error.log
	E_CONSOLE=$E_DIR/console.log
	E_PIDFILE=$E_DIR/ejabberd.pid
	E_USERS_DONE=$E_SPOOL/transportd-users
	E_NODE=transportd@localhost
	local SAVED_C2S_PORT='' SAVED_COMPONENT_PORT='' SAVED_DIST_PORT=''
	# shellcheck disable=SC1091
	[[ -f $E_DIR/settings ]] && . "$E_DIR/settings"
	E_C2S_PORT=${TESTENV_EJABBERD_C2S_PORT:-${SAVED_C2S_PORT:-25322}}
	E_COMPONENT_PORT=${TESTENV_EJABBERD_COMPONENT_PORT:-${SAVED_COMPONENT_PORT:-25447}}
	E_DIST_PORT=${TESTENV_EJABBERD_DIST_PORT:-${SAVED_DIST_PORT:-25369}}
	E_LOG_LEVEL=${TESTENV_EJABBERD_LOG_LEVEL:-info}
	check_ports ejabberd "$E_C2S_PORT" "$E_COMPONENT_PORT" "$E_DIST_PORT"
}

# ejabberd_pids: the beam.smp of our node, if running (settings_ejabberd first).
ejabberd_pids() { ejabberd_beam_pids "$E_SPOOL"; }

running_ejabberd() {
	settings_ejabberd
	[[ -n $(ejabberd_pids) ]]
}

# ejabberd_ctl ARGS...: ejabberdctl for our node, as the ejabberd user.
ejabberd_ctl() {
	setpriv --reuid=ejabberd --regid=ejabberd --init-groups -- \
		env -i PATH="$SYS_PATH" HOME="$E_DIR" LANG=C.UTF-8 \
		/usr/sbin/ejabberdctl --config-dir "$E_DIR" --spool "$E_SPOOL" --logs "$E_LOGS" "$@" 9>&-
}

ejabberd_write_config() {
	local c hosts='' sep=''
	mkdir -p "$E_DIR" "$E_SPOOL" "$E_LOGS"
	chmod 0755 "$E_DIR"
	save_settings "$E_DIR/settings" SAVED_C2S_PORT="$E_C2S_PORT" \
		SAVED_COMPONENT_PORT="$E_COMPONENT_PORT" SAVED_DIST_PORT="$E_DIST_PORT"
	# The components, as one YAML flow mapping: {"NAME.DOMAIN": {password: "..."}, ...};
	# check.DOMAIN is for scripts/testenv-check.py, not for tests.
	for c in "${EJABBERD_COMPONENTS[@]}" check; do
		hosts+="$sep\"$c.$EJABBERD_DOMAIN\": {password: \"$COMPONENT_SECRET\"}"
		sep=', '
	done
	render "$TEMPLATES/ejabberd.yml.in" "$E_CFG" \
		BIND="$BIND" DOMAIN="$EJABBERD_DOMAIN" C2S_PORT="$E_C2S_PORT" \
		COMPONENT_PORT="$E_COMPONENT_PORT" COMPONENT_HOSTS="{$hosts}" LOG_LEVEL="$E_LOG_LEVEL"
	# Read by ejabberdctl (a shell fragment), for the server and for each
	# command: the node, its distribution port on loopback (no epmd), pid file.
	cat >"$E_CTL_CFG" <<-EOF
		# Generated by scripts/testenv.sh.
		ERLANG_NODE=$E_NODE
		ERL_DIST_PORT=$E_DIST_PORT
		ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {127,0,0,1}"
		EJABBERD_PID_PATH=$E_PIDFILE
		EJABBERD_BYPASS_WARNINGS=true
	EOF
	# Name resolution for the Erlang VM: "localhost" (the node's host) is loopback.
	cat >"$E_DIR/inetrc" <<-'EOF'
		{lookup, [file, native]}.
		{host, {127,0,0,1}, ["localhost"]}.
	EOF
	if [[ ! -s $E_DIR/.erlang.cookie ]]; then
		(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -dc 0-9a-f >"$E_DIR/.erlang.cookie")
	fi
	chmod 0644 "$E_CFG" "$E_CTL_CFG" "$E_DIR/inetrc"
	chmod 0400 "$E_DIR/.erlang.cookie"
	chmod 0700 "$E_SPOOL"
	chown -R ejabberd:ejabberd "$E_DIR"
	ensure_traversable ejabberd "$E_CFG"
}

# ejabberd_ctl_retry VAR ARGS...: ejabberd_ctl ARGS, retried for up to
# $WAIT_SECS while it fails (right after its ports open the node may not take
# commands yet); its output goes into VAR.
ejabberd_ctl_retry() {
	local -n ejabberd_ctl_out=$1
	local deadline=$((SECONDS + WAIT_SECS))
	shift
	while true; do
		ejabberd_ctl_out=$(ejabberd_ctl "$@" 2>&1) && return 0
		((SECONDS < deadline)) || break
		sleep 0.5
	done
	printf 'ejabberdctl %s: %s\n' "$*" "$ejabberd_ctl_out" >>"$E_CONSOLE"
	show_log "$E_CONSOLE" "$E_ERROR_LOG"
	die "ejabberdctl $* failed: $ejabberd_ctl_out"
}

# ejabberd_create_users [fresh]: create the missing accounts user1..userN@DOMAIN
# (password $PASSWORD) with one import of a XEP-0227 file (one `ejabberdctl
# register` per account costs an Erlang VM start each, and the import fails on
# accounts that exist already, so unless the spool is fresh the existing ones
# are listed first). A marker in the spool records that they are all there.
ejabberd_create_users() {
	local fresh=${1:-0} want have='' i f out missing=()
	want="$EJABBERD_DOMAIN $EJABBERD_USER_COUNT $PASSWORD"
	[[ $(cat "$E_USERS_DONE" 2>/dev/null) == "$want" ]] && return 0
	((fresh)) || ejabberd_ctl_retry have registered_users "$EJABBERD_DOMAIN"
	have=" ${have//$'\n'/ } "
	for ((i = 1; i <= EJABBERD_USER_COUNT; i++)); do
		[[ $have == *" user$i "* ]] || missing+=("user$i")
	done
	if ((${#missing[@]})); then
		f=$E_DIR/users.xml
		{
			echo "<?xml version='1.0' encoding='UTF-8'?>"
			echo "<server-data xmlns='urn:xmpp:pie:0'><host jid='$EJABBERD_DOMAIN'>"
			for i in "${missing[@]}"; do echo "<user name='$i' password='$PASSWORD'/>"; done
			echo "</host></server-data>"
		} >"$f"
		chown ejabberd:ejabberd "$f"
		chmod 0600 "$f"
		ejabberd_ctl_retry out import_piefxis "$f"
		rm -f "$f"
		log "created ${#missing[@]} ejabberd accounts"
	fi
	echo "$want" >"$E_USERS_DONE"
}

up_ejabberd() {
	settings_ejabberd
	local pid i launcher
	pid=$(ejabberd_pids | head -n1)
	LOGS=("$E_LOG" "$E_ERROR_LOG" "$E_CONSOLE")
	if [[ -n $pid ]]; then
		wait_ports ejabberd "$pid" "$E_C2S_PORT" "$E_COMPONENT_PORT" "$E_DIST_PORT"
		ejabberd_create_users
		log "ejabberd already up (pid $pid)"
		return 0
	fi
	[[ -x /usr/sbin/ejabberdctl ]] || die "ejabberd is not installed"
	ports_free ejabberd TESTENV_EJABBERD_ "$E_C2S_PORT" "$E_COMPONENT_PORT" "$E_DIST_PORT"
	ejabberd_write_config
	rm -f "$E_PIDFILE"
	local fresh=0 # no Mnesia database yet: no accounts either
	[[ -e $E_SPOOL/schema.DAT ]] || fresh=1

	# setsid: own session (a Ctrl-C aimed at the caller does not reach it);
	# 9>&-: the server must not hold our lock. The launcher is ejabberdctl's
	# shell; beam.smp is its child.
	setsid setpriv --reuid=ejabberd --regid=ejabberd --init-groups -- \
		env -i PATH="$SYS_PATH" HOME="$E_DIR" LANG=C.UTF-8 \
		/usr/sbin/ejabberdctl --config-dir "$E_DIR" --spool "$E_SPOOL" --logs "$E_LOGS" \
		foreground </dev/null >>"$E_CONSOLE" 2>&1 9>&- &
	launcher=$!
	for ((i = 0; i < WAIT_SECS * 10; i++)); do
		pid=$(ejabberd_pids | head -n1)
		[[ -n $pid ]] && break
		pid_alive "$launcher" || break
		sleep 0.1
	done
	if [[ -z $pid ]]; then
		kill_wait "$launcher" 5 || true
		show_log "${LOGS[@]}"
		die "ejabberd did not start"
	fi
	wait_ports ejabberd "$pid" "$E_C2S_PORT" "$E_COMPONENT_PORT" "$E_DIST_PORT"
	ejabberd_create_users "$fresh"
	log "ejabberd up (pid $pid): c2s $BIND:$E_C2S_PORT, components $BIND:$E_COMPONENT_PORT, domain $EJABBERD_DOMAIN"
}

down_ejabberd() {
	settings_ejabberd
	local pid stopped=0
	for pid in $(ejabberd_pids); do
		kill_wait "$pid" 30
		stopped=1
	done
	rm -f "$E_PIDFILE"
	((stopped)) && log "ejabberd stopped"
	return 0
}

status_ejabberd() {
	settings_ejabberd
	local pid p state=""
	pid=$(ejabberd_pids | head -n1)
	if [[ -z $pid ]]; then
		echo "ejabberd: down"
		return 1
	fi
	for p in "$E_C2S_PORT" "$E_COMPONENT_PORT"; do
		port_open "$p" || state+=" (port $p closed)"
	done
	echo "ejabberd: up, pid $pid, c2s $BIND:$E_C2S_PORT, components $BIND:$E_COMPONENT_PORT, domain $EJABBERD_DOMAIN, log $E_LOG$state"
	[[ -z $state ]]
}

env_ejabberd() {
	settings_ejabberd
	cat <<-EOF
		export TRANSPORTD_TEST_EJABBERD_C2S=$BIND:$E_C2S_PORT
		export TRANSPORTD_TEST_EJABBERD_COMPONENT=$BIND:$E_COMPONENT_PORT
		export TRANSPORTD_TEST_EJABBERD_DOMAIN=$(q "$EJABBERD_DOMAIN")
		export TRANSPORTD_TEST_EJABBERD_SECRET=$(q "$COMPONENT_SECRET")
		export TRANSPORTD_TEST_EJABBERD_PASSWORD=$(q "$PASSWORD")
		export TRANSPORTD_TEST_EJABBERD_USER_COUNT=$EJABBERD_USER_COUNT
		export TRANSPORTD_TEST_EJABBERD_COMPONENTS=$(q "${EJABBERD_COMPONENTS[*]}")
		export TRANSPORTD_TEST_EJABBERD_MUC_DOMAIN=$(q "conference.$EJABBERD_DOMAIN")
		export TRANSPORTD_TEST_EJABBERD_PIDFILE=$(q "$E_PIDFILE")
		export TRANSPORTD_TEST_EJABBERD_LOG=$(q "$E_LOG")
	EOF
}

# ---------------------------------------------------------------------------
# Commands

has_service() {
	local s
	for s in "${SERVICES[@]}"; do [[ $s == "$1" ]] && return 0; done
	return 1
}

# resolve SERVICE...: the services named and their dependencies (deps_FOO),
# in start order, into the array RESOLVED.
RESOLVED=()
resolve() {
	local s d want=" "
	for s; do
		has_service "$s" || die "unknown service '$s' (known: ${SERVICES[*]})"
		want+="$s "
		if declare -F "deps_$s" >/dev/null; then
			for d in $("deps_$s"); do want+="$d "; done
		fi
	done
	RESOLVED=()
	for s in "${SERVICES[@]}"; do [[ $want == *" $s "* ]] && RESOLVED+=("$s"); done
	return 0
}

lock() {
	case $RUN in *[[:space:]\"\'\\]*) die "the run directory path must not contain spaces, quotes or backslashes: $RUN" ;; esac
	mkdir -p "$RUN"
	chmod 0755 "$RUN"
	exec 9>>"$RUN/.lock"
	flock -w 300 9 || die "timed out waiting for another testenv.sh on $RUN"
}

# Print the export lines of every service that is up; exit 1 if none is.
print_env() {
	local s any=0 out=""
	for s in "${SERVICES[@]}"; do
		if "running_$s"; then
			out+=$("env_$s")$'\n'
			any=1
		fi
	done
	((any)) || return 1
	echo "# transportd test environment: source this, or eval \"\$(scripts/testenv.sh env)\""
	echo "export TESTENV_DIR=$(q "$RUN")"
	echo "export TRANSPORTD_TEST_ENV_SCRIPT=$(q "$SELF")"
	echo "export TRANSPORTD_TEST_DOMAINS=$(q "${DOMAINS[*]}")"
	printf '%s' "$out"
}

write_env() {
	if print_env >"$RUN/env.tmp"; then
		mv -f "$RUN/env.tmp" "$RUN/env"
		chmod 0644 "$RUN/env"
	else
		rm -f "$RUN/env.tmp" "$RUN/env"
	fi
}

# install SERVICE...: install the packages they need, then stop the system
# instances that installing them may have started.
install() {
	local s p pkgs=()
	for s; do
		while read -r p; do [[ -n $p ]] && pkgs+=("$p"); done < <("pkgs_$s")
	done
	ensure_packages "${pkgs[@]}"
	((${#NEWLY_INSTALLED[@]})) || return 0
	for s in "${SERVICES[@]}"; do
		while read -r p; do
			if [[ " ${NEWLY_INSTALLED[*]} " == *" $p "* ]]; then
				"stop_system_$s"
				break
			fi
		done < <("pkgs_$s")
	done
}

cmd_up() {
	local s
	(($#)) || set -- "${DEFAULT_UP[@]}"
	resolve "$@"
	lock
	install "${RESOLVED[@]}"
	is_root || die "starting the servers needs root (they run as their own system users)"
	for s in "${RESOLVED[@]}"; do "up_$s"; done
	write_env
	log "environment: . $(q "$RUN/env")"
}

cmd_down() {
	local i s
	(($#)) || set -- "${SERVICES[@]}"
	resolve "$@" # (dependencies are not stopped: only what is named)
	[[ -d $RUN ]] || return 0
	lock
	for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
		s=${SERVICES[i]}
		[[ " $* " == *" $s "* ]] && "down_$s"
	done
	write_env
}

cmd_restart() {
	local s
	(($#)) || set -- "${DEFAULT_UP[@]}"
	resolve "$@"
	is_root || die "restarting the servers needs root"
	lock
	for s in "${RESOLVED[@]}"; do
		[[ " $* " == *" $s "* ]] || continue
		"down_$s"
		"up_$s"
	done
	write_env
}

cmd_status() {
	local s rc=0
	(($#)) || set -- "${SERVICES[@]}"
	resolve "$@"
	for s in "$@"; do "status_$s" || rc=3; done
	return "$rc"
}

cmd_env() {
	print_env || die "no service is up in $RUN; run: scripts/testenv.sh up"
}

# check [SERVICE...]: prove the running services work, with real clients
# (scripts/testenv-check.py; python3-slixmpp for Prosody).
cmd_check() {
	local s args=()
	if (($# == 0)); then
		for s in "${SERVICES[@]}"; do "running_$s" && set -- "$@" "$s"; done
		(($#)) || die "no service is up in $RUN; run: scripts/testenv.sh up"
	fi
	resolve "$@"
	for s; do
		"running_$s" || die "$s is not up; run: scripts/testenv.sh up $s"
		args+=(--service "$s")
	done
	if [[ " $* " == *" prosody "* || " $* " == *" ejabberd "* ]]; then
		ensure_packages python3 python3-slixmpp
	else
		ensure_packages python3
	fi
	(
		eval "$(print_env)"
		/usr/bin/python3 "$REPO/scripts/testenv-check.py" "${args[@]}"
	)
}

usage() {
	sed -n '2,/^set -euo/p' "$SELF" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
	local cmd=${1:-}
	(($#)) && shift
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	restart) cmd_restart "$@" ;;
	status) cmd_status "$@" ;;
	env) cmd_env "$@" ;;
	check) cmd_check "$@" ;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

# Sourcing the script (for debugging) defines the functions without running main.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
