package contacts

import (
	"hash/maphash"
	"runtime"
	"sync"

	"github.com/phonebook/phonebook"
)

// normalizer memoises phonebook.NormalizeMSISDN, which costs about 15 µs a
// number (libphonenumber's parsing and validation), and spreads a large
// book over the CPUs. Re-uploads of a book and numbers that many users share
// hit the cache. It is bounded: a full shard is emptied and refilled.
type normalizer struct {
	seed     maphash.Seed
	perShard int
	shards   [32]normShard
}

type normShard struct {
	mu sync.Mutex
	m  map[string]normResult
}

type normResult struct {
	n   phonebook.MSISDN
	err error
}

func newNormalizer(capacity int) *normalizer {
	z := &normalizer{seed: maphash.MakeSeed(), perShard: max(1, capacity/32)}
	for i := range z.shards {
		z.shards[i].m = make(map[string]normResult)
	}
	return z
}

func (z *normalizer) one(raw, region string) (phonebook.MSISDN, error) {
	key := region + "\x00" + raw
	sh := &z.shards[maphash.String(z.seed, key)%uint64(len(z.shards))]
	sh.mu.Lock()
	r, ok := sh.m[key]
	sh.mu.Unlock()
	if ok {
		return r.n, r.err
	}
	n, err := phonebook.NormalizeMSISDN(raw, region)
	sh.mu.Lock()
	if len(sh.m) >= z.perShard {
		clear(sh.m)
	}
	sh.m[key] = normResult{n, err}
	sh.mu.Unlock()
	return n, err
}

// many normalises raws in region, in parallel when there are many.
func (z *normalizer) many(raws []string, region string) []normResult {
	out := make([]normResult, len(raws))
	workers := min(runtime.GOMAXPROCS(0), len(raws)/128+1)
	per := (len(raws) + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, len(raws))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				out[i].n, out[i].err = z.one(raws[i], region)
			}
		}()
	}
	wg.Wait()
	return out
}
