// Command bench-amqp091 runs the benchmark's workloads (python -m benchmarks) on amqp091-go,
// the Go client goamqp runs on, as the reference for the Python clients.
//
// It does what benchmarks/workloads_raw.py does with aio-pika: the same JSON order, persistent,
// content type application/json, not mandatory, to the same topic exchange and routing key,
// publisher confirms awaited one by one (publish-sequential) or in windows (publish-pipelined),
// a consumer with the same prefetch that decodes each order and acks it alone (consume). The
// harness passes every constant (benchmarks/common.py) on the command line, and reads one JSON
// sample from stdout: the fields of benchmarks.common.Sample.
//
// CPU is this process's user+system time (getrusage, all threads) over the timed section only,
// as time.process_time() is for the Python clients.
//
// Built by the harness (benchmarks/workloads_go.py) in GOPATH mode against Debian's source
// package (golang-github-rabbitmq-amqp091-go-dev): GO111MODULE=off GOPATH=/usr/share/gocode.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type options struct {
	workload   string
	url        string
	exchange   string
	routingKey string
	queue      string
	expiresMs  int
	messages   int
	warmup     int
	window     int
	prefetch   int
	rate       float64
	note       string
	timeout    time.Duration
	envelope   string
}

// order is benchmarks.common.Order; encoding/json writes it as pydantic's model_dump_json does.
type order struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
	Note   string `json:"note"`
	SentNs int64  `json:"sent_ns"`
}

// sample is benchmarks.common.Sample as JSON.
type sample struct {
	Messages    int                `json:"messages"`
	Received    int                `json:"received"`
	Wall        float64            `json:"wall"`
	CPU         float64            `json:"cpu"`
	Duplicates  int                `json:"duplicates"`
	LatenciesMs []float64          `json:"latencies_ms"`
	Extra       map[string]float64 `json:"extra"`
}

// stopwatch is benchmarks.common.Stopwatch: wall and process CPU time.
type stopwatch struct {
	wall0     time.Time
	cpu0      float64
	wall, cpu float64
	running   bool
}

func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func (s *stopwatch) start() {
	s.running = true
	s.wall0 = time.Now()
	s.cpu0 = processCPU()
}

func (s *stopwatch) stop() {
	if !s.running {
		return
	}
	s.running = false
	s.wall = time.Since(s.wall0).Seconds()
	s.cpu = processCPU() - s.cpu0
}

var processStart = time.Now()

// monotonicNs stands for time.monotonic_ns(): only differences within this process matter.
func monotonicNs() int64 { return int64(time.Since(processStart)) }

func (o *options) body(i int, sentNs int64) ([]byte, error) {
	return json.Marshal(order{ID: strconv.Itoa(i), Amount: i, Note: o.note, SentNs: sentNs})
}

// addEnvelope gives msg what amqp-events adds to each event (docs/envelope.md): a fresh
// version 4 UUID as message id, the second as timestamp, goamqp's service header and the
// CloudEvents attributes, so that both clients put the same messages on the wire.
func (o *options) addEnvelope(msg *amqp.Publishing) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	id := h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	now := time.Now().UTC().Truncate(time.Second)
	msg.MessageId = id
	msg.Timestamp = now
	msg.Headers = amqp.Table{
		"service":                     o.envelope,
		"cloudEvents:specversion":     "1.0",
		"cloudEvents:id":              id,
		"cloudEvents:source":          o.envelope,
		"cloudEvents:type":            o.routingKey,
		"cloudEvents:time":            now.Format("2006-01-02T15:04:05Z"),
		"cloudEvents:datacontenttype": "application/json",
		"cloudEvents:correlationid":   id,
	}
}

func (o *options) queueArgs() amqp.Table {
	// pamqp sends this int as a signed 32-bit value; RabbitMQ wants the same type to redeclare.
	return amqp.Table{"x-expires": int32(o.expiresMs)}
}

// publisher is a confirming channel with the exchange declared, as workloads_raw._publisher.
// Confirms come in order on a channel (NotifyPublish), not as DeferredConfirmations: Debian's
// amqp091-go has the race of its issue #182, where a confirm that beats the publish's own
// bookkeeping leaves DeferredConfirmation.Wait() waiting forever.
type publisher struct {
	o        *options
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
}

func newPublisher(o *options, conn *amqp.Connection) (*publisher, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	if err := ch.ExchangeDeclare(o.exchange, "topic", true, false, false, false, nil); err != nil {
		return nil, err
	}
	// Room for every confirm of a run: the client's reader goroutine must never block on it.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, o.warmup+o.messages+o.window))
	return &publisher{o: o, ch: ch, confirms: confirms}, nil
}

// send publishes order i; its confirm comes on p.confirms.
func (p *publisher) send(i int, sentNs int64) error {
	body, err := p.o.body(i, sentNs)
	if err != nil {
		return err
	}
	msg := amqp.Publishing{
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Body:         body,
	}
	if p.o.envelope != "" {
		p.o.addEnvelope(&msg)
	}
	return p.ch.Publish(p.o.exchange, p.o.routingKey, false, false, msg)
}

// await waits for the next n confirms, up to the run's timeout: acked, nacked or none in time.
func (p *publisher) await(n int) (int, error) {
	deadline := time.NewTimer(p.o.timeout)
	defer deadline.Stop()
	for confirmed := 0; confirmed < n; confirmed++ {
		select {
		case c, ok := <-p.confirms:
			if !ok {
				return confirmed, errors.New("channel closed while waiting for confirms")
			}
			if !c.Ack {
				return confirmed, errors.New("publish nacked by the broker")
			}
		case <-deadline.C:
			return confirmed, fmt.Errorf("%d confirms not received within %s", n-confirmed, p.o.timeout)
		}
	}
	return n, nil
}

// window publishes orders first..end-1 and waits for all their confirms (asyncio.gather).
func (p *publisher) window(first, end int) (int, error) {
	for i := first; i < end; i++ {
		if err := p.send(i, 0); err != nil {
			return 0, err
		}
	}
	return p.await(end - first)
}

func publishSequential(o *options, conn *amqp.Connection) (*sample, error) {
	p, err := newPublisher(o, conn)
	if err != nil {
		return nil, err
	}
	for i := 0; i < o.warmup; i++ {
		if _, err := p.window(i, i+1); err != nil {
			return nil, err
		}
	}
	var clock stopwatch
	confirmed := 0
	clock.start()
	for i := o.warmup; i < o.warmup+o.messages; i++ {
		n, err := p.window(i, i+1)
		if err != nil {
			return nil, err
		}
		confirmed += n
	}
	clock.stop()
	return publishSample(o, &clock, confirmed), nil
}

func publishPipelined(o *options, conn *amqp.Connection) (*sample, error) {
	p, err := newPublisher(o, conn)
	if err != nil {
		return nil, err
	}
	if _, err := p.window(0, o.warmup); err != nil {
		return nil, err
	}
	var clock stopwatch
	confirmed := 0
	end := o.warmup + o.messages
	clock.start()
	for first := o.warmup; first < end; first += o.window {
		last := first + o.window
		if last > end {
			last = end
		}
		n, err := p.window(first, last)
		if err != nil {
			return nil, err
		}
		confirmed += n
	}
	clock.stop()
	return publishSample(o, &clock, confirmed), nil
}

func publishSample(o *options, clock *stopwatch, confirmed int) *sample {
	return &sample{
		Messages: o.messages, Received: confirmed, Wall: clock.wall, CPU: clock.cpu,
		Extra: map[string]float64{"warmup": float64(o.warmup)},
	}
}

// tally is benchmarks.common.Tally (and LatencyTally): distinct orders by id, the clock from
// the first to the expected-th.
type tally struct {
	m          sync.Mutex
	expected   int
	count      int
	duplicates int
	seen       []bool
	latencyNs  []int64
	clock      stopwatch
	done       chan struct{}
}

func newTally(expected int, latency bool) *tally {
	t := &tally{expected: expected, seen: make([]bool, expected), done: make(chan struct{})}
	if latency {
		t.latencyNs = make([]int64, expected)
	}
	return t
}

func (t *tally) add(o *order) error {
	i, err := strconv.Atoi(o.ID)
	if err != nil || i < 0 || i >= t.expected {
		return fmt.Errorf("unexpected order id %q", o.ID)
	}
	t.m.Lock()
	defer t.m.Unlock()
	if t.latencyNs != nil {
		t.latencyNs[i] = monotonicNs() - o.SentNs
	}
	if t.seen[i] {
		t.duplicates++
		return nil
	}
	if t.count == 0 {
		t.clock.start()
	}
	t.seen[i] = true
	t.count++
	if t.count == t.expected {
		t.clock.stop()
		close(t.done)
	}
	return nil
}

// wait is Tally.wait: until every order was handled or the timeout passed (the rest are lost).
func (t *tally) wait(timeout time.Duration, failed <-chan error) error {
	select {
	case <-t.done:
		return nil
	case err := <-failed:
		return err
	case <-time.After(timeout):
		t.m.Lock()
		t.clock.stop()
		t.m.Unlock()
		return nil
	}
}

func (t *tally) sample() *sample {
	t.m.Lock()
	defer t.m.Unlock()
	return &sample{
		Messages: t.expected, Received: t.count, Wall: t.clock.wall, CPU: t.clock.cpu,
		Duplicates: t.duplicates,
	}
}

// startConsumer is workloads_raw._consume: prefetch, the queue declared, a callback per
// delivery that decodes the order, acks it (alone), then counts it.
func startConsumer(o *options, conn *amqp.Connection, t *tally) (<-chan error, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(o.prefetch, 0, false); err != nil {
		return nil, err
	}
	if _, err := ch.QueueDeclare(o.queue, true, false, false, false, o.queueArgs()); err != nil {
		return nil, err
	}
	deliveries, err := ch.Consume(o.queue, "", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	failed := make(chan error, 1)
	go func() {
		for d := range deliveries {
			var got order
			if err := json.Unmarshal(d.Body, &got); err != nil {
				failed <- err
				return
			}
			if err := d.Ack(false); err != nil {
				failed <- err
				return
			}
			if err := t.add(&got); err != nil {
				failed <- err
				return
			}
		}
	}()
	return failed, nil
}

func consume(o *options, conn *amqp.Connection) (*sample, error) {
	t := newTally(o.messages, false)
	failed, err := startConsumer(o, conn, t)
	if err != nil {
		return nil, err
	}
	if err := t.wait(o.timeout, failed); err != nil {
		return nil, err
	}
	return t.sample(), nil
}

// latency is common.measure_latency: publish at the rate, each publish's confirm awaited on its
// own (a task per publish in Python), while the consumer records publish-to-handler times.
func latency(o *options, conn *amqp.Connection) (*sample, error) {
	t := newTally(o.messages, true)
	p, err := newPublisher(o, conn)
	if err != nil {
		return nil, err
	}
	failed, err := startConsumer(o, conn, t)
	if err != nil {
		return nil, err
	}
	var clock stopwatch
	clock.start()
	start := time.Now()
	for i := 0; i < o.messages; i++ {
		due := start.Add(time.Duration(float64(i) / o.rate * 1e9))
		if delay := time.Until(due); delay > 0 {
			time.Sleep(delay)
		}
		if err := p.send(i, monotonicNs()); err != nil {
			return nil, err
		}
	}
	if _, err := p.await(o.messages); err != nil {
		return nil, err
	}
	if err := t.wait(o.timeout, failed); err != nil {
		return nil, err
	}
	clock.stop()
	s := t.sample()
	s.Wall, s.CPU = clock.wall, clock.cpu
	t.m.Lock()
	defer t.m.Unlock()
	s.LatenciesMs = []float64{}
	for _, ns := range t.latencyNs[o.warmup:] {
		if ns > 0 {
			s.LatenciesMs = append(s.LatenciesMs, float64(ns)/1e6)
		}
	}
	return s, nil
}

var workloads = map[string]func(*options, *amqp.Connection) (*sample, error){
	"publish-sequential": publishSequential,
	"publish-pipelined":  publishPipelined,
	"consume":            consume,
	"latency":            latency,
}

func parse() *options {
	o := &options{}
	flag.StringVar(&o.workload, "workload", "", "publish-sequential, publish-pipelined, consume or latency")
	flag.StringVar(&o.url, "url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	flag.StringVar(&o.exchange, "exchange", "events.topic.exchange", "topic exchange")
	flag.StringVar(&o.routingKey, "routing-key", "Order.Created", "routing key")
	flag.StringVar(&o.queue, "queue", "", "queue consumed (consume, latency)")
	flag.IntVar(&o.expiresMs, "queue-expires-ms", 432000000, "the queue's x-expires")
	flag.IntVar(&o.messages, "messages", 10000, "measured messages")
	flag.IntVar(&o.warmup, "warmup", 50, "untimed publishes first (latency: not counted)")
	flag.IntVar(&o.window, "window", 1000, "publishes in flight at once (publish-pipelined)")
	flag.IntVar(&o.prefetch, "prefetch", 20, "consumer prefetch")
	flag.Float64Var(&o.rate, "rate", 1000, "latency: messages per second")
	flag.StringVar(&o.note, "note", "", "the orders' note")
	flag.StringVar(&o.envelope, "envelope", "", "send amqp-events' envelope as this service (publish)")
	flag.DurationVar(&o.timeout, "timeout", 130*time.Second, "wait this long for deliveries")
	flag.Parse()
	return o
}

func run(o *options) (*sample, error) {
	workload, ok := workloads[o.workload]
	if !ok {
		return nil, fmt.Errorf("unknown -workload %q", o.workload)
	}
	if o.messages <= 0 || o.window <= 0 || o.prefetch <= 0 || o.rate <= 0 {
		return nil, errors.New("-messages, -window, -prefetch and -rate must be positive")
	}
	conn, err := amqp.Dial(o.url)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return workload(o, conn)
}

func main() {
	o := parse()
	s, err := run(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-amqp091 %s: %v\n", o.workload, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(s); err != nil {
		fmt.Fprintf(os.Stderr, "bench-amqp091: %v\n", err)
		os.Exit(1)
	}
}
