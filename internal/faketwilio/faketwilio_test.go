package faketwilio

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"
)

// TestSignature: the fake signs as twilio-go's own validator expects.
func TestSignature(t *testing.T) {
	p := url.Values{"To": {"+12025550100"}, "Body": {"hé & <x>"}, "MessageSid": {"SM1"}}
	u := "https://gw.example.net/sms/a.test/incoming?x=1"
	rv, other := client.NewRequestValidator("tok"), client.NewRequestValidator("other")
	if !rv.Validate(u, map[string]string{"To": p.Get("To"), "Body": p.Get("Body"), "MessageSid": "SM1"}, Signature("tok", u, p)) {
		t.Fatal("twilio-go does not accept the fake's signature")
	}
	if other.Validate(u, map[string]string{"To": p.Get("To")}, Signature("tok", u, p)) {
		t.Fatal("a signature with another token validates")
	}
}

// TestCreateAndStatus: Basic auth, a create, the listing, and the status
// callbacks posted (signed) after it, retried until answered 200.
func TestCreateAndStatus(t *testing.T) {
	f, err := New("")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sid, token := f.AddAccount()
	f.AddNumber(sid, "+12025550100")
	var calls, refused atomic.Int32
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if refused.Add(1) == 1 {
			http.Error(w, "down", http.StatusServiceUnavailable) // the first try fails: retried
			return
		}
		rv := client.NewRequestValidator(token)
		if !rv.Validate("http://"+r.Host+r.URL.Path, flat(r.PostForm), r.Header.Get("X-Twilio-Signature")) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		calls.Add(1)
	}))
	defer gw.Close()
	f.SetAutoStatus(10*time.Millisecond, 5*time.Second, "sent", "delivered")
	form := url.Values{"From": {"+12025550100"}, "To": {"+12025550123"}, "Body": {"hi"}, "StatusCallback": {gw.URL + "/status"}}
	req, _ := http.NewRequest(http.MethodPost, f.URL+"/2010-04-01/Accounts/"+sid+"/Messages.json", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(sid, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.HasPrefix(m["sid"].(string), "SM") {
		t.Fatalf("create: %d %v", resp.StatusCode, m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d status callbacks validated, want 2", calls.Load())
	}
	if s := f.Sent(); len(s) != 1 || s[0].Status != "delivered" || s[0].Callbacks != 2 {
		t.Fatalf("sent %+v", s)
	}
	// Wrong credentials.
	req, _ = http.NewRequest(http.MethodGet, f.URL+"/2010-04-01/Accounts/"+sid+".json", nil)
	req.SetBasicAuth(sid, "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("wrong token: %v %v", resp.StatusCode, err)
	}
}

func flat(v url.Values) map[string]string {
	m := map[string]string{}
	for k := range v {
		m[k] = v.Get(k)
	}
	return m
}
