package email

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"
)

// resolver is the part of net.Resolver discovery uses (a fake in tests).
type resolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// prober tells whether something accepts TCP connections at addr.
type prober func(ctx context.Context, addr string) bool

func tcpProbe(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: 4 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// candidate is one way to reach a service.
type candidate struct {
	srv     server
	fromSRV bool
}

// discover finds the IMAP or SMTP submission server of a mail domain: RFC
// 6186 SRV records first (_imaps/_imap, _submissions/_submission; a target
// of "." says the service is not offered), then the usual host names
// (imap./mail./smtp.) on the usual ports, keeping the first that answers.
// Only TLS and STARTTLS are ever discovered.
func discover(ctx context.Context, r resolver, probe prober, domain string, smtp bool) (server, bool) {
	var cands []candidate
	type srvKind struct {
		service, sec string
	}
	kinds := []srvKind{{"imaps", secTLS}, {"imap", secSTARTTLS}}
	names := []string{"imap.", "mail."}
	type portSec struct {
		port int
		sec  string
	}
	ports := []portSec{{993, secTLS}, {143, secSTARTTLS}}
	if smtp {
		kinds = []srvKind{{"submissions", secTLS}, {"submission", secSTARTTLS}}
		names = []string{"smtp.", "mail."}
		ports = []portSec{{465, secTLS}, {587, secSTARTTLS}}
	}
	for _, k := range kinds {
		_, recs, err := r.LookupSRV(ctx, k.service, "tcp", domain)
		if err != nil {
			continue
		}
		for _, rec := range recs {
			target := strings.TrimSuffix(rec.Target, ".")
			if target == "" || rec.Port == 0 {
				continue // "." : service decidedly not available
			}
			cands = append(cands, candidate{srv: server{Host: strings.ToLower(target), Port: int(rec.Port), Security: k.sec}, fromSRV: true})
		}
	}
	for _, p := range ports {
		for _, n := range names {
			cands = append(cands, candidate{srv: server{Host: n + domain, Port: p.port, Security: p.sec}})
		}
	}
	for _, c := range cands {
		if ctx.Err() != nil {
			break
		}
		if probe(ctx, net.JoinHostPort(c.srv.Host, strconv.Itoa(c.srv.Port))) {
			return c.srv, true
		}
	}
	return server{}, false
}

// domainOf returns the domain of an address.
func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}
