// Package sms is the SMS transport: Twilio's REST API (or a Twilio-compatible
// provider's) out, Twilio's webhooks in. A user registers a phone number of a
// Twilio account at sms.<domain>; from then on a chat with
// +15551234567@sms.<domain> is an SMS conversation with that number.
//
// What it does, by file:
//
//   - config.go: the domain's defaults (region, country allow-list, shared
//     account, API base URL, rate, daily cap), read once at Start.
//   - number.go: phone numbers: E.164 normalisation with the domain's region,
//     the JID mapping, and the destination policy (allowed countries, no
//     premium-rate, shared-cost or short codes).
//   - segments.go: GSM-7 / UCS-2 segment counting and splitting of bodies
//     longer than the API accepts.
//   - twilio.go: the twilio-go client pointed at the configured base URL,
//     bound to a context, and Twilio's errors turned into ours.
//   - transport.go: the core.Transport: registration form, Verify (the number
//     belongs to the account; its SMS webhook is set to the gateway), the JID
//     mapping and the Usage command.
//   - session.go: one registered number: the API check, state reports, and
//     reconciliation of SMS received while the gateway was down.
//   - send.go: sending through core's outbox: rate limit per number, daily
//     cap, splitting, and the record that keeps an interrupted send from
//     sending twice.
//   - webhook.go: incoming SMS/MMS and delivery status callbacks, with
//     Twilio's signature checked against the configured public URL.
//
// What users see: contacts are JIDs whose localpart is the E.164 number
// (jabber:iq:gateway turns "202 555 0123" into +12025550123@sms.<domain>);
// a receipt (XEP-0184) when Twilio's status callback says "delivered"; a
// message error, and a notice from the gateway, when it says "failed" or
// "undelivered" (with Twilio's error code and its meaning); each MMS picture
// as a message of its own carrying the media URL (XEP-0066); and the ad-hoc
// command "Usage": SMS sent today against the daily cap, and the last
// message's cost in SMS segments (GSM-7: 160, or 153 per part; UCS-2: 70,
// or 67) and encoding.
//
// Delivery guarantees: an incoming SMS is acknowledged to Twilio (200 with
// empty TwiML) only after core committed it; MessageSid is its idempotency
// key, so replays and the reconciliation after an outage deliver it once.
// An outgoing message is created at Twilio at most once per stanza: see the
// comment at the top of send.go for how an interrupted create is resolved.
//
// Out of scope: group MMS (Twilio's Programmable Messaging has none on long
// codes; only its Conversations API does), sending pictures (XMPP clients
// upload to their own server and send a link, which goes out as text),
// Messaging Services as sender, and media URLs protected by Twilio's HTTP
// authentication option.
//
// It must never: trust a webhook whose X-Twilio-Signature does not verify
// against the URL rebuilt from http.public_url (never the request's Host or
// X-Forwarded-* headers); acknowledge an incoming SMS before core committed
// it; create a Twilio message again when an earlier attempt may have created
// it and Twilio has not been asked; log an auth token, or message bodies
// above debug level.
package sms
