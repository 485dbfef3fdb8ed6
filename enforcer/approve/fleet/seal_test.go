package fleet

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"testing"

	"golang.org/x/crypto/nacl/box"
)

type capture struct{ *Client }

func (c *capture) seal(t *testing.T, h Hold, d Decision) []byte {
	key, err := base64.StdEncoding.DecodeString(h.BoxKey)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(d)
	s, err := box.SealAnonymous(nil, plain, (*[32]byte)(key), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
