package core_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// hostProbe is the echo transport plus Starter: it hands the Host core
// gives it to the test.
type hostProbe struct{ echoTransport }

var probeHosts = make(chan core.Host, 4)

func init() {
	core.Register("hostprobe", func() core.Transport { return hostProbe{} })
}

func (hostProbe) Info() core.Info {
	i := echoTransport{}.Info()
	i.Name = "hostprobe"
	return i
}

func (hostProbe) Start(_ context.Context, h core.Host) error {
	probeHosts <- h
	return nil
}

// TestUpload: through the Host, a transport finds the server's HTTP upload
// service (Prosody's mod_http_file_share) and puts a file there from the
// component's JID; the GET URL returns the same bytes. A file above the
// service's limit and a JID that is no upload service fail with the errors
// transports fall back on.
func TestUpload(t *testing.T) {
	env := xmpptest.Prosody(t)
	want := os.Getenv("TRANSPORTD_TEST_UPLOAD_JID")
	if want == "" {
		t.Fatal("TRANSPORTD_TEST_UPLOAD_JID not set (scripts/testenv.sh env)")
	}
	testGatewayWith(t, env, "hostprobe", "echo4", "")
	var h core.Host
	select {
	case h = <-probeHosts:
	case <-time.After(wait):
		t.Fatal("the transport was not started")
	}
	up, ok := h.(core.Uploader)
	if !ok {
		t.Fatal("core's Host is not an Uploader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The link comes up shortly after Start: an unanswered request is not
	// a "no", so asking again finds the service.
	var svc core.UploadService
	var err error
	for {
		svc, err = up.UploadService(ctx, "")
		if err == nil || errors.Is(err, core.ErrNoUploadService) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || svc.JID != want || svc.MaxSize != 16<<20 {
		t.Fatalf("UploadService = %+v, %v; want %s with 16 MiB", svc, err, want)
	}
	if s, err := up.UploadService(ctx, want); err != nil || s != svc {
		t.Fatalf("UploadService(%s) = %+v, %v", want, s, err)
	}

	data := bytes.Repeat([]byte("upload \x00\xff "), 1000)
	get, err := up.Upload(ctx, svc, core.UploadFile{Name: "notes ü.bin", Type: "application/octet-stream", Size: int64(len(data))}, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if !strings.HasPrefix(get, "http://"+os.Getenv("TRANSPORTD_TEST_XMPP_HTTP")+"/") {
		t.Errorf("GET URL %s is not on Prosody's HTTP port", get)
	}
	res, err := http.Get(get)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("GET %s: %s, %d bytes (want %d)", get, res.Status, len(got), len(data))
	}

	// Too large: refused before anything is sent, whatever the body.
	_, err = up.Upload(ctx, svc, core.UploadFile{Name: "big.bin", Size: svc.MaxSize + 1}, strings.NewReader(""))
	if !errors.Is(err, core.ErrUploadTooLarge) {
		t.Errorf("too large: %v, want ErrUploadTooLarge", err)
	}
	// The service's own refusal when it stated no limit to us.
	_, err = up.Upload(ctx, core.UploadService{JID: svc.JID}, core.UploadFile{Name: "big.bin", Size: svc.MaxSize + 1}, strings.NewReader(""))
	if !errors.Is(err, core.ErrUploadTooLarge) {
		t.Errorf("too large for the service: %v, want ErrUploadTooLarge", err)
	}
	// A body shorter than announced fails; it is not stored half.
	if _, err := up.Upload(ctx, svc, core.UploadFile{Name: "short.bin", Size: 10}, strings.NewReader("abc")); err == nil {
		t.Error("a short body was accepted")
	}
	// Bad names are refused here, not by the service.
	if _, err := up.Upload(ctx, svc, core.UploadFile{Name: "a/b", Size: 1}, strings.NewReader("x")); err == nil {
		t.Error("a name with / was accepted")
	}
	// No upload service there: a definite "no".
	for _, j := range []string{"nothere.a.test", "conference.a.test", "not a jid@"} {
		if _, err := up.UploadService(ctx, j); !errors.Is(err, core.ErrNoUploadService) {
			t.Errorf("UploadService(%q) = %v, want ErrNoUploadService", j, err)
		}
	}
}
