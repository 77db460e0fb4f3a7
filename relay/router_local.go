package relay

import (
	"hash/maphash"
	"sort"
	"sync"

	"github.com/phonebook/phonebook"
)

// LocalRouter is the single-node Router: the connection table lives in this
// process, sharded so that logins and lookups on different numbers do not
// contend.
type LocalRouter struct {
	seed   maphash.Seed
	shards [64]routerShard
}

type routerShard struct {
	mu sync.RWMutex
	m  map[phonebook.MSISDN][]Endpoint // newest last
}

var _ Router = (*LocalRouter)(nil)

// NewLocalRouter returns an empty in-process router.
func NewLocalRouter() *LocalRouter {
	r := &LocalRouter{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m = make(map[phonebook.MSISDN][]Endpoint)
	}
	return r
}

func (r *LocalRouter) shard(n phonebook.MSISDN) *routerShard {
	return &r.shards[maphash.String(r.seed, string(n))%uint64(len(r.shards))]
}

// Attach implements Router.
func (r *LocalRouter) Attach(ep Endpoint) Endpoint {
	info := ep.Info()
	sh := r.shard(info.Number)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	eps := sh.m[info.Number]
	var old Endpoint
	for i, e := range eps {
		if e.Info().DeviceID == info.DeviceID {
			old = e
			eps = append(eps[:i:i], eps[i+1:]...)
			break
		}
	}
	sh.m[info.Number] = append(eps, ep)
	return old
}

// Detach implements Router.
func (r *LocalRouter) Detach(ep Endpoint) {
	n := ep.Info().Number
	sh := r.shard(n)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	eps := sh.m[n]
	for i, e := range eps {
		if e == ep {
			eps = append(eps[:i:i], eps[i+1:]...)
			break
		}
	}
	if len(eps) == 0 {
		delete(sh.m, n)
	} else {
		sh.m[n] = eps
	}
}

// Locate implements Router.
func (r *LocalRouter) Locate(n phonebook.MSISDN) Endpoint {
	sh := r.shard(n)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if eps := sh.m[n]; len(eps) > 0 {
		return eps[len(eps)-1]
	}
	return nil
}

// Connections implements Router, ordered by number then device.
func (r *LocalRouter) Connections() []ConnInfo {
	var out []ConnInfo
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.RLock()
		for _, eps := range sh.m {
			for _, e := range eps {
				out = append(out, e.Info())
			}
		}
		sh.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Number != out[j].Number {
			return out[i].Number < out[j].Number
		}
		return out[i].DeviceID < out[j].DeviceID
	})
	return out
}
