package core

import "time"

// SetBrowseFor shortens how long a room listing keeps a session, for a
// test; it returns the undo.
func SetBrowseFor(d time.Duration) func() {
	old := browseFor
	browseFor = d
	return func() { browseFor = old }
}
