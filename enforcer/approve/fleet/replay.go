package fleet

import "time"

// replayCache remembers which hold each verified token decided, until the
// token expires, so that a token seen on the bus cannot be used again for
// another hold. It holds at most max tokens; when full of unexpired tokens
// it refuses new ones (fail closed) rather than forget one.
type replayCache struct {
	max  int
	used map[string]replayEntry // token hash -> use
}

type replayEntry struct {
	hold string
	exp  time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, used: map[string]replayEntry{}}
}

// use records that the token with hash h decided hold, and reports
// whether that is allowed: false with the earlier hold when the token was
// used for another one, or with "" when the cache is full. The caller
// serialises calls.
func (c *replayCache) use(h, hold string, exp, now time.Time) (string, bool) {
	if e, ok := c.used[h]; ok && now.Before(e.exp) {
		return e.hold, e.hold == hold
	}
	if len(c.used) >= c.max {
		for k, e := range c.used {
			if !now.Before(e.exp) {
				delete(c.used, k)
			}
		}
		if len(c.used) >= c.max {
			return "", false
		}
	}
	c.used[h] = replayEntry{hold: hold, exp: exp}
	return "", true
}
