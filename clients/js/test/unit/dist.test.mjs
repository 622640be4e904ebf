import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

test("the committed dist/ is built from src/", () => {
  const script = fileURLToPath(new URL("../../scripts/check-dist.mjs", import.meta.url));
  assert.doesNotThrow(() => execFileSync(process.execPath, [script], { stdio: "pipe" }));
});

test("dist/ needs nothing but the platform (no Node modules, no runtime dependencies)", async () => {
  const { readFileSync, readdirSync } = await import("node:fs");
  const dir = fileURLToPath(new URL("../../dist/", import.meta.url));
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".js"))) {
    const src = readFileSync(dir + f, "utf8");
    for (const m of src.matchAll(/from\s+"([^"]+)"/g)) assert.match(m[1], /^\.\/[\w-]+\.js$/, `${f} imports ${m[1]}`);
  }
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL("../../package.json", import.meta.url)), "utf8"));
  assert.equal(pkg.dependencies, undefined);
});
