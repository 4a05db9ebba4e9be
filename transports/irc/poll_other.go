//go:build !linux

package irc

// poller is Linux's (poll_linux.go); elsewhere every connection has a
// reading goroutine.
type poller struct{}

func thePoller() *poller            { return nil }
func (p *poller) add(c *conn) error { return errClosed }
func (p *poller) remove(c *conn)    {}
