// Measured, not asserted: frames per second and main-thread busy time of the screen with
// ~5,000 and ~20,000 book updates/s into the daemon (feed-sim --rate; every symbol of the
// simulator is on the page's watchlist, so the page receives all of them). Printed as one line
// per rate, and as JSON in screenshots/perf.json.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  startFeedSim, startDaemon, startStatic, launchBrowser, pageUrl, watchConsole, readLadder,
  kill, killAll, until, sleep, SCREENSHOTS,
} from './harness.mjs';

const RATES = (process.env.UI_PERF_RATES || '5000,20000').split(',').map(Number);
const SECONDS = Number(process.env.UI_PERF_SECONDS || 8);
const results = [];

after(async () => { await killAll(); });

for (const rate of RATES) {
  test(`fps and main-thread busy time at ${rate} updates/s`, { timeout: 120_000 }, async () => {
    const sim = await startFeedSim({ symbols: 8, rate, seed: 11 });
    const daemon = await startDaemon({ feed: sim.feed });
    const stat = await startStatic();
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
      const errors = watchConsole(page);
      await page.goto(pageUrl(stat.base, daemon, { symbol: 'BTC-USD', depth: '25' }));
      await until('ladder rows', async () => (await readLadder(page)).bids.length > 0, 20_000);
      await sleep(2000); // warm up
      const cdp = await page.context().newCDPSession(page);
      await cdp.send('Performance.enable', { timeDomain: 'timeTicks' });
      const metrics = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
      const m0 = await metrics();
      const p0 = await page.evaluate(() => ({ ...window.__tickcast.probe, t: performance.now() }));
      // Display frames: a rAF loop of our own counts every frame the browser produced, and the
      // longest gap between two of them.
      const display = await page.evaluate((secs) => new Promise((resolve) => {
        let n = 0, last = performance.now(), worst = 0;
        const end = last + secs * 1000;
        function f(t) {
          n++;
          worst = Math.max(worst, t - last);
          last = t;
          if (t < end) requestAnimationFrame(f); else resolve({ n, worst });
        }
        requestAnimationFrame(f);
      }), SECONDS);
      const m1 = await metrics();
      const p1 = await page.evaluate(() => ({ ...window.__tickcast.probe, t: performance.now() }));
      const wall = (p1.t - p0.t) / 1000;
      const r = {
        rate,
        seconds: +wall.toFixed(2),
        fps: +(display.n / wall).toFixed(1),
        worst_frame_ms: +display.worst.toFixed(1),
        draws_per_s: +((p1.frames - p0.frames) / wall).toFixed(1),
        records_per_s: Math.round((p1.records - p0.records) / wall),
        // Wall time the renderer's main thread spent in tasks (includes time it waited for a
        // core), and the CPU time it used (ThreadTime); the renderer process's CPU (all threads).
        busy_pct: +(((m1.TaskDuration - m0.TaskDuration) / wall) * 100).toFixed(1),
        main_cpu_pct: +(((m1.ThreadTime - m0.ThreadTime) / wall) * 100).toFixed(1),
        renderer_cpu_pct: +(((m1.ProcessTime - m0.ProcessTime) / wall) * 100).toFixed(1),
        loadavg_1m: +os.loadavg()[0].toFixed(2),
        script_pct: +(((m1.ScriptDuration - m0.ScriptDuration) / wall) * 100).toFixed(1),
        layout_style_pct: +((((m1.LayoutDuration - m0.LayoutDuration) + (m1.RecalcStyleDuration - m0.RecalcStyleDuration)) / wall) * 100).toFixed(1),
        heap_mb: +(m1.JSHeapUsedSize / 1e6).toFixed(1),
      };
      results.push(r);
      console.log(`ui perf: ${rate} updates/s into the daemon: ${r.fps} fps (worst frame ${r.worst_frame_ms} ms), `
        + `${r.draws_per_s} draws/s, ${r.records_per_s} records/s applied, main thread busy ${r.busy_pct}% `
        + `(script ${r.script_pct}%, style+layout ${r.layout_style_pct}%; CPU ${r.main_cpu_pct}%, renderer CPU ${r.renderer_cpu_pct}%), `
        + `JS heap ${r.heap_mb} MB, load average ${r.loadavg_1m} on ${os.cpus().length} cores`);
      await page.screenshot({ path: path.join(SCREENSHOTS, `live-${rate}.png`) });
      assert.deepEqual(errors, []);
      await writeFile(path.join(SCREENSHOTS, 'perf.json'), JSON.stringify(results, null, 2) + '\n');
    } finally {
      await browser.close().catch(() => {});
      await stat.close();
      await kill(daemon.child);
      await kill(sim.child);
    }
  });
}
