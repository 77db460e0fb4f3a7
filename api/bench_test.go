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
	url, login := loginSetup(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128, MaxConnsPerHost: 128}}
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.SetParallelism(32) // 2 cores × 32 = 64 clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			d, err := login(client, url)
			if err != nil {
				b.Error(err)
				return
			}
			local = append(local, d)
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	report(b, lat, time.Since(start))
}

// BenchmarkLoginMySQLAt2000 offers logins at a fixed 2,000 per second (open
// loop: a slow answer does not slow the offered rate) and reports the
// latency the floor is stated for.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' go test -run '^$' -bench BenchmarkLoginMySQLAt2000 -benchtime 20000x ./api
func BenchmarkLoginMySQLAt2000(b *testing.B) {
	url, login := loginSetup(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}}
	const rate = 2000
	var mu sync.Mutex
	var wg sync.WaitGroup
	lat := make([]time.Duration, 0, b.N)
	sem := make(chan struct{}, 512)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d, err := login(client, url)
			if err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	report(b, lat, time.Since(start))
}

func report(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "logins/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

// loginSetup registers 500 users on a fresh MariaDB database and returns the
// server URL and a function that logs one of them in.
func loginSetup(b *testing.B) (string, func(*http.Client, string) (time.Duration, error)) {
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
	b.Cleanup(e.srv.Close)
	var next atomic.Int64
	return e.srv.URL, func(client *http.Client, url string) (time.Duration, error) {
		i := next.Add(1) % users
		body := fmt.Sprintf(`{"number":%q,"device_id":"imei%d","sim_id":"sim","device_key":%q}`, us[i].number, i, us[i].key)
		t0 := time.Now()
		res, err := client.Post(url+"/v1/login", "application/json", bytes.NewBufferString(body))
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			return 0, fmt.Errorf("login: %d", res.StatusCode)
		}
		return time.Since(t0), nil
	}
}
