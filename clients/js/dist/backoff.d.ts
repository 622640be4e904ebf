export interface BackoffOptions {
    /** First ceiling in milliseconds (default 500). */
    baseMs?: number;
    /** Largest delay in milliseconds (default 20000). */
    capMs?: number;
    /** Random source in [0, 1) (default Math.random); injectable for tests. */
    random?: () => number;
}
export declare class Backoff {
    readonly baseMs: number;
    readonly capMs: number;
    private readonly random;
    /** Failed attempts since the last success. */
    attempt: number;
    constructor(o?: BackoffOptions);
    /** The ceiling for attempt `n`: min(cap, base * 2^n). */
    ceiling(n: number): number;
    /** The delay before the next attempt (and counts the attempt). */
    next(): number;
    /** Back to the first delay: call once a connection is subscribed again. */
    reset(): void;
}
