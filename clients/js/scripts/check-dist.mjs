// Checks that the committed dist/ is what `tsc` builds from src/ (the browser imports dist/ as
// plain ES modules with no build step, so it must never lag behind src/). Exit 1 on any
// difference; `npm run build` fixes it.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = mkdtempSync(join(tmpdir(), "tickcast-dist-"));
try {
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  execFileSync(process.execPath, [tsc, "-p", join(root, "tsconfig.json"), "--outDir", out], { stdio: "inherit" });
  const list = (d) => (existsSync(d) ? readdirSync(d).sort() : []);
  const want = list(out);
  const have = list(join(root, "dist"));
  const problems = [];
  for (const f of new Set([...want, ...have])) {
    if (!want.includes(f)) problems.push(`dist/${f}: not built from src (stale file)`);
    else if (!have.includes(f)) problems.push(`dist/${f}: missing`);
    else if (!readFileSync(join(out, f)).equals(readFileSync(join(root, "dist", f)))) problems.push(`dist/${f}: differs from src`);
  }
  if (problems.length) {
    console.error(`dist/ is not up to date with src/ (run npm run build and commit dist/):\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`dist/ is up to date (${want.length} files)`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
