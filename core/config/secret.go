package config

import (
	"errors"
	"io/fs"
	"os"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// secret loads the secret named by exactly one of the keys fileName and
// envName under parent, and returns it with surrounding white space
// trimmed, along with its source ("file PATH" or "env NAME"). Problems are
// reported; the secret itself never appears in them. quiet suppresses the
// "one of ... is required" problem when another one already explains it.
func (v *validator) secret(parent toml.Key, fileName, envName string, file, env value, quiet bool) (secret, source string, ok bool) {
	fk, ek := sub(parent, fileName), sub(parent, envName)
	path, hasFile := v.str(fk, file)
	name, hasEnv := v.str(ek, env)
	if file.set && !hasFile || env.set && !hasEnv {
		return "", "", false // wrong type, reported
	}
	switch {
	case hasFile && hasEnv:
		v.errorf(parent, "set only one of %s and %s", fileName, envName)
		return "", "", false
	case !hasFile && !hasEnv:
		if !quiet {
			v.errorf(parent, "one of %s or %s is required", fileName, envName)
		}
		return "", "", false
	case hasFile:
		if path == "" {
			v.errorf(fk, "is empty; set it to the path of the file holding the secret")
			return "", "", false
		}
		path = v.path(path)
		data, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				v.errorf(fk, "file %s does not exist", path)
			} else {
				var pe *fs.PathError
				if errors.As(err, &pe) {
					err = pe.Err
				}
				v.errorf(fk, "cannot read file %s: %v", path, err)
			}
			return "", "", false
		}
		secret = strings.TrimSpace(string(data))
		if secret == "" {
			v.errorf(fk, "file %s is empty", path)
			return "", "", false
		}
		return secret, "file " + path, true
	default:
		if !envNameRE.MatchString(name) {
			// Not quoted: this is where a secret pasted by mistake would land.
			v.errorf(ek, "is not an environment variable name (letters, digits and _, not starting with a digit)")
			return "", "", false
		}
		val, set := v.lookupEnv(name)
		if !set {
			v.errorf(ek, "environment variable %s is not set", name)
			return "", "", false
		}
		secret = strings.TrimSpace(val)
		if secret == "" {
			v.errorf(ek, "environment variable %s is empty", name)
			return "", "", false
		}
		return secret, "env " + name, true
	}
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// describe turns a secret's source into words for messages.
func describe(source string) string {
	if name, ok := strings.CutPrefix(source, "env "); ok {
		return "environment variable " + name
	}
	return source
}
