// Package config reads transportd's TOML configuration file.
//
// The file is decoded into a raw structure whose leaves keep whatever TOML
// value they were given, then validated into the typed Config on top of the
// defaults. Validation never stops at the first problem: Load and Parse
// return every problem they find as one *Errors, each entry naming the TOML
// key it is about (domains."a.test".transports.email.secret_file), unknown
// keys included, so that `transportd check` can print them all at once.
//
// Secrets (the store key and the XEP-0114 component secrets) are read from a
// file or an environment variable named in the config, never from the file
// itself. This package must never put a secret value into an error message,
// and String, GoString and MarshalJSON of Store and Transport leave them out,
// so a Config can be logged or printed safely.
//
// The package reads the files the config names (key and secret files) and
// the environment; it opens no sockets and starts no goroutines.
package config
