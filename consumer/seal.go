package consumer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// A job that can still need its users sent to Heap again keeps them sealed: the
// identity or user id encrypted with AES-256-GCM under a key derived (HKDF-SHA256)
// from the identity hash key, bound to the request id. It is what lets `heapdel
// redrive` submit a failed job again without the upstream system re-sending it.
// The seal is dropped when the job completes (Heap has deleted the user: nothing
// is kept for a person who is gone) and expires with a failed job after the job
// retention. Nobody without the hash key can open it, and no reply, report, log
// or event ever carries it.

// sealInfo is the HKDF info of the sealing key: a key of its own, never the hash key.
const sealInfo = "heapdel job identity seal v1"

// ErrUnsealable: a sealed identity does not open with this key (the identity hash
// key, or the Heap API key it is derived from, changed since it was sealed) or is
// damaged.
var ErrUnsealable = errors.New("the sealed identity does not open with this identity hash key")

// Sealer seals and opens the users of jobs. Safe for concurrent use.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns the sealer of the identity hash key hashKey (consumer
// Config.HashKey, config's HashKey()).
func NewSealer(hashKey []byte) (*Sealer, error) {
	if len(hashKey) == 0 {
		return nil, errors.New("seal: the identity hash key is empty")
	}
	key, err := hkdf.Key(sha256.New, hashKey, nil, sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal returns the user of a command (identity, or user id when identity is "")
// sealed for requestID, in unpadded base64.
func (s *Sealer) Seal(requestID, identity string, userID uint64) string {
	var pt []byte
	if identity != "" {
		pt = append([]byte("i:"), identity...)
	} else {
		pt = strconv.AppendUint([]byte("u:"), userID, 10)
	}
	ct := s.aead.Seal(nil, nil, pt, []byte(requestID))
	clear(pt)
	return base64.RawStdEncoding.EncodeToString(ct)
}

// Open returns the user sealed for requestID: an identity, or a user id when the
// identity is "". It returns [ErrUnsealable] when sealed does not open with this
// key for this request id.
func (s *Sealer) Open(requestID, sealed string) (identity string, userID uint64, err error) {
	ct, err := base64.RawStdEncoding.DecodeString(sealed)
	if err != nil {
		return "", 0, ErrUnsealable
	}
	pt, err := s.aead.Open(nil, nil, ct, []byte(requestID))
	if err != nil {
		return "", 0, ErrUnsealable
	}
	defer clear(pt)
	switch v := string(pt); {
	case strings.HasPrefix(v, "i:") && len(v) > 2:
		return v[2:], 0, nil
	case strings.HasPrefix(v, "u:"):
		if id, err := strconv.ParseUint(v[2:], 10, 64); err == nil && id > 0 {
			return "", id, nil
		}
	}
	return "", 0, ErrUnsealable
}
