package postgres

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha256"
	"strings"
	"testing"
)

// RFC 7677's SCRAM-SHA-256 example (user "user", password "pencil").
const (
	rfcNonce       = "rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func rfcClient() *scramClient {
	return &scramClient{password: []byte("pencil"), gs2: "n,,", clientNonce: rfcNonce, firstBare: "n=user,r=" + rfcNonce}
}

func TestSCRAMVector(t *testing.T) {
	sc := rfcClient()
	final, err := sc.final([]byte(rfcServerFirst))
	if err != nil {
		t.Fatal(err)
	}
	if string(final) != rfcClientFinal {
		t.Fatalf("client-final\n got %s\nwant %s", final, rfcClientFinal)
	}
	if err := sc.verify([]byte("v=AAAA" + rfcServerFinal[6:])); err == nil {
		t.Fatal("a wrong server signature was accepted")
	}
	if err := sc.verify([]byte(rfcServerFinal)); err != nil || !sc.done {
		t.Fatalf("server-final: %v", err)
	}
}

func TestSCRAMRefusals(t *testing.T) {
	for _, tc := range []struct{ name, serverFirst, want string }{
		{"nonce not extended", "r=other,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"},
		{"nonce equal", "r=" + rfcNonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"},
		{"too few rounds", "r=" + rfcNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1", "iteration"},
		{"too many rounds", "r=" + rfcNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=999999999", "iteration"},
		{"bad salt", "r=" + rfcNonce + "x,s=!!,i=4096", "salt"},
		{"extension", "m=ext,r=" + rfcNonce + "x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "extension"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := rfcClient().final([]byte(tc.serverFirst)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
	// A server that answers AuthenticationOk without the final message is
	// caught by injectAuth through done; verify without final is refused.
	if err := rfcClient().verify([]byte(rfcServerFinal)); err == nil {
		t.Fatal("verify before final accepted a signature")
	}
}

func TestChooseSCRAM(t *testing.T) {
	sc, mech, err := chooseSCRAM([]string{"SCRAM-SHA-256"}, nil, true, nil)
	if err != nil || mech != scramSHA256 || sc.gs2 != "y,," {
		t.Fatalf("TLS hop without PLUS offered: %v %s %q", err, mech, sc.gs2)
	}
	sc, mech, _ = chooseSCRAM([]string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}, nil, false, nil)
	if mech != scramSHA256 || sc.gs2 != "n,," {
		t.Fatalf("no certificate: %s %q", mech, sc.gs2)
	}
	if _, _, err := chooseSCRAM([]string{"OAUTHBEARER"}, nil, false, nil); err == nil {
		t.Fatal("no SCRAM mechanism accepted")
	}
}

func TestMD5Password(t *testing.T) {
	// PostgreSQL: "md5" || md5(hex(md5("secret" || "app")) || salt),
	// computed independently with Python's hashlib.
	got := md5Password([]byte("secret"), "app", []byte{1, 2, 3, 4})
	if want := "md5911f527656472583a006e7727877b33e\x00"; string(got) != want {
		t.Fatalf("md5 answer %q, want %q", got, want)
	}
}

// FuzzSCRAMServer feeds arbitrary server-first and server-final messages
// to the SCRAM client: it must return an error or an answer, never panic,
// and never accept a server-final it did not compute.
func FuzzSCRAMServer(f *testing.F) {
	f.Add([]byte(rfcServerFirst), []byte(rfcServerFinal))
	f.Add([]byte("r="+rfcNonce+"x,s=,i=4096"), []byte("e=invalid-proof"))
	f.Add([]byte(""), []byte("v="))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		sc := rfcClient()
		if _, err := sc.final(first); err != nil {
			return
		}
		if err := sc.verify(final); err == nil && string(first) == rfcServerFirst && string(final) != rfcServerFinal && !strings.HasPrefix(string(final), rfcServerFinal+",") {
			t.Fatalf("accepted server-final %q", final)
		}
	})
}

// TestSaltedPassword: the hand-written Hi() equals the standard library's
// PBKDF2 for several round counts.
func TestSaltedPassword(t *testing.T) {
	for _, rounds := range []int{1, 2, 4096} {
		want, err := pbkdf2.Key(sha256.New, "pencil", []byte("salt"), rounds, sha256.Size)
		if err != nil {
			t.Fatal(err)
		}
		if got := saltedPassword([]byte("pencil"), []byte("salt"), rounds); !bytes.Equal(got, want) {
			t.Fatalf("rounds %d: %x, want %x", rounds, got, want)
		}
	}
}
