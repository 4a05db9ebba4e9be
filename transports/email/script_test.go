package email

import "os/exec"

func runScript(script string, args ...string) ([]byte, error) {
	return exec.Command(script, args...).CombinedOutput()
}
