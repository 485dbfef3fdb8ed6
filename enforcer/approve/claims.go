package approve

import "sort"

// OIDCApprover is the approver a verified OIDC ID token names: KindOIDC,
// its subject, its email unless the token marks it unverified, and its
// groups. The caller has verified the token (signature, issuer, audience,
// expiry); both the remote API and fleet decisions use this mapping, so an
// approver is the same principal whichever way they decide.
func OIDCApprover(subject string, claims map[string]any) Approver {
	who := Approver{Kind: KindOIDC, Subject: subject}
	if e, ok := claims["email"].(string); ok {
		if v, ok := claims["email_verified"].(bool); !ok || v {
			who.Email = e
		}
	}
	if gs, ok := claims["groups"].([]any); ok {
		for _, g := range gs {
			if s, ok := g.(string); ok {
				who.Groups = append(who.Groups, s)
			}
		}
	}
	return who
}

// MissingClaim reports the first (by claim name) of the required claims
// that claims do not carry: a claim holds the wanted value when it is that
// string or a list containing it. ok is true when every one is there.
func MissingClaim(claims map[string]any, required map[string]string) (claim, want string, ok bool) {
	keys := make([]string, 0, len(required))
	for k := range required {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !claimHas(claims[k], required[k]) {
			return k, required[k], false
		}
	}
	return "", "", true
}

func claimHas(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s == want {
				return true
			}
		}
	}
	return false
}
