// Starts drover processes and Debian's Chromium for the dashboard tests.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const target = process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, "target");
export const binary = process.env.DROVER_BIN || path.join(target, "debug", "drover");
export const shots = process.env.DROVER_SCREENSHOTS || path.join(target, "screenshots");
mkdirSync(shots, { recursive: true });

const running = new Set();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

// Starts `drover args...`; resolves with the process and the first URL that
// matches `pattern` in its output.
export function drover(args, pattern, env = {}) {
  const dataDir = mkdtempSync(path.join(tmpdir(), "drover-browser-"));
  const child = spawn(binary, args, {
    env: { ...process.env, DROVER_DATA_DIR: dataDir, DROVER_LOG: "warn", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`drover ${args[0]} printed no URL in 30 s:\n${output}`)), 30000);
    const look = (chunk) => {
      output += chunk;
      const m = output.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve({
          child,
          url: m[1],
          output: () => output,
          stop: () => stop(child),
        });
      }
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    child.on("exit", (code) => {
      running.delete(child);
      clearTimeout(timer);
      reject(new Error(`drover ${args[0]} exited with ${code}:\n${output}`));
    });
  });
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
    headless: true,
  });
}

export async function screenshot(page, name) {
  await page.screenshot({ path: path.join(shots, `dashboard-${name}.png`), fullPage: true });
}

// Sends chat requests for `model` from `workers` loops until `stop()`.
export function load(base, model, workers) {
  let running = true;
  const loops = [];
  for (let i = 0; i < workers; i++) {
    loops.push(
      (async () => {
        while (running) {
          try {
            const r = await fetch(`${base}/v1/chat/completions`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ model, stream: true, messages: [{ role: "user", content: `hello ${i}` }] }),
            });
            await r.text();
          } catch {
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      })(),
    );
  }
  return async () => {
    running = false;
    await Promise.all(loops);
  };
}

// A number shown in an element, as the dashboard formats it.
export async function number(page, selector) {
  const text = (await page.textContent(selector)) || "";
  const m = text.replace(/,/g, "").match(/-?\d+(\.\d+)?/);
  return m ? Number(m[0]) : NaN;
}
