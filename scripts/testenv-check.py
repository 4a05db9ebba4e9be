#!/usr/bin/python3
"""Smoke test of the test environment's servers (scripts/testenv.sh check).

--service prosody (real XMPP code: Debian's python3-slixmpp, for /usr/bin/python3)
  1. a raw XEP-0114 handshake with a wrong secret must be refused;
  2. a raw XEP-0114 handshake, sha1(stream id + secret), must be accepted;
  3. slixmpp as the component COMPONENT (default check.b.test, which only this
     script uses) echoes messages;
  4. slixmpp as the client USER (default user30@b.test) logs in on c2s without TLS (SCRAM),
     sends a message to check@COMPONENT and must get the echo back.
--service ejabberd
  the same against the ejabberd (component check.e.test, client user10@e.test).
--service dovecot (Python's imaplib and smtplib.LMTP)
  a wrong password is refused; MAILBOX logs in and IDLEs; a message handed to
  LMTP shows up as EXISTS during IDLE; it is deleted again.
--service smtpd
  the same, with the message sent over SMTP (so through OpenSMTPD's LMTP
  delivery); an unknown recipient is refused.
--service inspircd / --service ngircd (raw sockets)
  two clients register, join a channel and one's PRIVMSG reaches the other;
  InspIRCd must offer the IRCv3 capabilities the IRC transport uses.
--service atheme (raw sockets)
  the same on the SASL InspIRCd, which must offer "sasl" (so Atheme is linked).

Settings come from the TRANSPORTD_TEST_* variables that `scripts/testenv.sh env`
prints (defaults: the script's defaults). Exit status 0 when everything worked.
"""

import argparse
import asyncio
import email.message
import hashlib
import imaplib
import logging
import os
import re
import smtplib
import socket
import sys
import time
import uuid

try:
    import slixmpp
except ImportError:  # only needed for --service prosody
    slixmpp = None


def hostport(value):
    host, _, port = value.rpartition(":")
    return host, int(port)


def raw_handshake(addr, jid, secret, timeout=10.0):
    """Open a component stream and hand-shake; return the server's answer."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(
            (
                "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % jid
            ).encode()
        )
        buf = b""
        deadline = time.monotonic() + timeout
        while b"<stream:stream" not in buf or b">" not in buf.split(b"<stream:stream", 1)[1]:
            if time.monotonic() > deadline:
                raise TimeoutError("no stream header from server")
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("server closed the stream: %r" % buf)
            buf += chunk
        m = re.search(rb"""\bid=['"]([^'"]+)['"]""", buf)
        if not m:
            raise ValueError("no stream id in %r" % buf)
        digest = hashlib.sha1(m.group(1) + secret.encode()).hexdigest()
        s.sendall(("<handshake>%s</handshake>" % digest).encode())
        answer = b""
        while b"handshake" not in answer and b"stream:error" not in answer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer to handshake, got %r" % answer)
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        try:
            s.sendall(b"</stream:stream>")
        except OSError:
            pass
        return answer.decode(errors="replace")


class _Missing:
    ComponentXMPP = ClientXMPP = object


class Echo((slixmpp or _Missing).ComponentXMPP):
    def __init__(self, jid, secret, host, port):
        super().__init__(jid, secret, host, port)
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("message", self.on_message)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply("echo: " + msg["body"]).send()


class User((slixmpp or _Missing).ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ready = asyncio.Event()
        self.got = asyncio.Queue()
        self.mech = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.got.put_nowait(("failed_auth", None)))
        self.add_event_handler("message", lambda m: self.got.put_nowait(("message", m)))

    def on_start(self, _):
        self.send_presence()
        self.mech = getattr(self.plugin["feature_mechanisms"], "mech", None)
        self.ready.set()


async def check_ejabberd(args):
    domain = os.environ.get("TRANSPORTD_TEST_EJABBERD_DOMAIN", "e.test")
    ej = argparse.Namespace(**vars(args))
    ej.c2s = os.environ.get("TRANSPORTD_TEST_EJABBERD_C2S", "127.0.0.1:25322")
    ej.component_addr = os.environ.get("TRANSPORTD_TEST_EJABBERD_COMPONENT", "127.0.0.1:25447")
    ej.secret = os.environ.get("TRANSPORTD_TEST_EJABBERD_SECRET", "testsecret")
    ej.password = os.environ.get("TRANSPORTD_TEST_EJABBERD_PASSWORD", "pw")
    ej.component = "check." + domain
    ej.user = "user%s@%s" % (os.environ.get("TRANSPORTD_TEST_EJABBERD_USER_COUNT", "10"), domain)
    return await check_prosody(ej)


async def check_prosody(args):
    if slixmpp is None:
        print("FAIL python3-slixmpp is not installed (apt-get install python3-slixmpp)")
        return False
    ok = True
    c2s = hostport(args.c2s)
    comp = hostport(args.component_addr)

    answer = raw_handshake(comp, args.component, args.secret + "-wrong")
    if "not-authorized" in answer:
        print("ok   component handshake with a wrong secret refused")
    else:
        print("FAIL component handshake with a wrong secret: %r" % answer)
        ok = False

    answer = raw_handshake(comp, args.component, args.secret)
    if "<handshake" in answer and "stream:error" not in answer:
        print("ok   raw component handshake as %s" % args.component)
    else:
        print("FAIL raw component handshake as %s: %r" % (args.component, answer))
        return False

    echo = Echo(args.component, args.secret, *comp)
    echo.connect()
    await asyncio.wait_for(echo.ready.wait(), args.timeout)
    print("ok   slixmpp component %s connected" % args.component)

    user = User(args.user, args.password)
    user.connect(address=c2s, use_ssl=False, force_starttls=False, disable_starttls=True)
    waiter = asyncio.ensure_future(user.ready.wait())
    failed = asyncio.ensure_future(user.got.get())
    done, _ = await asyncio.wait({waiter, failed}, timeout=args.timeout, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        print("FAIL client login as %s on %s:%d (no TLS)" % (args.user, *c2s))
        return False
    failed.cancel()
    mech = user.mech.name if user.mech is not None else "?"
    print("ok   client %s logged in on %s:%d without TLS (SASL %s)" % (user.boundjid, *c2s, mech))

    body = "hello %d" % os.getpid()
    user.send_message(mto="check@" + args.component, mbody=body, mtype="chat")
    try:
        while True:
            kind, msg = await asyncio.wait_for(user.got.get(), args.timeout)
            if kind == "message" and msg["body"] == "echo: " + body:
                print("ok   message to check@%s echoed back from %s" % (args.component, msg["from"]))
                break
    except asyncio.TimeoutError:
        print("FAIL no echo from %s within %ss" % (args.component, args.timeout))
        ok = False

    user.disconnect()
    echo.disconnect()
    await asyncio.sleep(0.2)
    return ok


def imap_idle_until_exists(addr, user, password, deliver, timeout):
    """Log in, IDLE on INBOX, call deliver(); True once EXISTS grows. Deletes
    the delivered message again (marked by its Message-ID)."""
    im = imaplib.IMAP4(*addr)
    try:
        im.login(user, password)
        typ, data = im.select("INBOX")
        before = int(data[0])
        if "IDLE" not in im.capabilities:
            print("FAIL %s: no IDLE capability" % user)
            return False
        tag = im._new_tag()
        im.send(tag + b" IDLE\r\n")
        line = im.readline()
        if not line.startswith(b"+"):
            print("FAIL %s: IDLE answered %r" % (user, line))
            return False
        msgid = deliver()
        im.sock.settimeout(timeout)
        seen = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = im.readline()
            except socket.timeout:
                break
            m = re.match(rb"\* (\d+) EXISTS", line)
            if m and int(m.group(1)) > before:
                seen = True
                break
        im.sock.settimeout(None)
        im.send(b"DONE\r\n")
        while True:  # up to the IDLE's tagged completion
            line = im.readline()
            if not line or line.startswith(tag):
                break
        typ, data = im.search(None, "HEADER", "Message-ID", msgid)
        if data and data[0]:
            for num in data[0].split():
                im.store(num, "+FLAGS", "\\Deleted")
            im.expunge()
        return seen
    finally:
        try:
            im.logout()
        except Exception:  # noqa: BLE001
            pass


def test_message(sender, rcpt):
    msgid = "<%s@testenv-check>" % uuid.uuid4()
    m = email.message.EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = sender, rcpt, "testenv check", msgid
    m.set_content("testenv check\n")
    return msgid, m


def check_dovecot(args):
    imap, lmtp = hostport(args.imap), hostport(args.lmtp)
    try:
        im = imaplib.IMAP4(*imap)
        im.login(args.mailbox, args.password + "-wrong")
        print("FAIL dovecot: IMAP login with a wrong password accepted")
        return False
    except imaplib.IMAP4.error:
        print("ok   dovecot refuses a wrong IMAP password")

    def deliver():
        msgid, m = test_message("check@" + args.mailbox.split("@")[1], args.mailbox)
        with smtplib.LMTP(*lmtp) as s:
            s.send_message(m)
        return msgid

    if imap_idle_until_exists(imap, args.mailbox, args.password, deliver, args.timeout):
        print("ok   dovecot: %s in IDLE saw a message delivered over LMTP %s:%d" % (args.mailbox, *lmtp))
        return True
    print("FAIL dovecot: no EXISTS for %s within %ss of the LMTP delivery" % (args.mailbox, args.timeout))
    return False


def check_smtpd(args):
    imap, smtp = hostport(args.imap), hostport(args.smtp)
    domain = args.mailbox.split("@")[1]
    ok = True
    with smtplib.SMTP(*smtp) as s:
        try:
            s.sendmail("check@" + domain, ["nobody-" + uuid.uuid4().hex[:8] + "@" + domain], "Subject: x\r\n\r\nx\r\n")
            print("FAIL smtpd accepted mail for an unknown recipient")
            ok = False
        except smtplib.SMTPRecipientsRefused as e:
            print("ok   smtpd refuses an unknown recipient: %s" % list(e.recipients.values())[0][1].decode())

    def deliver():
        msgid, m = test_message("check@" + domain, args.mailbox)
        with smtplib.SMTP(*smtp) as s:
            s.send_message(m)
        return msgid

    if imap_idle_until_exists(imap, args.mailbox, args.password, deliver, args.timeout):
        print("ok   smtpd: mail to %s over SMTP %s:%d reached IMAP (seen in IDLE)" % (args.mailbox, *smtp))
    else:
        print("FAIL smtpd: mail to %s did not arrive within %ss" % (args.mailbox, args.timeout))
        ok = False
    return ok


class RawIRC:
    """A bare IRC client: enough to register, join and talk."""

    def __init__(self, addr, nick, timeout, caps=False):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""
        self.timeout = timeout
        self.ls = ""
        if caps:
            self.send("CAP LS 302")
        self.send("NICK " + nick)
        self.send("USER %s 0 * :testenv check" % nick)
        if caps:
            self.ls = self.wait(lambda l: " CAP " in l and " LS " in l)
            self.send("CAP END")
        self.wait(lambda l: re.search(r" (376|422) ", l))

    def send(self, line):
        self.sock.sendall((line + "\r\n").encode())

    def wait(self, pred):
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line.startswith("PING"):
                    self.send("PONG" + line[4:])
                    continue
                if pred(line):
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError("no expected line from the IRC server")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the IRC server closed the connection")
            self.buf += data

    def close(self):
        try:
            self.send("QUIT :check done")
        finally:
            self.sock.close()


def check_irc(name, addr, args, want_caps=()):
    addr = hostport(addr)
    tag = uuid.uuid4().hex[:6]
    a = RawIRC(addr, "chka" + tag, args.timeout, caps=bool(want_caps))
    b = RawIRC(addr, "chkb" + tag, args.timeout)
    ok = True
    try:
        if want_caps:
            offered = set(t.split("=")[0] for t in a.ls.split(":", 2)[-1].split())
            missing = [c for c in want_caps if c not in offered]
            if missing:
                print("FAIL %s does not offer %s" % (name, " ".join(missing)))
                ok = False
            else:
                print("ok   %s offers %s" % (name, " ".join(want_caps)))
        chan = "#check" + tag
        for c in (a, b):
            c.send("JOIN " + chan)
            c.wait(lambda l: " 366 " in l)
        a.send("PRIVMSG %s :hello %s" % (chan, tag))
        b.wait(lambda l: "PRIVMSG %s :hello %s" % (chan, tag) in l)
        print("ok   %s %s:%d: two clients registered, joined %s and talked" % (name, *addr, chan))
    finally:
        a.close()
        b.close()
    return ok


IRCV3_CAPS = ("echo-message", "server-time", "message-tags", "labeled-response", "batch", "away-notify", "account-notify")


def main():
    domains = os.environ.get("TRANSPORTD_TEST_DOMAINS", "a.test b.test").split()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--c2s", default=os.environ.get("TRANSPORTD_TEST_XMPP_C2S", "127.0.0.1:25222"))
    p.add_argument("--component-addr", default=os.environ.get("TRANSPORTD_TEST_XMPP_COMPONENT", "127.0.0.1:25347"))
    p.add_argument("--secret", default=os.environ.get("TRANSPORTD_TEST_COMPONENT_SECRET", "testsecret"))
    users = os.environ.get("TRANSPORTD_TEST_USER_COUNT", "30")
    p.add_argument("--component", default="check." + domains[-1])
    p.add_argument("--user", default="user%s@%s" % (users, domains[-1]))
    p.add_argument("--password", default=os.environ.get("TRANSPORTD_TEST_USER_PASSWORD", "pw"))
    p.add_argument("--imap", default=os.environ.get("TRANSPORTD_TEST_IMAP", "127.0.0.1:25143"))
    p.add_argument("--lmtp", default=os.environ.get("TRANSPORTD_TEST_LMTP", "127.0.0.1:25024"))
    p.add_argument("--smtp", default=os.environ.get("TRANSPORTD_TEST_SMTP", "127.0.0.1:25025"))
    count = os.environ.get("TRANSPORTD_TEST_MAIL_USER_COUNT", "20")
    p.add_argument("--mailbox", default="user%s@%s" % (count, domains[-1]), help="(its INBOX gets a message, deleted again)")
    p.add_argument("--irc", default=os.environ.get("TRANSPORTD_TEST_IRC_ADDR", "127.0.0.1:26667"))
    p.add_argument("--ngircd", default=os.environ.get("TRANSPORTD_TEST_NGIRCD_ADDR", "127.0.0.1:26668"))
    p.add_argument("--irc-sasl", default=os.environ.get("TRANSPORTD_TEST_IRC_SASL_ADDR", "127.0.0.1:26669"))
    p.add_argument("--service", action="append", choices=["prosody", "dovecot", "smtpd", "ejabberd", "inspircd", "ngircd", "atheme"],
                   help="what to check (repeatable; default: prosody)")
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.CRITICAL)
    ok = True
    for service in args.service or ["prosody"]:
        try:
            if service in ("prosody", "ejabberd"):
                loop = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
                good = loop.run_until_complete({"prosody": check_prosody, "ejabberd": check_ejabberd}[service](args))
            elif service == "inspircd":
                good = check_irc("inspircd", args.irc, args, IRCV3_CAPS)
            elif service == "ngircd":
                good = check_irc("ngircd", args.ngircd, args)
            elif service == "atheme":
                good = check_irc("atheme", args.irc_sasl, args, ("sasl",))
            else:
                good = {"dovecot": check_dovecot, "smtpd": check_smtpd}[service](args)
        except Exception as e:  # noqa: BLE001 - report any failure as such
            print("FAIL %s: %s: %s" % (service, type(e).__name__, e))
            good = False
        ok = ok and good
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
