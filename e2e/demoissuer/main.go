// Command demoissuer runs a local OIDC issuer with a GitHub
// Actions-shaped token endpoint, standing in for a CI provider's issuer
// (which is outside the machine) in the README's demo. It prints the
// issuer URL, its CA file and the request token as shell assignments on
// the first line, then serves until it is killed.
//
//	demoissuer -dir DIR -claims '{"repository":"acme/api","ref":"refs/heads/main"}'
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicehq/sluice/internal/testenv"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the issuer's CA file")
	claims := flag.String("claims", "{}", "JSON object of the claims its tokens carry")
	flag.Parse()
	var c map[string]any
	if err := json.Unmarshal([]byte(*claims), &c); err != nil {
		fmt.Fprintf(os.Stderr, "demoissuer: -claims: %v\n", err)
		os.Exit(2)
	}
	is, err := testenv.StartIssuer(*dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demoissuer: %v\n", err)
		os.Exit(1)
	}
	defer is.Close()
	is.SetClaims(c)
	fmt.Printf("ISSUER_URL=%s ISSUER_CA=%s TOKEN_URL='%s' REQUEST_TOKEN=%s\n", is.URL, is.CAFile, is.TokenURL(), is.RequestToken)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
