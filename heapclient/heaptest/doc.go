// Package heaptest is a Heap User Deletion API simulator for tests, benchmarks,
// `heapdel demo` and `heapdel heapsim`, in the style of net/http/httptest.
//
// [New] returns a [Sim], an http.Handler serving Heap's three endpoints under
// /api/public/v0; [NewServer] serves one on a loopback port and gives its URL.
// The simulator keeps what it received so that tests can inspect it
// ([Sim.Submissions], [Sim.Requests], [Sim.Deletion], [Sim.SubmittedUsers]), and
// it can be told to misbehave in scripted stages ([Sim.Script]).
//
// # What it does as Heap documents it
//
//   - POST /api/public/v0/auth_token with HTTP Basic auth (app id, API key) answers
//     200 {"access_token": "..."}; wrong or missing credentials answer 401 with
//     {"err":{"message":"..."}}.
//   - POST /api/public/v0/user_deletion with "Authorization: Bearer <token>" and
//     {"users":[{"user_id":1},{"identity":"a@example.com"}]} answers 201 with
//     deletion_request_location, deletion_request_id (a random UUID v4) and
//     status "pending". A token the simulator did not issue, or one older than
//     [Options].TokenTTL, answers 401.
//   - GET /api/public/v0/deletion_status/{id} answers 200 with the id and status
//     "pending" or "complete"; an unknown id, or the id of another app's deletion,
//     answers 404.
//
// Tokens and deletions belong to one app: [Options].AppID/APIKey, or one of
// [Options].Apps. A token of one app cannot see another app's deletions.
//
// # What it assumes where Heap documents nothing
//
// These behaviours are the simulator's assumptions, chosen to be strict; the real
// Heap may differ, and the client must not depend on their details:
//
//   - Bad user_deletion bodies answer 400 {"err":{"message":"..."}}: invalid JSON,
//     a Content-Type other than application/json, no users, more than 10,000 users,
//     an element with both or neither of identity and user_id, an empty identity, a
//     user_id that is not a non-negative JSON integer (a string "123" is refused),
//     and, by [Options].Rule, a user whose deletion Heap refuses. That last
//     message deliberately echoes the user (as a careless server might) so that
//     client tests can prove they redact it.
//   - Rate limiting is not simulated on its own: 429 (with or without Retry-After)
//     and 5xx come only from scripted [Fault] stages.
//   - The token lifetime defaults to 5 minutes, as Heap's help centre says; the
//     response carries no expiry.
//   - A deletion reads "pending" until [Options].CompleteAfter has passed since it
//     was created (computed lazily from the creation time on each read: no timer
//     or goroutine per deletion), then "complete"; [Options].NeverComplete and a
//     [OutcomeHang] rule keep it pending forever.
//   - Unknown paths answer 404 and wrong methods 405, with an err object.
//
// # Faults
//
// [Sim.Script] appends [Fault] stages that apply one after another: each stage
// applies to the requests that match its Endpoint until it has seen Count of them
// or For has passed since it began, then the next stage begins. A stage can add
// latency, answer a status (429, 5xx, a 301 with a Location, a proxy's 407, ...)
// with an optional Retry-After, or drop the connection without answering; Rate
// hits only a seeded-random fraction of the matching requests. A stage's Body
// replaces the answer's body: with a status, as the whole answer; without one,
// the request is handled as usual (a user_deletion is accepted and recorded)
// and only the body the client reads is replaced, as when Heap accepted the
// users but the client cannot read the deletion request id.
//
// The simulator is safe for concurrent use; its lock is held only briefly and
// never while reading a request body or sleeping.
package heaptest
