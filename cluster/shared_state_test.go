package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Rate limits hold across the cluster: two nodes' stores hitting one
// counter at once count every hit exactly once (each hit sees a distinct
// count), because the counter is one atomic upsert in the shared database.
func TestRateLimitCountersAreClusterWide(t *testing.T) {
	c := newCluster(t)
	nodes := [2]interface {
		Hit(ctx context.Context, name string, window time.Duration) (int64, time.Time, error)
	}{c.open(), c.open()}
	const perNode = 100
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for _, db := range nodes {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perNode / 4 {
					n, _, err := db.Hit(context.Background(), "verify:+8613800138000:day", 24*time.Hour)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if seen[n] {
						t.Errorf("count %d returned twice", n)
					}
					seen[n] = true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(seen) != 2*perNode {
		t.Fatalf("%d distinct counts, want %d", len(seen), 2*perNode)
	}
	for i := int64(1); i <= 2*perNode; i++ {
		if !seen[i] {
			t.Fatalf("count %d never returned", i)
		}
	}
}
