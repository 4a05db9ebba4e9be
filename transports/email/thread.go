package email

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"transportd/core"
)

// Threads. An XMPP conversation thread and an e-mail thread are kept as one:
//
//   - an incoming mail's thread is derived from the root of its thread: the
//     first Message-ID in References, else In-Reply-To, else its own
//     Message-ID, hashed ("m" + 24 hex digits) so that the thread id is
//     short and reveals nothing. A reply to a mail the user sent in an XMPP
//     thread of the client's own making comes back in that thread: sending
//     records the alias "tid:<hash of the root>" → the client's thread.
//   - per thread, "thr:<thread>" keeps the last Message-ID, the References
//     and the subject, so that an answer in the thread gets In-Reply-To,
//     References and "Re: <subject>".
//
// Both live in the account's state store (Sink.Store).

// threadInfo is the state kept per thread.
type threadInfo struct {
	Last    string   `json:"last"`           // last Message-ID seen or sent in the thread
	Refs    []string `json:"refs,omitempty"` // References of the last mail, root first
	Subject string   `json:"subject,omitempty"`
}

// threadHash is the thread id derived from a root Message-ID.
func threadHash(root string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(root)))
	return "m" + hex.EncodeToString(sum[:12])
}

// threadRoot returns the root Message-ID of a mail's thread.
func threadRoot(pm *parsedMail) string {
	switch {
	case len(pm.References) > 0:
		return pm.References[0]
	case pm.InReplyTo != "":
		return pm.InReplyTo
	}
	return pm.MessageID
}

// incomingThread returns the XMPP thread of an incoming mail and records
// the thread's state for answers.
func incomingThread(ctx context.Context, st core.StateStore, pm *parsedMail) (string, error) {
	root := threadRoot(pm)
	if root == "" {
		return "", nil
	}
	thread := threadHash(root)
	if alias, ok, err := st.Get(ctx, "tid:"+thread); err != nil {
		return "", err
	} else if ok && alias != "" {
		thread = alias
	}
	if pm.MessageID != "" {
		refs := pm.References
		if len(refs) == 0 && pm.InReplyTo != "" {
			refs = []string{pm.InReplyTo}
		}
		info := threadInfo{Last: pm.MessageID, Refs: capRefs(refs), Subject: pm.Subject}
		if err := putThread(ctx, st, thread, info); err != nil {
			return "", err
		}
	}
	return thread, nil
}

// capRefs keeps the root and the latest References (RFC 5322 suggests
// keeping the first and the last ones when trimming).
func capRefs(refs []string) []string {
	if len(refs) <= maxRefs {
		return append([]string(nil), refs...)
	}
	out := []string{refs[0]}
	return append(out, refs[len(refs)-maxRefs+1:]...)
}

func getThread(ctx context.Context, st core.StateStore, thread string) (*threadInfo, error) {
	v, ok, err := st.Get(ctx, "thr:"+thread)
	if err != nil || !ok {
		return nil, err
	}
	var info threadInfo
	if json.Unmarshal([]byte(v), &info) != nil {
		return nil, nil
	}
	return &info, nil
}

func putThread(ctx context.Context, st core.StateStore, thread string, info threadInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return st.Set(ctx, "thr:"+thread, string(b))
}

// replySubject is "Re: subject" without piling up prefixes.
func replySubject(s string) string {
	t := strings.TrimSpace(s)
	for {
		l := strings.ToLower(t)
		switch {
		case strings.HasPrefix(l, "re:"):
			t = strings.TrimSpace(t[3:])
			continue
		case strings.HasPrefix(l, "aw:"), strings.HasPrefix(l, "sv:"):
			t = strings.TrimSpace(t[3:])
			continue
		}
		break
	}
	if t == "" {
		return ""
	}
	return "Re: " + t
}

// outgoingThread works out the threading headers of a mail sent in an XMPP
// thread: In-Reply-To, References and the subject to use when the user
// gave none.
func outgoingThread(info *threadInfo) (inReplyTo string, refs []string, subject string) {
	if info == nil || info.Last == "" {
		return "", nil, ""
	}
	refs = append(capRefs(info.Refs), info.Last)
	if len(refs) > 1 && refs[len(refs)-2] == info.Last {
		refs = refs[:len(refs)-1]
	}
	return info.Last, capRefs(refs), replySubject(info.Subject)
}

// recordSent stores the thread state after a mail went out in thread, and
// the alias that brings answers back into it.
func recordSent(ctx context.Context, st core.StateStore, thread, msgID string, refs []string, subject string) error {
	if thread == "" {
		return nil
	}
	root := msgID
	if len(refs) > 0 {
		root = refs[0]
	}
	if h := threadHash(root); h != thread {
		if err := st.Set(ctx, "tid:"+h, thread); err != nil {
			return err
		}
	}
	return putThread(ctx, st, thread, threadInfo{Last: msgID, Refs: refs, Subject: subject})
}
