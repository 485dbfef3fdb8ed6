package record

// Internals for the external tests (package record_test), which may use
// internal/testenv: that imports this package, so internal tests cannot.

// PoolPattern is the glob of pooled files under a recordings directory.
const PoolPattern = "*/" + poolPrefix + "*" + poolSuffix

// PoolPrefix and PoolSuffix make a pooled file's name.
const PoolPrefix, PoolSuffix = poolPrefix, poolSuffix

// PoolLen returns how many files p holds.
func PoolLen(p *Pool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.files)
}

// PoolMoveDay makes p's first file look like one of day (a directory),
// and returns its path.
func PoolMoveDay(p *Pool, day string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.files[0].day = day
	return p.files[0].path
}
