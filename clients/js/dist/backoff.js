// Reconnect delays: exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential
// Backoff And Jitter"): delay = random(0, min(cap, base * 2^attempt)). Spreading reconnects over
// the whole interval keeps a fleet of clients from reconnecting in waves after a restart.
export class Backoff {
    baseMs;
    capMs;
    random;
    /** Failed attempts since the last success. */
    attempt = 0;
    constructor(o = {}) {
        this.baseMs = o.baseMs ?? 500;
        this.capMs = o.capMs ?? 20000;
        this.random = o.random ?? Math.random;
        if (!(this.baseMs > 0) || !(this.capMs >= this.baseMs))
            throw new RangeError("backoff needs 0 < baseMs <= capMs");
    }
    /** The ceiling for attempt `n`: min(cap, base * 2^n). */
    ceiling(n) {
        return Math.min(this.capMs, this.baseMs * 2 ** Math.min(n, 52));
    }
    /** The delay before the next attempt (and counts the attempt). */
    next() {
        const d = Math.floor(this.random() * this.ceiling(this.attempt));
        this.attempt++;
        return d;
    }
    /** Back to the first delay: call once a connection is subscribed again. */
    reset() {
        this.attempt = 0;
    }
}
