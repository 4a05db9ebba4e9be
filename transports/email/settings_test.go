package email

import (
	"testing"
	"time"
)

func TestSchemas(t *testing.T) {
	for i, d := range []map[string]string{
		nil,
		{fIMAPHost: "imap.example.org", fIMAPPort: "993", fIMAPSecurity: "tls", fSMTPSecurity: "starttls", fInitialUnread: "5"},
		{fIMAPSecurity: "plain", dAllowPlaintext: "true", fFolders: "INBOX, Lists", fMessageType: "normal", fSaveSent: "false"},
		{fIMAPSecurity: "plain"}, // not allowed: falls back to tls
	} {
		for _, s := range []struct {
			name string
			f    func(map[string]string) error
		}{
			{"registration", func(d map[string]string) error { s := registrationSchema(d); return s.Check() }},
			{"settings", func(d map[string]string) error { s := settingsSchema(d); return s.Check() }},
		} {
			if err := s.f(d); err != nil {
				t.Errorf("%d: %s schema: %v", i, s.name, err)
			}
		}
	}
}

func TestParseSettings(t *testing.T) {
	st, err := parseSettings(map[string]string{fEmail: "Jane@Example.org", fPassword: "pw", fFolders: "INBOX, Lists ,", fSignature: "Jane\n"},
		map[string]string{fIMAPHost: "IMAP.example.org.", fSMTPSecurity: "starttls", dPollInterval: "5s", dAttachmentTTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Address != "jane@example.org" || st.Login != "jane@example.org" || st.IMAP != (server{"imap.example.org", 993, secTLS}) ||
		st.SMTP != (server{"", 587, secSTARTTLS}) || len(st.Folders) != 2 || st.Folders[1] != "Lists" || st.Signature != "Jane" ||
		st.Poll != 5*time.Second || st.AttachmentTTL != time.Hour || !st.SaveSent || !st.SMTPAuth || st.Normal {
		t.Errorf("%+v", st)
	}
	if _, err := parseSettings(map[string]string{fEmail: "jane@example.org", fIMAPSecurity: "plain"}, nil); err == nil {
		t.Error("plain text accepted without allow_plaintext")
	}
	if _, err := parseSettings(map[string]string{fEmail: "jane@example.org\r\nBcc: x"}, nil); err == nil {
		t.Error("unsafe address accepted")
	}
}
