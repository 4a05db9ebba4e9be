-- Prosody (0.12) snippet for transportd: one external component (XEP-0114)
-- per transport and XMPP domain. Add to /etc/prosody/prosody.cfg.lua (or a
-- file in /etc/prosody/conf.d/) and keep each secret equal to the file named
-- by secret_file in transportd's config.

-- Components connect over loopback only.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "email.example.net"
    component_secret = "REPLACE: contents of /etc/transportd/email.secret"

Component "sms.example.net"
    component_secret = "REPLACE: contents of /etc/transportd/sms.secret"

Component "irc.example.net"
    component_secret = "REPLACE: contents of /etc/transportd/irc.secret"

-- Optional, for the contacts features (roster push and sent carbons,
-- XEP-0356): Debian's prosody-modules ships mod_privilege.
-- VirtualHost "example.net"
--     modules_enabled = { "privilege" }
--     privileged_entities = {
--         ["email.example.net"] = { roster = "both", message = "outgoing" },
--     }
