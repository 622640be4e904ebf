// Canvas sizes from a ResizeObserver, so that drawing never reads layout (a read after the
// frame's DOM writes would force a synchronous layout).
const sizes = new WeakMap();
const ro = new ResizeObserver((entries) => {
  for (const e of entries) {
    const box = e.contentBoxSize && e.contentBoxSize[0];
    sizes.set(e.target, box ? { w: box.inlineSize, h: box.blockSize } : { w: e.contentRect.width, h: e.contentRect.height });
    onResize?.();
  }
});
let onResize = null;

/** Calls `f` whenever an observed canvas changes size. */
export function whenResized(f) {
  onResize = f;
}

/** Sizes the canvas's backing store to its CSS box × devicePixelRatio; returns {w, h, dpr}. */
export function fitCanvas(canvas) {
  let s = sizes.get(canvas);
  if (!s) {
    ro.observe(canvas);
    s = { w: canvas.clientWidth, h: canvas.clientHeight }; // once, before the first observation
    sizes.set(canvas, s);
  }
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(s.w * dpr));
  const h = Math.max(1, Math.round(s.h * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  return { w, h, dpr };
}
