// Reconnect delays: exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential
// Backoff And Jitter"): delay = random(0, min(cap, base * 2^attempt)). Spreading reconnects over
// the whole interval keeps a fleet of clients from reconnecting in waves after a restart.

export interface BackoffOptions {
  /** First ceiling in milliseconds (default 500). */
  baseMs?: number;
  /** Largest delay in milliseconds (default 20000). */
  capMs?: number;
  /** Random source in [0, 1) (default Math.random); injectable for tests. */
  random?: () => number;
}

export class Backoff {
  readonly baseMs: number;
  readonly capMs: number;
  private readonly random: () => number;
  /** Failed attempts since the last success. */
  attempt = 0;

  constructor(o: BackoffOptions = {}) {
    this.baseMs = o.baseMs ?? 500;
    this.capMs = o.capMs ?? 20000;
    this.random = o.random ?? Math.random;
    if (!(this.baseMs > 0) || !(this.capMs >= this.baseMs)) throw new RangeError("backoff needs 0 < baseMs <= capMs");
  }

  /** The ceiling for attempt `n`: min(cap, base * 2^n). */
  ceiling(n: number): number {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(n, 52));
  }

  /** The delay before the next attempt (and counts the attempt). */
  next(): number {
    const d = Math.floor(this.random() * this.ceiling(this.attempt));
    this.attempt++;
    return d;
  }

  /** Back to the first delay: call once a connection is subscribed again. */
  reset(): void {
    this.attempt = 0;
  }
}
