package heapclient

import (
	"strconv"

	"github.com/heapdel/heapdel/internal/jsonx"
)

// User names one Heap user: by Identity, or by UserID when Identity is empty.
type User struct {
	Identity string
	UserID   uint64
}

// MarshalJSON gives {"identity":"..."} or {"user_id":123}, the user id as an exact
// JSON integer. It never fails.
func (u User) MarshalJSON() ([]byte, error) {
	return appendUser(nil, u), nil
}

// appendUser appends u's JSON form. It is the one encoder of users, used for each
// user of a 10,000-user batch, so it avoids reflection and allocation.
func appendUser(b []byte, u User) []byte {
	if u.Identity == "" {
		b = append(b, `{"user_id":`...)
		b = strconv.AppendUint(b, u.UserID, 10)
		return append(b, '}')
	}
	b = append(b, `{"identity":`...)
	b = jsonx.AppendString(b, u.Identity)
	return append(b, '}')
}
