package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/store/storetest"
)

// BenchmarkLoginMySQL measures full HTTP logins (JSON decode, user lookup,
// device-key check, session insert and login-count update in one
// transaction) against MariaDB over loopback, from 64 concurrent clients.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' go test -run '^$' -bench BenchmarkLoginMySQL -benchtime 20000x ./api
func BenchmarkLoginMySQL(b *testing.B) {
	db := storetest.MySQL(b)
	acc := accounts.New(db, accounts.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, nil, nil)
	const users = 500
	type user struct{ number, key string }
	us := make([]user, users)
	for i := range us {
		n := phonebook.MSISDN(fmt.Sprintf("+86138%08d", i))
		c, err := acc.Prove(context.Background(), n, phonebook.Identity{DeviceID: fmt.Sprintf("imei%d", i), SIMID: "sim"}, accounts.MethodHeader)
		if err != nil {
			b.Fatal(err)
		}
		us[i] = user{string(n), c.DeviceKey}
	}
	e := newEnv(&testing.T{}, db, accounts.Config{})
	defer e.srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	var next atomic.Int64
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.SetParallelism(32) // 2 cores × 32 = 64 clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			i := next.Add(1) % users
			body := fmt.Sprintf(`{"number":%q,"device_id":"imei%d","sim_id":"sim","device_key":%q}`, us[i].number, i, us[i].key)
			t0 := time.Now()
			res, err := client.Post(e.srv.URL+"/v1/login", "application/json", bytes.NewBufferString(body))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("login: %d", res.StatusCode)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "logins/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}
