#!/usr/bin/env bash
# make soak: transportd (bin/transportd, run as a real process) is killed
# with SIGKILL at random moments while messages flow XMPP → e-mail,
# e-mail → XMPP, XMPP → SMS and SMS → XMPP; at the end every acknowledged
# message must have arrived and none twice where the protocol can tell.
# Prints a summary table (test/soak, build tag "soak").
#
#   scripts/soak.sh                       about 5 minutes of kills, < 10 in all
#   SOAK_DURATION=2m scripts/soak.sh      shorter
#
# Servers: its own Prosody, Dovecot and InspIRCd (scripts/testenv.sh in
# SOAK_TESTENV_DIR, default /tmp/soakenv, on ports 35xxx), so the shared
# test servers and their component connections are not disturbed. Mail is
# injected over LMTP straight into Dovecot and the gateway submits to an
# SMTP sink inside the test (the MTA is not what this tests, and only one
# OpenSMTPD can run per machine); Twilio is internal/faketwilio on a
# loopback port. Servers the script started are stopped at the end
# (SOAK_KEEP_SERVERS=1 keeps them).
#
# IRC (XMPP → IRC private messages, at most once; IRC → XMPP counted) is
# soaked too, with its own InspIRCd; SOAK_IRC=0 leaves it out.
#
# Knobs (environment): SOAK_DURATION (5m), SOAK_DRAIN (150s), SOAK_RATE
# (3 messages/s per direction), SOAK_MIN_UP (1s) and SOAK_MAX_UP (8s): life
# of a process before its kill, SOAK_MAX_DOWN (500ms), SOAK_EMAIL_USERS
# (4), SOAK_SMS_USERS (4), SOAK_IRC_USERS (2), SOAK_SEED, SOAK_DIR (the gateway's directory:
# config, database, log; default under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.26.9}
export GOFLAGS=${GOFLAGS:--buildvcs=false}

export TESTENV_DIR=${SOAK_TESTENV_DIR:-/tmp/soakenv}
export TESTENV_PROSODY_C2S_PORT=${TESTENV_PROSODY_C2S_PORT:-35222}
export TESTENV_PROSODY_COMPONENT_PORT=${TESTENV_PROSODY_COMPONENT_PORT:-35347}
export TESTENV_PROSODY_HTTP_PORT=${TESTENV_PROSODY_HTTP_PORT:-35280}
export TESTENV_DOVECOT_IMAP_PORT=${TESTENV_DOVECOT_IMAP_PORT:-35143}
export TESTENV_DOVECOT_LMTP_PORT=${TESTENV_DOVECOT_LMTP_PORT:-35024}
export TESTENV_DOVECOT_SUBMISSION_PORT=${TESTENV_DOVECOT_SUBMISSION_PORT:-35587}
export TESTENV_DOVECOT_PUSH_PORT=${TESTENV_DOVECOT_PUSH_PORT:-35081}
export TESTENV_INSPIRCD_PORT=${TESTENV_INSPIRCD_PORT:-35667}
export TESTENV_INSPIRCD_TLS_PORT=${TESTENV_INSPIRCD_TLS_PORT:-35697}
export TESTENV_INSPIRCD_PASS_PORT=${TESTENV_INSPIRCD_PASS_PORT:-35670}
export TESTENV_INSPIRCD_IDENT_PORT=${TESTENV_INSPIRCD_IDENT_PORT:-35671}
services=(prosody dovecot)
[[ ${SOAK_IRC:-1} != 0 ]] && services+=(inspircd)

make build >/dev/null # always: a stale binary would soak old code
started=()
for s in "${services[@]}"; do
  scripts/testenv.sh status "$s" >/dev/null 2>&1 || started+=("$s")
done
if ((${#started[@]})); then
  scripts/testenv.sh up "${started[@]}"
fi
cleanup() {
  if ((${#started[@]})) && [[ -z ${SOAK_KEEP_SERVERS:-} ]]; then
    scripts/testenv.sh down "${started[@]}" || true
  fi
}
trap cleanup EXIT
eval "$(scripts/testenv.sh env)"

dur=${SOAK_DURATION:-5m}
drain=${SOAK_DRAIN:-150s}
export SOAK_DURATION=$dur SOAK_DRAIN=$drain
export SOAK_BIN=$REPO/bin/transportd
out=$(mktemp -d /tmp/soak.XXXXXX)
export SOAK_SUMMARY=$out/summary.md
export SOAK_DIR=${SOAK_DIR:-$out/gateway}
echo "soak: $dur of kill -9 with traffic both ways; gateway directory and log in $SOAK_DIR"
status=0
go test -tags soak -run '^TestSoak$' -count=1 -timeout 30m -v ./test/soak/ >"$out/test.log" 2>&1 || status=$?
if [[ -s $SOAK_SUMMARY ]]; then
  cat "$SOAK_SUMMARY"
else
  tail -50 "$out/test.log"
fi
grep -E '^\s+soak_test.go:[0-9]+: ' "$out/test.log" | grep -v -E 'seed|transportd log|users registered|kills in' || true
if ((status)); then
  echo "soak: FAILED (test output: $out/test.log)"
else
  echo "soak: passed (test output: $out/test.log)"
fi
exit $status
