// Remakes docs/dashboard.png, the README's picture: `drover demo` under
// two and a half minutes of growing load, then the Traffic tab.
//   node tests/browser/readme-screenshot.mjs   (after cargo build -p drover)
import path from "node:path";
import { fileURLToPath } from "node:url";
import { browser, drover, load } from "./harness.mjs";

const docs = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs");
const demo = await drover(["demo", "--listen", "127.0.0.1:0"], /the dashboard is at (http:\/\/[^\s/]+)\//);
const phases = [["philosophy-101", 3], ["qwen2.5-7b-instruct", 2], ["philosophy-101", 6], ["gemma-2-9b-it", 4], ["llama-3.1-8b-instruct", 3]];
const stops = [];
for (const [model, n] of phases) {
  stops.push(load(demo.url, model, n));
  await new Promise((r) => setTimeout(r, 30000));
}
await fetch(demo.url + "/v1/chat/completions", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nope", messages: [] }) });
const b = await browser();
const page = await b.newPage({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
await page.goto(demo.url + "/#traffic");
await page.waitForSelector("#live.on");
await page.waitForTimeout(1500);
await page.screenshot({ path: path.join(docs, "dashboard.png") });
await b.close();
for (const s of stops) await s();
await demo.stop();
