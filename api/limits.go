package api

import (
	"math"
	"sync"
	"time"
)

// tokenBucket is a classic token bucket: it holds up to burst tokens,
// refills at rate tokens per second, and each request takes one.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

// take spends one token if there is one; otherwise it reports how long
// until there will be.
func (b *tokenBucket) take(now time.Time) (ok bool, wait time.Duration) {
	if b.last.IsZero() {
		b.tokens, b.last = b.burst, now
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(b.burst, b.tokens+el*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// full reports whether the bucket has refilled completely by now.
func (b *tokenBucket) full(now time.Time) bool {
	return b.last.IsZero() || b.tokens+now.Sub(b.last).Seconds()*b.rate >= b.burst
}

// clientLimits holds each client's rate bucket and in-flight count. A
// client is an API key (by index, never the key itself) or, when the API is
// open, a remote IP.
type clientLimits struct {
	rate    float64
	burst   int
	maxConc int
	mu      sync.Mutex
	clients map[string]*clientState
	sweepAt int // sweep idle clients when the map reaches this size
	nowFunc func() time.Time
}

type clientState struct {
	bucket   tokenBucket
	inflight int
}

func newClientLimits(rate float64, burst, maxConc int) *clientLimits {
	return &clientLimits{rate: rate, burst: burst, maxConc: maxConc, clients: map[string]*clientState{},
		sweepAt: 4096, nowFunc: time.Now}
}

func (l *clientLimits) state(client string) *clientState {
	c := l.clients[client]
	if c == nil {
		if len(l.clients) >= l.sweepAt {
			l.sweep()
		}
		c = &clientState{bucket: tokenBucket{rate: l.rate, burst: float64(l.burst)}}
		l.clients[client] = c
	}
	return c
}

// sweep forgets clients with nothing in flight and a full bucket: they are
// indistinguishable from new ones. Called with mu held.
func (l *clientLimits) sweep() {
	now := l.nowFunc()
	for k, c := range l.clients {
		if c.inflight == 0 && (l.rate == 0 || c.bucket.full(now)) {
			delete(l.clients, k)
		}
	}
	l.sweepAt = max(4096, 2*len(l.clients))
}

// allow spends one request of client's rate budget.
func (l *clientLimits) allow(client string) (bool, time.Duration) {
	if l.rate == 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state(client).bucket.take(l.nowFunc())
}

// acquire takes one of client's concurrency slots; release gives it back.
func (l *clientLimits) acquire(client string) bool {
	if l.maxConc == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.state(client)
	if c.inflight >= l.maxConc {
		return false
	}
	c.inflight++
	return true
}

func (l *clientLimits) release(client string) {
	if l.maxConc == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.clients[client]; c != nil && c.inflight > 0 {
		c.inflight--
	}
}
