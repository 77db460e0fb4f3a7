// Package outboxbench measures the SMS outbox end to end: messages in a
// store (MariaDB or SQLite) are claimed, submitted over SMPP to an SMSC (an
// in-process simulator or one at an address), and count once their result
// is committed, or their delivery receipt applied. It reports SMS/s and the
// CPU time this process and the database server spent per message. It
// backs `phonebook bench outbox`, scripts/bench-outbox and the smsc
// package's outbox benchmarks.
package outboxbench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/store"
)

// Options configures Run. Zero values mean the defaults in brackets.
type Options struct {
	// Driver is "sqlite" (a file in a temporary directory) or "mysql" [sqlite].
	Driver string
	// DSN is the MySQL/MariaDB server to use; Run creates a database of its
	// own in it and drops it afterwards [root@tcp(127.0.0.1:3306)/].
	DSN string
	// SMSC is the host:port of an SMSC to bind to; "" starts an in-process
	// simulator (its CPU then counts as the server's).
	SMSC string
	// RespDelay is the in-process simulator's submit_sm_resp delay [0].
	RespDelay time.Duration
	Window    int // outstanding submits per bind [100]
	Binds     int // sessions to the SMSC [1]
	Messages  int // measured messages [20000]
	// Producers, when set, enqueue the messages one per transaction while
	// the outbox drains (as verification codes and fallbacks arrive);
	// otherwise the outbox is filled before the clock starts.
	Producers int
	// Receipts asks for a delivery receipt per message and counts a message
	// once its receipt is applied (the SMSC must send receipts).
	Receipts bool
	Warmup   int // messages sent, untimed, before the measured ones [2000]
	// Outbox tunes the outbox; zero values are its defaults.
	Outbox smsc.OutboxConfig
}

// Result is what Run measured.
type Result struct {
	Options   Options
	Messages  int
	Elapsed   time.Duration
	PerSecond float64
	// ServerCPU is this process's user+system CPU time per message; with
	// an in-process simulator it includes the simulator's.
	ServerCPU time.Duration
	// DBCPU is the database server's CPU time per message (mariadbd or
	// mysqld on this machine, read from /proc); 0 when not measured.
	DBCPU time.Duration
	// WindowFill is the mean share of the window in use, sampled every
	// millisecond while draining: below 1 the outbox did not keep the
	// SMSC busy (claims, waits between batches).
	WindowFill float64
}

func (r Result) String() string {
	mode := "pre-filled"
	if r.Options.Producers > 0 {
		mode = fmt.Sprintf("fed by %d producers", r.Options.Producers)
	}
	if r.Options.Receipts {
		mode += ", receipt per message applied"
	}
	db := ""
	if r.DBCPU > 0 {
		db = fmt.Sprintf(", database %.1f µs/SMS", float64(r.DBCPU)/1e3)
	}
	sim := ""
	if r.Options.SMSC == "" {
		sim = " (with the in-process simulator)"
	}
	return fmt.Sprintf("%s, %s, window %d × %d bind(s): %d SMS in %s: %.0f SMS/s; window %.0f%% full; CPU: server %.1f µs/SMS%s%s",
		r.Options.Driver, mode, r.Options.Window, r.Options.Binds, r.Messages, r.Elapsed.Round(time.Millisecond),
		r.PerSecond, 100*r.WindowFill, float64(r.ServerCPU)/1e3, sim, db)
}

func (o *Options) defaults() {
	if o.Driver == "" {
		o.Driver = string(store.SQLite)
	}
	if o.DSN == "" {
		o.DSN = "root@tcp(127.0.0.1:3306)/"
	}
	if o.Window <= 0 {
		o.Window = 100
	}
	if o.Binds <= 0 {
		o.Binds = 1
	}
	if o.Messages <= 0 {
		o.Messages = 20000
	}
	if o.Warmup <= 0 {
		o.Warmup = 2000
	}
}

// Run measures one drain.
func Run(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	db, cleanup, err := openStore(ctx, o.Driver, o.DSN)
	if err != nil {
		return Result{}, err
	}
	defer cleanup()

	addr := o.SMSC
	if addr == "" {
		sim := smscsim.New(smscsim.Config{RespDelay: o.RespDelay})
		if err := sim.Start("127.0.0.1:0"); err != nil {
			return Result{}, err
		}
		defer sim.Close()
		addr = sim.Addr()
	}

	var ob *smsc.Outbox
	lc := smsc.LinkConfig{Name: "bench", Addr: addr, SystemID: "phonebook", Password: "bench", SourceAddr: "10690",
		Window: o.Window, Binds: o.Binds, ReconnectMin: 50 * time.Millisecond}
	router, err := smsc.NewRouter([]smsc.LinkConfig{lc}, func(ctx context.Context, d smsc.Deliver) error {
		return ob.HandleDeliver(ctx, d)
	}, nil, nil)
	if err != nil {
		return Result{}, err
	}
	cfg := o.Outbox
	if cfg.NodeID == "" {
		cfg.NodeID = "bench"
	}
	if cfg.Workers == 0 {
		cfg.Workers = router.Capacity()
	}
	cfg.NoReceipts = !o.Receipts
	if ob, err = smsc.NewOutbox(db, router, cfg, nil, nil); err != nil {
		return Result{}, err
	}
	want := smsc.StateSubmitted
	if o.Receipts {
		want = smsc.StateDelivered
	}
	var done atomic.Int64
	reached := make(chan struct{})
	var target atomic.Int64
	var once sync.Once
	ob.OnStateChange(func(_ context.Context, e smsc.OutboxEvent) {
		if e.State == want && done.Add(1) == target.Load() {
			once.Do(func() { close(reached) })
		}
	})
	rctx, stopRouter := context.WithCancel(ctx)
	router.Start(rctx)
	defer func() { stopRouter(); router.Close() }()
	if err := waitBound(ctx, router, o.Binds); err != nil {
		return Result{}, err
	}

	runOutbox := func() (stop func()) {
		octx, cancel := context.WithCancel(ctx)
		exited := make(chan struct{})
		go func() { ob.Run(octx); close(exited) }()
		return func() { cancel(); <-exited }
	}
	wait := func(n int, what string) error {
		target.Store(int64(n))
		if done.Load() >= int64(n) {
			return nil
		}
		select {
		case <-reached:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("outboxbench: %s: %d of %d messages %s: %w", what, done.Load(), n, want, ctx.Err())
		}
	}

	// Warm up connections, caches and the database's buffer pool.
	if err := fill(ctx, db, 0, o.Warmup); err != nil {
		return Result{}, err
	}
	stop := runOutbox()
	err = wait(o.Warmup, "warm-up")
	stop()
	if err != nil {
		return Result{}, err
	}
	reached = make(chan struct{})
	once = sync.Once{}

	total := o.Warmup + o.Messages
	if o.Producers == 0 {
		if err := fill(ctx, db, o.Warmup, o.Messages); err != nil {
			return Result{}, err
		}
	}
	dbProc := ""
	if o.Driver == string(store.MySQL) {
		dbProc = dbServerProcess(o.DSN)
	}
	cpu0, dbcpu0 := selfCPU(), procCPU(dbProc)
	t0 := time.Now()
	stop = runOutbox()
	defer stop()
	sampled := make(chan float64)
	stopSampling := make(chan struct{})
	go func() {
		var sum float64
		var n int
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				sampled <- sum / float64(max(n, 1))
				return
			case <-t.C:
				st := router.States()[0]
				sum += float64(st.InFlight) / float64(st.Window*st.Binds)
				n++
			}
		}
	}()
	var feedErr atomic.Pointer[error]
	if o.Producers > 0 {
		var next atomic.Int64
		for range o.Producers {
			go func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(o.Messages) || ctx.Err() != nil {
						return
					}
					if _, err := ob.Enqueue(ctx, message(o.Warmup+int(i))); err != nil {
						feedErr.CompareAndSwap(nil, &err)
						return
					}
				}
			}()
		}
	}
	if err := wait(total, "drain"); err != nil {
		if p := feedErr.Load(); p != nil {
			err = fmt.Errorf("%w (producer: %v)", err, *p)
		}
		return Result{}, err
	}
	elapsed := time.Since(t0)
	cpu1, dbcpu1 := selfCPU(), procCPU(dbProc)
	close(stopSampling)
	fill := <-sampled
	stop()

	// Exactly once: one accepted part per message, every message done.
	var parts, finished int
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM sms_outbox_parts`).Scan(&parts); err != nil {
		return Result{}, err
	}
	if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM sms_outbox WHERE state = ?`, want).Scan(&finished); err != nil {
		return Result{}, err
	}
	if parts != total || finished != total {
		return Result{}, fmt.Errorf("outboxbench: %d messages, %d parts recorded, %d %s", total, parts, finished, want)
	}
	n := o.Messages
	r := Result{Options: o, Messages: n, Elapsed: elapsed, PerSecond: float64(n) / elapsed.Seconds(),
		ServerCPU: (cpu1 - cpu0) / time.Duration(n), WindowFill: fill}
	if dbProc != "" {
		r.DBCPU = (dbcpu1 - dbcpu0) / time.Duration(n)
	}
	return r, nil
}

// message is the i-th benchmark SMS: a one-part verification code.
func message(i int) smsc.SMS {
	return smsc.SMS{To: phonebook.MSISDN(fmt.Sprintf("+86138%08d", i%100000000)), Text: fmt.Sprintf("Your Phonebook code is %06d", i%1000000),
		Kind: "verify", Validity: time.Hour}
}

// fill enqueues n messages from the first-th on, 1,000 per transaction.
func fill(ctx context.Context, db *store.DB, first, n int) error {
	batch := make([]store.SMS, 0, 1000)
	exp := time.Now().Add(time.Hour)
	for i := first; i < first+n; i++ {
		m := message(i)
		batch = append(batch, store.SMS{Dest: string(m.To), Text: m.Text, Kind: m.Kind, ExpiresAt: exp})
		if len(batch) == cap(batch) || i == first+n-1 {
			if _, err := db.EnqueueSMS(ctx, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

func waitBound(ctx context.Context, r *smsc.Router, binds int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		st := r.States()[0]
		if st.Bound && st.Sessions >= binds {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("outboxbench: %d of %d binds to %s after 10s: %s", st.Sessions, binds, st.Addr, st.LastError)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// openStore opens a fresh, migrated store; cleanup closes it and removes it.
func openStore(ctx context.Context, driver, dsn string) (*store.DB, func(), error) {
	switch driver {
	case string(store.SQLite):
		dir, err := os.MkdirTemp("", "outboxbench-")
		if err != nil {
			return nil, nil, err
		}
		db, err := store.Open(ctx, store.Options{Driver: driver, DSN: filepath.Join(dir, "phonebook.db")})
		if err == nil {
			_, err = db.Migrate(ctx)
		}
		cleanup := func() {
			if db != nil {
				db.Close()
			}
			os.RemoveAll(dir)
		}
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return db, cleanup, nil
	case string(store.MySQL):
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, nil, fmt.Errorf("outboxbench: dsn: %w", err)
		}
		b := make([]byte, 6)
		rand.Read(b)
		name := "pbbench_" + hex.EncodeToString(b)
		admin, err := sql.Open("mysql", dsn)
		if err != nil {
			return nil, nil, err
		}
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
			admin.Close()
			return nil, nil, fmt.Errorf("outboxbench: create database: %w", err)
		}
		cfg.DBName = name
		db, err := store.Open(ctx, store.Options{Driver: driver, DSN: cfg.FormatDSN()})
		if err == nil {
			_, err = db.Migrate(ctx)
		}
		cleanup := func() {
			if db != nil {
				db.Close()
			}
			admin.Exec("DROP DATABASE IF EXISTS " + name)
			admin.Close()
		}
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		return db, cleanup, nil
	default:
		return nil, nil, fmt.Errorf("outboxbench: store %q: want sqlite or mysql", driver)
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dbServerProcess returns the /proc directory of the process listening on
// the DSN's TCP port (several database servers may run here), else of the
// first mariadbd or mysqld; "" when none is found.
func dbServerProcess(dsn string) string {
	if cfg, err := mysql.ParseDSN(dsn); err == nil && cfg.Net == "tcp" {
		if _, port, err := net.SplitHostPort(cfg.Addr); err == nil {
			if d := listener(port); d != "" {
				return d
			}
		}
	}
	return findProcess("mariadbd", "mysqld")
}

// listener finds the process with a TCP socket listening on port.
func listener(port string) string {
	p, err := strconv.Atoi(port)
	if err != nil {
		return ""
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... inode (field 9)
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			if i := strings.LastIndexByte(fs[1], ':'); i >= 0 && fs[1][i+1:] == fmt.Sprintf("%04X", p) {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		fds, _ := filepath.Glob(d + "/fd/*")
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && inodes[l] {
				return d
			}
		}
	}
	return ""
}

// findProcess returns the /proc directory of the first process whose
// command name is one of names, or "".
func findProcess(names ...string) string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil {
			continue
		}
		for _, n := range names {
			if strings.TrimSpace(string(b)) == n {
				return d
			}
		}
	}
	return ""
}

// procCPU reads a process's user+system time from /proc/PID/stat (in
// clock ticks of 10 ms, Linux's USER_HZ).
func procCPU(dir string) time.Duration {
	if dir == "" {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis, where field 3 (state) starts.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0
	}
	return time.Duration(u+k) * 10 * time.Millisecond
}
