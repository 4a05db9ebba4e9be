//go:build soak

// Package soak is the crash soak of transportd (make soak): bin/transportd
// runs as a real process and is killed with SIGKILL at random moments while
// traffic flows both ways through the e-mail and SMS transports; every
// message that was acknowledged must arrive after the restarts, and none
// twice where the protocol can tell (see soak_test.go).
package soak

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// gwProc is transportd running as a process of its own, restarted on the
// same configuration and database.
type gwProc struct {
	bin, dir string
	logPath  string

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	gen   int
	exits []string // unexpected exits, with their status
}

// writeConfig writes the key, the component secret and transportd.toml
// into dir, the way scripts/run.sh does for a local deployment.
func writeConfig(bin, dir string, cfg string, secret string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if out, err := exec.Command(bin, "keygen", "-out", filepath.Join(dir, "key")).CombinedOutput(); err != nil {
		return fmt.Errorf("keygen: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "component.secret"), []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	if lvl := os.Getenv("SOAK_LOG_LEVEL"); lvl != "" {
		// debug, with the IRC wire trace, to follow single messages.
		cfg = strings.Replace(cfg, `level = "info"`, fmt.Sprintf("level = %q", lvl), 1)
		if lvl == "debug" {
			cfg = strings.Replace(cfg, `allowed_servers = "127.0.0.1"`, "allowed_servers = \"127.0.0.1\"\ntrace = \"true\"", 1)
		}
	}
	path := filepath.Join(dir, "transportd.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(bin, "check", "-config", path).CombinedOutput(); err != nil {
		return fmt.Errorf("transportd check: %v: %s", err, out)
	}
	return nil
}

// start runs the process; its output is appended to the log file.
func (p *gwProc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== soak: start %d at %s\n", p.gen, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, "-config", filepath.Join(p.dir, "transportd.toml"))
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	gen := p.gen
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		if p.cmd == cmd && p.done == done {
			// Not killed by us: a crash.
			p.exits = append(p.exits, fmt.Sprintf("run %d: %v", gen, err))
			p.cmd = nil
		}
		p.mu.Unlock()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *gwProc) kill() { p.signal(syscall.SIGKILL) }

// stop ends the process gracefully (SIGTERM), then kills it if it lingers.
func (p *gwProc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (p *gwProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	<-done
}

func (p *gwProc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.exits...)
}

// logCount counts lines of the process log that contain s.
func (p *gwProc) logCount(s string) int {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), s)
}
