package cluster

// This file holds the cluster Router's Config: its defaults and validation.

import (
	"regexp"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phonebook/phonebook"
)

// Config configures a cluster Router. Zero values mean the defaults in
// parentheses.
type Config struct {
	URL  string // NATS server URL(s), comma-separated ("nats://127.0.0.1:4222")
	Node string // this node's id, unique in the cluster: letters, digits, '-' and '_' (required)

	// Namespace separates clusters that share one NATS system: with
	// "eu1" the subjects start with "pb.eu1." and the buckets are
	// pb_eu1_sessions and pb_eu1_nodes. Node ids need only be unique
	// within a namespace. Letters, digits, '-' and '_'.
	Namespace      string
	SubjectPrefix  string // first tokens of every subject ("pb", or "pb.<Namespace>")
	SessionsBucket string // KV bucket of the session registry ("pb_sessions", or "pb_<Namespace>_sessions")
	NodesBucket    string // KV bucket of node heartbeats ("pb_nodes", or "pb_<Namespace>_nodes")
	Replicas       int    // KV replicas in a NATS cluster (1)
	MemoryStorage  bool   // keep the buckets in memory instead of on disk

	HeartbeatInterval time.Duration // how often this node heartbeats (1s)
	DeadAfter         time.Duration // a node silent this long is gone (5×HeartbeatInterval)
	PurgeAfter        time.Duration // registry entries of a node gone this long are deleted (1m)
	EntryTTL          time.Duration // registry records expire after this; nodes rewrite theirs every third of it (1h)
	DeliverTimeout    time.Duration // a remote Offer waits this long for the ack; keep above the relay's AckTimeout (7s)
	ReconnectWait     time.Duration // between NATS reconnect attempts (250ms)
	// ConnectTimeout is how long New keeps trying (with backoff) to reach
	// NATS and open the buckets before it gives up (30s).
	ConnectTimeout time.Duration

	// NATSOptions are added to the connection's options (credentials, TLS,
	// a name). They are applied after the router's own.
	NATSOptions []nats.Option
}

var nodeIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// DefaultConfig returns the values a zero Config stands for (but Node,
// which has no default).
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

// Validate reports what New refuses.
func (c Config) Validate() error {
	if !nodeIDRe.MatchString(c.Node) {
		return phonebook.Errorf(phonebook.EInvalid, "cluster node id %q must be 1 to 64 letters, digits, '-' or '_'", c.Node)
	}
	if c.Namespace != "" && !nodeIDRe.MatchString(c.Namespace) {
		return phonebook.Errorf(phonebook.EInvalid, "cluster namespace %q must be 1 to 64 letters, digits, '-' or '_' (it goes into NATS subjects and bucket names)", c.Namespace)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return phonebook.Errorf(phonebook.EInvalid, "cluster replicas %d is not between 1 and 5 (JetStream's limit); use 3 on a 3-server NATS cluster", c.Replicas)
	}
	return nil
}

func (c *Config) setDefaults() error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.fill()
	return nil
}

func (c *Config) fill() {
	if c.URL == "" {
		c.URL = nats.DefaultURL
	}
	subj, bucket := "pb", "pb_"
	if c.Namespace != "" {
		subj, bucket = "pb."+c.Namespace, "pb_"+c.Namespace+"_"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = subj
	}
	if c.SessionsBucket == "" {
		c.SessionsBucket = bucket + "sessions"
	}
	if c.NodesBucket == "" {
		c.NodesBucket = bucket + "nodes"
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.HeartbeatInterval, time.Second)
	def(&c.DeadAfter, 5*c.HeartbeatInterval)
	def(&c.PurgeAfter, time.Minute)
	def(&c.EntryTTL, time.Hour)
	def(&c.DeliverTimeout, 7*time.Second)
	def(&c.ReconnectWait, 250*time.Millisecond)
	def(&c.ConnectTimeout, 30*time.Second)
}
