// Prometheus metrics of the server (GET /metrics), on a registry of its own.
import client from 'prom-client';

export class ServeMetrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Counter({ name: 'propipe_serve_requests_total', help: 'HTTP requests by endpoint and status', labelNames: ['endpoint', 'status'], registers: [this.registry] });
  readonly promptTokens = new client.Counter({ name: 'propipe_serve_prompt_tokens_total', help: 'prompt tokens prefilled', labelNames: ['model'], registers: [this.registry] });
  readonly generationTokens = new client.Counter({ name: 'propipe_serve_generation_tokens_total', help: 'tokens generated', labelNames: ['model'], registers: [this.registry] });
  readonly ttft = new client.Histogram({
    name: 'propipe_serve_time_to_first_token_seconds',
    help: 'from admission to the queue until the first generated token',
    labelNames: ['model'],
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly decodeRate = new client.Gauge({ name: 'propipe_serve_decode_tokens_per_second', help: 'tokens per second of the last decode step of a running batch (all its rows)', labelNames: ['batch'], registers: [this.registry] });
  readonly decodeStep = new client.Histogram({
    name: 'propipe_serve_decode_step_seconds',
    help: 'duration of one decode step of a running batch',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });
  readonly queueLength = new client.Gauge({ name: 'propipe_serve_queue_length', help: 'requests waiting for a batch slot', registers: [this.registry] });
  readonly running = new client.Gauge({ name: 'propipe_serve_running_sequences', help: 'sequences in the running batches', registers: [this.registry] });
}
