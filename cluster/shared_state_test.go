package cluster_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// Rate limits hold across the cluster: two nodes' stores hitting one
// counter at once count every hit exactly once, and no limit can be
// overshot: the hit that makes the count k always sees at least k, so for
// every L at most L hits see a count of L or less.
func TestRateLimitCountersAreClusterWide(t *testing.T) {
	c := newCluster(t)
	nodes := [2]interface {
		Hit(ctx context.Context, name string, window time.Duration) (int64, time.Time, error)
		Count(ctx context.Context, name string, window time.Duration) (int64, time.Time, error)
	}{c.open(), c.open()}
	const perNode = 100
	const name = "verify:+8613800138000:day"
	var mu sync.Mutex
	var seen []int64
	var wg sync.WaitGroup
	for _, db := range nodes {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perNode / 4 {
					n, _, err := db.Hit(context.Background(), name, 24*time.Hour)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					seen = append(seen, n)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(seen) != 2*perNode {
		t.Fatalf("%d hits answered, want %d", len(seen), 2*perNode)
	}
	slices.Sort(seen)
	for i, n := range seen {
		if n < int64(i+1) {
			t.Fatalf("%d hits saw a count of %d or less: a limit of %d would be overshot", i+1, n, n)
		}
	}
	for _, db := range nodes {
		if total, _, err := db.Count(context.Background(), name, 24*time.Hour); err != nil || total != 2*perNode {
			t.Fatalf("count = %d, %v; want %d", total, err, 2*perNode)
		}
	}
}
